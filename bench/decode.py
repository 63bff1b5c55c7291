"""Benchmark: CPU cost and first-audio latency of decoding Orpheus tokens to audio.

    .venv/bin/python -m bench.decode [--frames 70] [--repeats 2] [--cache-dir DIR]

One run, one token stream, one ONNX model of the real SNAC 24 kHz architecture (random weights,
seed 0; exported on first use and cached), compared side by side on 1 and 2 ONNX Runtime threads:

* public: the scheme of the public Orpheus servers. Every 7 tokens, once 28 are in, decode the last
  4 frames and keep the second frame's 2048 samples (4 decodes per frame; the last frames are never
  flushed).
* ours: `runtime.codec.AudioStream` as the frontend runs it: the step graph, every frame decoded
  once, first audio after 3 frames, final flush.
* ours_windowed: the same with the whole-utterance graph only (chunks with 2 frames of context on
  each side, doubling up to 32 frames), for decoders exported without the step graph.

CPU time is `time.process_time()` (all threads of this process) per second of audio of the
utterance; the schemes alternate within each repeat and the median over repeats is reported, so
that noise from other work on the machine hits both alike. The final line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.codec import SAMPLE_RATE, SAMPLES_PER_FRAME, AudioStream, SnacOnnxDecoder
from runtime.codec.protocol import Frame, frame_to_token_text
from runtime.codec.snac_onnx import stream_model_path
from runtime.codec.streaming import to_int16
from runtime.codec.tokens import TokenStreamParser

SEED = 0


def real_snac_onnx(cache_dir: Path) -> Path:
    """The real 24 kHz architecture with random weights, exported once per config and opset."""
    from runtime.codec.export_snac import DEFAULT_OPSET, REAL_24KHZ_CONFIG

    key = json.dumps([REAL_24KHZ_CONFIG, SEED, DEFAULT_OPSET, "stream-v3"], sort_keys=True).encode()
    path = cache_dir / f"snac24k-random-{hashlib.sha256(key).hexdigest()[:12]}.onnx"
    if not path.exists():
        import torch
        from snac import SNAC

        from runtime.codec.export_snac import export_decoder, verify

        torch.manual_seed(SEED)
        model = SNAC(**REAL_24KHZ_CONFIG).eval()
        partial = path.with_name(f"partial-{path.name}")
        export_decoder(model, partial)
        verify(model, partial)
        stream_model_path(partial).replace(stream_model_path(path))
        partial.replace(path)
    return path


def token_chunks(frames: list[Frame]) -> list[str]:
    """The stream as a backend sends it: one token per server-sent event, start and end marks."""
    text = frame_to_token_text
    return (
        ["<custom_token_1>"]
        + [f"<custom_token_{n}>" for frame in frames for n in _numbers(text(frame))]
        + ["<custom_token_2>"]
    )


def _numbers(text: str) -> list[int]:
    return [int(part.split(">")[0]) for part in text.split("<custom_token_")[1:]]


def run_public(decoder: SnacOnnxDecoder, chunks: list[str]) -> tuple[np.ndarray, int | None]:
    """The public servers' window: count tokens; every 7th from the 28th on, decode 4 frames."""
    parser = TokenStreamParser()
    frames: list[Frame] = []
    out: list[np.ndarray] = []
    first_audio_tokens = None
    for chunk in chunks:
        new = parser.feed(chunk)
        frames += new
        if new and len(frames) >= 4:
            audio = decoder.decode(frames[-4:])
            out.append(to_int16(audio[SAMPLES_PER_FRAME : 2 * SAMPLES_PER_FRAME]))
            if first_audio_tokens is None:
                first_audio_tokens = parser.tokens_seen - 1  # not counting start of speech
    return np.concatenate(out), first_audio_tokens


def run_ours(decoder: SnacOnnxDecoder, chunks: list[str]) -> tuple[np.ndarray, int | None]:
    return _run_stream(AudioStream(decoder), chunks)


def run_ours_windowed(decoder: SnacOnnxDecoder, chunks: list[str]) -> tuple[np.ndarray, int | None]:
    return _run_stream(AudioStream(decoder, exact=False), chunks)


def _run_stream(stream: AudioStream, chunks: list[str]) -> tuple[np.ndarray, int | None]:
    out: list[np.ndarray] = []
    first_audio_tokens = None
    for chunk in chunks:
        pcm = stream.feed(chunk)
        if pcm.size:
            out.append(pcm)
            if first_audio_tokens is None:
                first_audio_tokens = stream.parser.tokens_seen - 1
    out.append(stream.finish())
    return np.concatenate(out), first_audio_tokens


Runner = Callable[[SnacOnnxDecoder, list[str]], tuple[np.ndarray, int | None]]


def measure(
    run: Runner, decoder: SnacOnnxDecoder, chunks: list[str]
) -> tuple[float, float, np.ndarray, int | None]:
    cpu, wall = time.process_time(), time.perf_counter()
    pcm, first = run(decoder, chunks)
    return time.process_time() - cpu, time.perf_counter() - wall, pcm, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Orpheus decode benchmark")
    parser.add_argument("--frames", type=int, default=70, help="utterance length in frames")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "orpheus-bench-cache"
    )
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model = real_snac_onnx(args.cache_dir)
    rng = np.random.default_rng(SEED)
    frames: list[Frame] = [
        tuple(int(c) for c in row)  # type: ignore[misc]
        for row in rng.integers(0, 4096, size=(args.frames, 7))
    ]
    chunks = token_chunks(frames)
    seconds = args.frames * SAMPLES_PER_FRAME / SAMPLE_RATE

    results: dict[str, object] = {}
    for threads in (1, 2):
        decoder = SnacOnnxDecoder(model, threads=threads)
        decoder.decode(frames[:4])  # warm up both window sizes before timing
        decoder.decode(frames[:20])
        whole = to_int16(decoder.decode(frames)).astype(np.float64)
        schemes: dict[str, Runner] = {"public": run_public, "ours": run_ours}
        if threads == 1:  # the windowed fallback, for reference (1 thread keeps the run short)
            schemes["ours_windowed"] = run_ours_windowed
        cpu: dict[str, list[float]] = {name: [] for name in schemes}
        wall: dict[str, list[float]] = {name: [] for name in schemes}
        outputs = {}
        for _ in range(args.repeats):
            for name, runner in schemes.items():
                c, w, pcm, first = measure(runner, decoder, chunks)
                cpu[name].append(c)
                wall[name].append(w)
                outputs[name] = (pcm, first)
        rms = float(np.sqrt(np.mean(whole**2)))
        for name in schemes:
            results[f"{name}_cpu_s_per_audio_s_{threads}t"] = round(
                statistics.median(cpu[name]) / seconds, 4
            )
            results[f"{name}_rtf_{threads}t"] = round(statistics.median(wall[name]) / seconds, 4)
        for name in [n for n in schemes if n != "public"]:
            results[f"{name}_speedup_{threads}t"] = round(
                statistics.median(cpu["public"]) / statistics.median(cpu[name]), 2
            )
        if threads == 1:
            results["expected_samples"] = args.frames * SAMPLES_PER_FRAME
            for name, (pcm, first) in outputs.items():
                results[f"{name}_first_audio_tokens"] = first
                results[f"{name}_samples"] = int(pcm.size)
                if pcm.size == whole.size:  # the public scheme never flushes its last frames
                    error = np.max(np.abs(pcm.astype(np.float64) - whole)) / rms
                    results[f"{name}_max_err_over_rms"] = float(f"{error:.3g}")
    results.update(
        frames=args.frames,
        audio_s=round(seconds, 3),
        repeats=args.repeats,
        bench_wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
