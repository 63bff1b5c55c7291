"""Throughput of the backend launcher's engines, side by side in one run.

    .venv/bin/python -m bench.backend [--model X.gguf] [--engines llama-server,llama-cpp-python]
    .venv/bin/python -m bench.backend --engines "" --model-switch [--switch-models A,B]

For each engine: start ``python -m runtime.backend`` (the image's command) on the model, measure
start-up to ready, then tokens/s of one stream and of 4 concurrent streams (total and per
stream). Without ``--model`` it serves the tiny Orpheus GGUF (generated here), on which only the
*ratios* between engines and between 1 and 4 streams mean anything: the model is tiny, so the
numbers are dominated by per-token overheads rather than by weights. The last line of output is
one JSON object. Real time for Orpheus audio needs 82.03 tokens/s per stream (design section 4).

``--model-switch`` (several models, issue 14): the launcher with two models behind llama-server's
router and room for one on the "GPU" (MODELS_MAX=1), requests alternating in pairs (a, a, b, b,
...): the first of each pair must wait for its model to be loaded in place of the other, the
second finds it resident. It reports time to first token for both, side by side, and the load
times the launcher logged. Without ``--switch-models`` the two are tiny fixtures that speak
different frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.llama_build import built_llama_server
from tests.fixtures.plugin_llama import free_port, stop

REALTIME_TPS = 82.03
PROMPT = "<|audio|>tara: Benchmarking the Orpheus backend with a few concurrent streams.<|eot_id|>"
SAMPLING = {"temperature": 0.6, "top_p": 0.9, "repeat_penalty": 1.1}


@dataclass
class StreamResult:
    tokens: int
    first_token_s: float
    seconds: float


def _llama_server() -> str | None:
    configured = os.environ.get("LLAMA_SERVER_BIN") or os.environ.get("ORPHEUS_LLAMA_SERVER")
    if configured:
        return configured
    built = built_llama_server()
    return str(built) if built.is_file() else shutil.which("llama-server")


def _launcher_env(model: Path, port: int, args: argparse.Namespace,
                  **settings: str) -> dict[str, str]:
    """``python -m runtime.backend``'s environment: `model` served on 127.0.0.1:`port`, with
    --threads CPU threads when given, and the other `settings` (design section 3)."""
    env = {**os.environ, "MODEL_PATH": str(model), "PORT": str(port),
           "ORPHEUS_BACKEND_HOST": "127.0.0.1", **settings}
    if args.threads:
        env["N_THREADS"] = str(args.threads)
    return env


def _stream(url: str, max_tokens: int, out: list[StreamResult], model: str | None = None) -> None:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True, **SAMPLING,
            **({"model": model} if model else {})}
    start = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
    out.append(StreamResult(tokens, first or 0.0, time.perf_counter() - start))


def _concurrent(url: str, streams: int, max_tokens: int) -> tuple[float, float, float]:
    """(total tokens/s, mean per-stream tokens/s, mean time to first token in s)."""
    results: list[StreamResult] = []
    threads = [threading.Thread(target=_stream, args=(url, max_tokens, results))
               for _ in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r.tokens for r in results) / wall
    per_stream = sum(r.tokens / r.seconds for r in results) / len(results)
    ttft = sum(r.first_token_s for r in results) / len(results)
    return total, per_stream, ttft


def bench_engine(engine: str, model: Path, args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    env = _launcher_env(model, port, args, N_PARALLEL=str(args.streams),
                        N_CTX=str(args.streams * args.slot_ctx),
                        N_GPU_LAYERS=str(args.n_gpu_layers), MODEL_STAGING="never")
    if engine == "llama-server":
        env["LLAMA_SERVER_BIN"] = _llama_server() or ""
    url = f"http://127.0.0.1:{port}"
    ready_path = "/health" if engine == "llama-server" else "/v1/models"
    log_path = Path(tempfile.gettempdir()) / f"bench-{engine}-{port}.log"
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "runtime.backend", "--engine", engine],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready_s = _wait_ready(process, f"{url}{ready_path}", log_path) - start
            _stream(url, args.max_tokens, [])  # warm-up
            single: list[StreamResult] = []
            for _ in range(args.repeats):
                _stream(url, args.max_tokens, single)
            runs = [_concurrent(url, args.streams, args.max_tokens) for _ in range(args.repeats)]
        finally:
            stop(process)
    single_tps = sum(r.tokens for r in single) / sum(r.seconds for r in single)
    total = sum(r[0] for r in runs) / len(runs)
    per_stream = sum(r[1] for r in runs) / len(runs)
    n = args.streams
    return {
        "ready_s": round(ready_s, 2),
        "single_stream_tps": round(single_tps, 1),
        "single_ttft_ms": round(1000 * sum(r.first_token_s for r in single) / len(single), 1),
        f"concurrent{n}_total_tps": round(total, 1),
        f"concurrent{n}_per_stream_tps": round(per_stream, 1),
        f"concurrent{n}_ttft_ms": round(1000 * sum(r[2] for r in runs) / len(runs), 1),
        "tokens_per_stream": single[0].tokens,
        "per_stream_realtime": per_stream >= REALTIME_TPS,
    }


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> float:
    """Poll until ready; the time it became so."""
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the backend exited; see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.02)


def ready_time(model: Path, staging: str, args: argparse.Namespace) -> float:
    """Seconds from starting the launcher (llama-server engine) to GET /health 200."""
    port = free_port()
    env = _launcher_env(model, port, args, N_PARALLEL="1", N_CTX=str(args.slot_ctx),
                        MODEL_STAGING=staging, LLAMA_SERVER_BIN=_llama_server() or "")
    log_path = Path(tempfile.gettempdir()) / f"bench-staging-{staging}-{port}.log"
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "runtime.backend"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            return _wait_ready(process, f"http://127.0.0.1:{port}/health", log_path) - start
        finally:
            stop(process)
            staged = Path(env.get("MODEL_STAGING_DIR", "/dev/shm")) / model.name
            if staging == "always":
                staged.unlink(missing_ok=True)


def bench_model_switch(models: list[Path], args: argparse.Namespace) -> dict[str, object]:
    """Time to first token for a resident model vs one the router must load first."""
    import re
    import statistics

    from runtime.backend.router import LOADED, model_states

    port = free_port()
    names = ["model-a", "model-b"]
    paths = [m.resolve() for m in models]
    env = _launcher_env(
        paths[0], port, args,
        MODEL_FILES=json.dumps({n: str(p) for n, p in zip(names, paths, strict=True)}),
        MODELS_MAX="1",
        # The production slots (4 x 4096 by default): the GPU memory read below is then what
        # one resident model takes in a deployment.
        N_PARALLEL=str(args.streams), N_CTX=str(args.streams * args.slot_ctx),
        MODEL_STAGING="never", N_GPU_LAYERS=str(args.n_gpu_layers),
        LLAMA_SERVER_BIN=_llama_server() or "")
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"bench-switch-{port}.log"
    resident: list[float] = []
    switched: list[float] = []
    memory: list[str] = []
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "runtime.backend"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:  # loaded as the launcher's RouterWatch sees it: by status alone
                state = (model_states(port) or {}).get(names[0])
                if state is not None and state.status == LOADED:
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the backend exited; see {log_path}")
                time.sleep(0.05)
            _stream(url, args.switch_tokens, [], names[0])  # warm-up
            for i in range(2 * args.repeats):
                name = names[(i + 1) % 2]  # b, a, b, a...: each first request is a switch
                for into in (switched, resident):
                    out: list[StreamResult] = []
                    _stream(url, args.switch_tokens, out, name)
                    into.append(out[0].first_token_s)
            if shutil.which("nvidia-smi"):  # what one resident model really takes on the GPU
                memory = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory",
                     "--format=csv,noheader"], capture_output=True, text=True,
                    check=False).stdout.splitlines()
        finally:
            stop(process)
    loads = [float(x) for x in re.findall(r"model model-[ab]: loaded in ([0-9.]+)s",
                                          log_path.read_text())]
    resident_ms = statistics.median(resident) * 1000
    switched_ms = statistics.median(switched) * 1000
    return {
        "models": [m.name for m in models], "requests_each": len(resident),
        "resident_ttft_ms_median": round(resident_ms, 1),
        "switch_ttft_ms_median": round(switched_ms, 1),
        "switch_vs_resident": round(switched_ms / resident_ms, 1),
        "load_s_logged_median": round(statistics.median(loads), 2) if loads else None,
        **({"gpu_memory_per_process": memory} if memory else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF to serve (default: the tiny fixture)")
    parser.add_argument("--frames", type=int, default=50,
                        help="frames the generated tiny model speaks (7 tokens each)")
    parser.add_argument("--engines", default="llama-server,llama-cpp-python")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--slot-ctx", type=int, default=4096)
    parser.add_argument("--n-gpu-layers", type=int, default=999)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per engine (0: each engine's default; on a small shared "
                        "CPU, 1 avoids threads spin-waiting on each other)")
    parser.add_argument("--model-switch", action="store_true",
                        help="also time the first token of a resident model vs one that must "
                        "be loaded (two models, llama-server router, one resident)")
    parser.add_argument("--switch-models", default="",
                        help="the two GGUFs for --model-switch (default: two tiny fixtures)")
    parser.add_argument("--switch-tokens", type=int, default=70,
                        help="tokens per --model-switch request")
    parser.add_argument("--staging-compare", action="store_true",
                        help="also time start-up to ready loading in place vs copying to "
                        "/dev/shm first (llama-server)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.fixtures.orpheus_gguf import write_orpheus_gguf

            model = write_orpheus_gguf(Path(tmp) / "orpheus-tiny-q8.gguf", quant="Q8_0",
                                       frames=args.frames)
        results: dict[str, object] = {}
        for engine in filter(None, args.engines.split(",")):
            if engine == "llama-server" and not _llama_server():
                results[engine] = {"skipped": "llama-server not found (.ci/build_llama.sh)"}
                continue
            print(f"benchmarking {engine} on {model.name}...", file=sys.stderr, flush=True)
            results[engine] = bench_engine(engine, model, args)
            print(json.dumps({engine: results[engine]}), file=sys.stderr, flush=True)

        switch: dict[str, object] = {}
        if args.model_switch and _llama_server():
            if args.switch_models:
                pair = [Path(p) for p in args.switch_models.split(",")]
            else:
                from tests.fixtures.orpheus_gguf import write_orpheus_gguf

                pair = [write_orpheus_gguf(Path(tmp) / f"switch-{o}.gguf", frames=args.frames,
                                           code_offset=o) for o in (0, 1000)]
            print("benchmarking a model switch...", file=sys.stderr, flush=True)
            switch = bench_model_switch(pair, args)

        staging: dict[str, list[float]] = {}
        if args.staging_compare and _llama_server():
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for mode in ("never", "always"):
                    staging.setdefault(mode, []).append(round(ready_time(model, mode, args), 2))

    summary: dict[str, object] = {
        "benchmark": "backend", "model": str(args.model or f"tiny Q8_0 ({args.frames} frames)"),
        "streams": args.streams, "threads": args.threads or "default",
        "realtime_tps": REALTIME_TPS, "engines": results,
    }
    if switch:
        summary["model_switch"] = switch
    if staging:
        summary["ready_s_by_staging"] = staging
        summary["ratios_staging"] = {"always_vs_never": round(
            sum(staging["always"]) / sum(staging["never"]), 2)}
    server, python = results.get("llama-server"), results.get("llama-cpp-python")
    key = f"concurrent{args.streams}_total_tps"
    if isinstance(server, dict) and isinstance(python, dict) and key in server and key in python:
        summary["ratios"] = {
            "server_vs_python_single": round(server["single_stream_tps"]
                                             / python["single_stream_tps"], 2),
            f"server_vs_python_{key}": round(server[key] / python[key], 2),
            f"server_{key}_vs_single": round(server[key] / server["single_stream_tps"], 2),
            f"python_{key}_vs_single": round(python[key] / python["single_stream_tps"], 2),
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
