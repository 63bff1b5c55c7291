"""Frontend benchmark: what the whole app adds on top of the codec, and how it behaves under load.

    .venv/bin/python -m bench.frontend [--streams 8] [--bursts 3] [--ttfb-repeats 15] [--frames 48]
                                       [--tiny]

Setup: the scripted fake backend (tests/fixtures/fake_backend.py) emits audio tokens at 100 tokens/s
per request (a little faster than the 82 tokens/s real time needs, like a healthy L4); the app runs
as its container command (`python -m runtime.frontend`) in a child process, so its CPU time and
peak RSS (VmHWM) are its own; requests come from an HTTP client in this process.

Measured side by side in one run (these machines are noisy, so compare ratios, not absolutes):

* time to first audio byte (TTFB) through the app vs the codec alone: `AudioStream` fed the same
  token schedule in-process, time to its first PCM. The difference is the app's overhead (HTTP,
  auth, SSE parsing, thread hand-offs, encoding); target < 20 ms.
* TTFB with the fast start (the default: first audio after 14 tokens) vs a second app process
  started with ORPHEUS_FAST_START=false (21 tokens, the previous behaviour), requests alternating
  between the two; and the same pair for the codec alone.
* CPU seconds per second of audio: the app process vs the codec alone.
* N concurrent streams: each stream's TTFB and the worst one's ratio to the single-stream TTFB
  (target <= 1.5x), and the app's peak RSS (target < 600 MiB). One burst's worst stream is at the
  mercy of whatever else the machine does in that half second, so `--bursts` bursts are released
  one after another and the median of their worst ratios is reported (every burst's too), for the
  fast start and for the app without it alike.
* The WebSocket (/v1/audio/speech/stream) with text streamed in at a language model's pace (20
  words/s): time to first audio from the first word sent, and from the moment the first unit (a
  6-word sentence) was complete; the latter is the app's own latency, comparable to the POST's
  TTFB. Then N conversations at once: the worst first-audio time vs one conversation's (target
  <= 1.5x).

The scripted backend serves any number of requests at once, as a backend with that many slots
would: the app is told so (ORPHEUS_BACKEND_SLOTS), otherwise its queue (limits.py) would rightly
hold the streams beyond the default 4 slots back.

The decoder is the real SNAC 24 kHz architecture with random weights (bench/decode.py's export, same
compute as the real checkpoint); `--tiny` uses the tiny test config. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench.decode import real_snac_onnx
from runtime.codec import AudioStream, SnacOnnxDecoder
from runtime.codec.protocol import SAMPLE_RATE, SAMPLES_PER_FRAME
from runtime.codec.protocol import TOKENS_PER_SECOND as TOKENS_PER_AUDIO_SECOND
from tests.fixtures.fake_backend import Behavior, FakeBackend, audio_token_texts
from tests.fixtures.plugin_llama import free_port, stop
from tests.fixtures.socket_client import Send, converse, words

WORDS_PER_SECOND = 20.0
# A first unit of six words, then more text still arriving while it is spoken.
CONVERSATION = ("Hello there, how are you today? I was hoping we could talk about the plans "
                "for next week, if you have a moment.")
FIRST_UNIT_WORDS = 6

TOKENS_PER_SECOND = 100.0
ROOT = Path(__file__).resolve().parents[1]


def codec_alone(
    decoder: SnacOnnxDecoder, frames: int, fast_start: bool = True
) -> tuple[float, float]:
    """(seconds to the first PCM, CPU seconds) for the token schedule the fake backend plays,
    decoded as the app decodes a first segment (by default with the fast start)."""
    tokens = audio_token_texts(frames)
    stream = AudioStream(decoder, fast_start=fast_start)
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    for index, token in enumerate(tokens):
        delay = start + index / TOKENS_PER_SECOND - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pcm = stream.feed(token)
        if first is None and pcm.size:
            first = time.perf_counter() - start
    stream.finish()
    assert first is not None
    return first, time.process_time() - cpu


def one_request(base: str, key: str, results: list[float], barrier: threading.Barrier | None):
    body = {
        "model": "orpheus",
        "input": "Benchmark sentence.",
        "voice": "tara",
        "response_format": "pcm",
    }
    with httpx.Client(timeout=120, headers={"X-API-Key": key}) as client:
        # A kept-alive connection, so that TTFB measures the app rather than TCP set-up.
        client.get(f"{base}/health").raise_for_status()
        if barrier is not None:
            barrier.wait()
        start = time.perf_counter()
        first = None
        size = 0
        with client.stream(
            "POST", f"{base}/v1/audio/speech", json=body, headers={"X-API-Key": key}
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                if first is None and chunk:
                    first = time.perf_counter() - start
                size += len(chunk)
    assert first is not None and size > 0
    results.append(first)


def burst(base: str, key: str, streams: int) -> list[float]:
    """`streams` requests released at once; their times to first byte."""
    results: list[float] = []
    barrier = threading.Barrier(streams)
    threads = [
        threading.Thread(target=one_request, args=(base, key, results, barrier))
        for _ in range(streams)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def socket_first_audio(base: str, key: str) -> tuple[float, float]:
    """(s from the first word sent to the first audio, s from the first unit's completion to
    the first audio) of one WebSocket conversation at a language model's pace."""
    url = base.replace("http://", "ws://") + "/v1/audio/speech/stream"
    script = [Send({"type": "start", "voice": "tara", "response_format": "pcm"}),
              *words(CONVERSATION, per_second=WORDS_PER_SECOND), Send({"type": "end"})]
    talk = await converse(url, script, headers={"X-API-Key": key}, timeout_s=120)
    first_audio = talk.first_audio_at()
    assert first_audio is not None and talk.close_code == 1000, talk.messages
    first_word = talk.sent[1][0]
    unit_done = talk.sent[FIRST_UNIT_WORDS][0]  # the word whose trailing space ends the unit
    return first_audio - first_word, first_audio - unit_done


async def socket_conversations(base: str, key: str, count: int) -> list[tuple[float, float]]:
    return list(await asyncio.gather(*(socket_first_audio(base, key) for _ in range(count))))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Orpheus frontend benchmark")
    parser.add_argument("--frames", type=int, default=48, help="frames per utterance (CPU, load)")
    parser.add_argument("--repeats", type=int, default=3, help="whole utterances for CPU")
    parser.add_argument("--ttfb-repeats", type=int, default=15)
    parser.add_argument("--bursts", type=int, default=3, help="bursts of --streams at once")
    parser.add_argument("--ttfb-frames", type=int, default=6, help="utterance for TTFB runs")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--socket-repeats", type=int, default=7)
    parser.add_argument(
        "--tiny", action="store_true", help="tiny SNAC config (no real-size export)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "orpheus-bench-cache"
    )
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if args.tiny:
        from tests.fixtures.snac import export_tiny_snac

        model = args.cache_dir / "tiny_snac_decoder.onnx"
        if not model.exists():
            export_tiny_snac(model)
    else:
        model = real_snac_onnx(args.cache_dir)
    audio_s = args.frames * SAMPLES_PER_FRAME / SAMPLE_RATE

    backend = FakeBackend(Behavior.stream(args.frames, tokens_per_second=TOKENS_PER_SECOND))
    backend.start()
    key = "sk-bench-" + secrets.token_hex(8)
    # The scripted backend has no slot limit: tell the app, or its queue holds streams back.
    slots = str(max(args.streams, 4))
    app, base = _start_app(model, backend.url, key, ORPHEUS_BACKEND_SLOTS=slots)
    exact_app, exact_base = _start_app(model, backend.url, key, ORPHEUS_FAST_START="false",
                                       ORPHEUS_BACKEND_SLOTS=slots)
    try:
        _wait_ready(base, app)
        _wait_ready(exact_base, exact_app)
        proc = psutil.Process(app.pid)
        decoder = SnacOnnxDecoder(model, threads=1)
        # Warm-up: first requests pay for lazy imports, connection set-up, ONNX allocations.
        codec_alone(decoder, 4)
        one_request(base, key, [], None)
        one_request(exact_base, key, [], None)

        # Time to first byte: many short utterances (only the first 14 or 21 tokens matter),
        # the codec alone, the app and the app without fast start in turn, so that drift hits
        # all alike.
        app_ttfb: list[float] = []
        exact_ttfb: list[float] = []
        codec_ttfb: list[float] = []
        codec_exact_ttfb: list[float] = []
        for _ in range(args.ttfb_repeats):
            codec_ttfb.append(codec_alone(decoder, args.ttfb_frames)[0])
            codec_exact_ttfb.append(codec_alone(decoder, args.ttfb_frames, fast_start=False)[0])
            for url, out in ((base, app_ttfb), (exact_base, exact_ttfb)):
                backend.script(
                    Behavior.stream(args.ttfb_frames, tokens_per_second=TOKENS_PER_SECOND)
                )
                one_request(url, key, out, None)

        # CPU per second of audio: whole utterances, interleaved the same way.
        codec_cpu: list[float] = []
        app_cpu: list[float] = []
        for _ in range(args.repeats):
            codec_cpu.append(codec_alone(decoder, args.frames)[1])
            before = sum(proc.cpu_times()[:2])
            one_request(base, key, [], None)
            app_cpu.append(sum(proc.cpu_times()[:2]) - before)

        single = statistics.median(app_ttfb)
        single_rss = peak_rss_mib(app.pid)
        before = sum(proc.cpu_times()[:2])
        bursts = [burst(base, key, args.streams) for _ in range(args.bursts)]
        concurrent_cpu = (sum(proc.cpu_times()[:2]) - before) / args.bursts

        # The WebSocket: one conversation at a time, then N at once (each unit: short TTFB runs).
        backend.default = Behavior.stream(args.ttfb_frames, tokens_per_second=TOKENS_PER_SECOND)
        asyncio.run(socket_first_audio(base, key))  # warm-up
        socket_single = [asyncio.run(socket_first_audio(base, key))
                         for _ in range(args.socket_repeats)]
        socket_concurrent = asyncio.run(socket_conversations(base, key, args.streams))
        rss = peak_rss_mib(app.pid)
        # The same burst without the fast start: its heads cost a 2-frame decode per stream.
        bursts_exact = [burst(exact_base, key, args.streams) for _ in range(args.bursts)]
    finally:
        stop(app, timeout=20)
        stop(exact_app, timeout=20)
        backend.stop()

    codec_first = statistics.median(codec_ttfb)
    # Each app request ran right after a codec-alone run: the median of the paired differences
    # cancels most of the machine's drift.
    pairs = [(a - c) * 1000 for a, c in zip(app_ttfb, codec_ttfb, strict=True)]
    overhead_ms = statistics.median(pairs)
    saved = [(e - a) * 1000 for a, e in zip(app_ttfb, exact_ttfb, strict=True)]
    # The burst whose worst stream is the median of the bursts' worst: its streams are reported.
    concurrent = sorted(bursts, key=max)[len(bursts) // 2]
    concurrent_exact = sorted(bursts_exact, key=max)[len(bursts_exact) // 2]
    worst_ratio = max(concurrent) / single
    socket_from_word = statistics.median(t for t, _ in socket_single)
    socket_from_unit = statistics.median(u for _, u in socket_single)
    socket_worst_ratio = max(t for t, _ in socket_concurrent) / socket_from_word
    result = {
        "snac": "tiny" if args.tiny else "real-24khz-architecture-random-weights",
        "backend_tokens_per_s": TOKENS_PER_SECOND,
        "frames": args.frames,
        "audio_s": round(audio_s, 3),
        "repeats": args.repeats,
        "ttfb_repeats": args.ttfb_repeats,
        "codec_ttfb_ms": round(codec_first * 1000, 1),
        "codec_exact_start_ttfb_ms": round(statistics.median(codec_exact_ttfb) * 1000, 1),
        "app_ttfb_ms": round(single * 1000, 1),
        "app_ttfb_overhead_ms": round(overhead_ms, 1),
        "app_ttfb_overhead_ms_pairs": [round(p, 1) for p in pairs],
        "app_exact_start_ttfb_ms": round(statistics.median(exact_ttfb) * 1000, 1),
        "fast_start_saves_ms": round(statistics.median(saved), 1),
        "fast_start_ttfb_ratio": round(single / statistics.median(exact_ttfb), 2),
        "codec_cpu_s_per_audio_s": round(statistics.median(codec_cpu) / audio_s, 4),
        "app_cpu_s_per_audio_s": round(statistics.median(app_cpu) / audio_s, 4),
        "app_vs_codec_cpu_ratio": round(
            statistics.median(app_cpu) / statistics.median(codec_cpu), 2
        ),
        "concurrent_streams": args.streams,
        "concurrent_ttfb_ms": [round(t * 1000, 1) for t in sorted(concurrent)],
        "concurrent_worst_ttfb_ratio": round(worst_ratio, 2),
        "concurrent_worst_ttfb_ratio_per_burst": [round(max(b) / single, 2) for b in bursts],
        "concurrent_exact_start_worst_ttfb_ratio": round(
            max(concurrent_exact) / statistics.median(exact_ttfb), 2
        ),
        "concurrent_exact_start_ttfb_ms": [round(t * 1000, 1) for t in sorted(concurrent_exact)],
        "concurrent_app_cpu_s_per_audio_s": round(concurrent_cpu / (audio_s * args.streams), 4),
        # CPUs the codec alone needs to keep N streams at the backend's pace: above cpu_count the
        # machine is saturated and every stream (and its first chunk) waits for CPU.
        "concurrent_codec_cpu_demand_cores": round(
            args.streams
            * statistics.median(codec_cpu)
            / audio_s
            * TOKENS_PER_SECOND
            / TOKENS_PER_AUDIO_SECOND,
            2,
        ),
        "socket_words_per_s": WORDS_PER_SECOND,
        "socket_first_unit_words": FIRST_UNIT_WORDS,
        "socket_repeats": args.socket_repeats,
        "socket_first_audio_from_first_word_ms": round(socket_from_word * 1000, 1),
        "socket_first_audio_from_unit_complete_ms": round(socket_from_unit * 1000, 1),
        "socket_concurrent_first_audio_ms": sorted(
            round(t * 1000, 1) for t, _ in socket_concurrent),
        "socket_concurrent_worst_ratio": round(socket_worst_ratio, 2),
        "app_peak_rss_mib_single_stream": round(single_rss, 1),
        "app_peak_rss_mib": round(rss, 1),
        "targets": {
            "ttfb_overhead_under_20ms": overhead_ms < 20,
            "concurrent_within_1_5x": worst_ratio <= 1.5,
            "socket_concurrent_within_1_5x": socket_worst_ratio <= 1.5,
            "peak_rss_under_600mib": rss < 600,
        },
        "cpu_count": os.cpu_count(),
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


def _start_app(
    model: Path, backend_url: str, key: str, **settings: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The app as its container runs it, in a child process; (process, base URL)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORPHEUS_")},
        "PORT": str(port),
        "ORPHEUS_HOST": "127.0.0.1",
        "API_KEY_SECRET": key,
        "SNAC_MODEL_PATH": str(model),
        "ORPHEUS_API_URL": backend_url,
        "ORPHEUS_LOG_LEVEL": "INFO",  # as deployed: one access line per request
        **settings,
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "runtime.frontend"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return app, f"http://127.0.0.1:{port}"


def _wait_ready(base: str, app: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise SystemExit(f"the app exited: {app.stderr.read().decode() if app.stderr else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the app did not become ready in 60 s")


if __name__ == "__main__":
    raise SystemExit(main())
