"""Reliability, long profile: the deployed local stack under sustained load, faults and fuzzing.

    .venv/bin/python -m bench.reliability [--clients 8] [--seconds 60] [--frames 24]
                                          [--fault-rounds 3] [--fuzz-examples 150]

Setup (no Google, no Docker): the local cloud of tests/e2e/local_cloud.py; `orpheus deploy --all
--model <tiny Q8 GGUF>` through the CLI, so the frontend and the backend (launcher + llama-server
on CPU) run as their Dockerfiles' commands behind Cloud Run-like routers with ID-token auth.

1. Load: ``--clients`` streaming clients for ``--seconds`` (tests/reliability/load.py); every
   WAV must be whole. Figures: requests, failures, p50/p95 time to first byte, most concurrent
   streams held (responses streaming audio at once), most requests in flight at the backend,
   audio seconds produced per second.
2. Faults, ``--fault-rounds`` times each: the backend killed mid-stream (the stream must be cut
   visibly, the next request served by a new instance: recovery time measured), paused mid-stream
   for 1.5 s (must complete), scaled to zero (next request cold-starts).
3. Fuzzing the frontend's OpenAPI schema (tests/reliability/fuzz.py) with the real backend.
4. Teardown: no instance process may be left running.

The llama-server binary: ``ORPHEUS_LLAMA_SERVER`` or the .ci/build_llama.sh cache. The machine is
shared and noisy: compare runs on the same machine. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.llama_build import built_llama_server
from tests.fixtures.orpheus_gguf import write_orpheus_gguf
from tests.fixtures.snac import export_tiny_snac
from tests.reliability.faults import STRIKE_AFTER_EVENTS, Pause, Strike, speak
from tests.reliability.fuzz import fuzz
from tests.reliability.load import run_load

SAMPLES_PER_FRAME = 2048


def llama_server() -> Path:
    configured = os.environ.get("ORPHEUS_LLAMA_SERVER")
    path = Path(configured) if configured else built_llama_server()
    if not path.is_file():
        sys.exit(f"llama-server not found at {path}: run .ci/build_llama.sh or set "
                 "ORPHEUS_LLAMA_SERVER")
    return path


def fault_rounds(lc: LocalCloud, rounds: int, full_samples: int) -> dict[str, Any]:
    runner = lc.runner
    assert runner is not None
    router = runner.router("orpheus-backend")
    out: dict[str, Any] = {"kills": 0, "kills_cut_visibly": 0, "pauses": 0,
                           "pauses_complete": 0, "cold_starts": 0, "cold_starts_complete": 0,
                           "unexpected": [], "recovery_s": []}
    for _ in range(rounds):
        # Killed mid-stream: a visible cut, then a new instance.
        victim = router.instance
        assert victim is not None
        router.on_forwarded = Strike(STRIKE_AFTER_EVENTS,
                                     lambda v=victim: v.signal_group(signal.SIGKILL))
        cut = speak(lc)
        router.on_forwarded = None
        out["kills"] += 1
        if cut.status == 200 and cut.error and cut.samples < full_samples:
            out["kills_cut_visibly"] += 1
        else:
            out["unexpected"].append(f"kill: {cut.status} {cut.error!r} {cut.samples}")
        began = time.monotonic()
        after = speak(lc)
        out["recovery_s"].append(round(time.monotonic() - began, 2))
        if (after.status, after.error, after.samples) != (200, "", full_samples):
            out["unexpected"].append(f"after kill: {after.status} {after.error!r}")

        # Paused mid-stream (SIGSTOP for 1.5 s): slower, complete.
        instance = router.instance
        assert instance is not None
        pause = Pause(instance, 1.5)
        router.on_forwarded = Strike(STRIKE_AFTER_EVENTS, pause)
        slow = speak(lc)
        router.on_forwarded = None
        pause.join()
        out["pauses"] += 1
        if (slow.status, slow.error, slow.samples) == (200, "", full_samples):
            out["pauses_complete"] += 1
        else:
            out["unexpected"].append(f"pause: {slow.status} {slow.error!r} {slow.samples}")

        # Scaled to zero: the next request cold-starts both services.
        for name in ("orpheus-backend", "orpheus-frontend"):
            runner.router(name).retire()
        cold = speak(lc)
        out["cold_starts"] += 1
        if (cold.status, cold.error, cold.samples) == (200, "", full_samples):
            out["cold_starts_complete"] += 1
        else:
            out["unexpected"].append(f"cold start: {cold.status} {cold.error!r}")
    recovery = sorted(out["recovery_s"])
    out["recovery_s_max"] = recovery[-1] if recovery else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=24, help="audio frames per request (<= 55)")
    parser.add_argument("--fault-rounds", type=int, default=3)
    parser.add_argument("--fuzz-examples", type=int, default=150)
    args = parser.parse_args(argv)
    # A killed backend makes its router's relay raise mid-body (that is the visible cut);
    # uvicorn would print each as a traceback.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)

    root = Path(tempfile.mkdtemp(prefix="orpheus-reliability-"))
    gguf = write_orpheus_gguf(root / "orpheus-tiny-Q8_0.gguf", quant="Q8_0", frames=args.frames)
    snac = export_tiny_snac(root / "tiny_snac_decoder.onnx")
    full = args.frames * SAMPLES_PER_FRAME
    result: dict[str, Any] = {"bench": "reliability", "clients": args.clients,
                              "seconds": args.seconds, "frames_per_request": args.frames}
    lc = LocalCloud(root / "cloud", llama_server=llama_server(), snac_onnx=snac).start()
    try:
        began = time.monotonic()
        deployed = lc.cli("--json", "deploy", "--all", "--model", str(gguf))
        if deployed.exit_code != 0:
            print(deployed.everything, file=sys.stderr)
            return 1
        result["deploy_s"] = round(time.monotonic() - began, 1)
        print(f"deployed in {result['deploy_s']} s: frontend {lc.frontend_url}", file=sys.stderr)

        report = asyncio.run(run_load(lc.frontend_url, lc.api_key, concurrency=args.clients,
                                      duration_s=args.seconds, expected_samples=full))
        result["load"] = report.summary()
        result["load"]["problems"] = report.problems[:5]
        # Requests the backend held at once (llama-server queues beyond its N_PARALLEL slots,
        # so streams that have audio can be fewer than requests in flight).
        result["load"]["backend_max_in_flight"] = lc.runner.router("orpheus-backend").max_active
        print(f"load: {result['load']}", file=sys.stderr)

        result["faults"] = fault_rounds(lc, args.fault_rounds, full)
        print(f"faults: {result['faults']}", file=sys.stderr)

        fuzzed = fuzz(lc.frontend_url, lc.api_key, examples=args.fuzz_examples)
        result["fuzz"] = {"requests": fuzzed.requests, "problems": fuzzed.problems[:5],
                          "statuses": {str(k): v for k, v in sorted(fuzzed.statuses.items())}}
        print(f"fuzz: {result['fuzz']}", file=sys.stderr)
    finally:
        lc.stop()
        leftover = lc.runner.leftover_pids() if lc.runner is not None else set()
        result["leaked_processes"] = len(leftover)

    load = result["load"]
    print(f"requests {load['requests']}, failures {load['failures']}, "
          f"p50 TTFB {load['p50_ttfb_ms']} ms, p95 TTFB {load['p95_ttfb_ms']} ms, "
          f"most concurrent streams {load['max_concurrent_streams']}")
    print(json.dumps(result, sort_keys=True))
    ok = (load["failures"] == 0 and not result["faults"]["unexpected"]
          and not result["fuzz"]["problems"] and not result["leaked_processes"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
