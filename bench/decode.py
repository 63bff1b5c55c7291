"""Benchmark: CPU cost and first-audio latency of decoding Orpheus tokens to audio.

    .venv/bin/python -m bench.decode [--frames 70] [--repeats 2] [--heads 200] [--cache-dir DIR]

One run, one token stream, one ONNX model of the real SNAC 24 kHz architecture (random weights,
seed 0; exported on first use and cached), compared side by side on 1 and 2 ONNX Runtime threads:

* public: the scheme of the public Orpheus servers. Every 7 tokens, once 28 are in, decode the last
  4 frames and keep the second frame's 2048 samples (4 decodes per frame; the last frames are never
  flushed).
* ours_fast: `runtime.codec.AudioStream` as the frontend runs it (ORPHEUS_FAST_START, the default):
  the step graph, every frame decoded once, an approximate first 512 samples after 2 frames
  (14 tokens) crossfaded into the exact decode over 256 more, final flush.
* ours: the same without the fast start (first audio after 3 frames, all exact): the previous
  default, for the before/after comparison.
* ours_windowed: the whole-utterance graph only (chunks with 2 frames of context on each side,
  doubling up to 32 frames), for decoders exported without the step graph.

Tokens before the first audio count audio tokens only. The fast start's early samples are compared
with the whole-utterance decode: their largest error relative to the signal's RMS, and the step at
the boundary where the exact decode takes over, relative to RMS and to the median sample-to-sample
jump of the decode within 10 ms (the scale that masks a click; tests/fixtures/clicks.py flags a
step above 5% of it), next to the largest step inside the approximate samples themselves. These are
measured on the long utterance and on `--heads` more short ones (worst case reported). Every chunk
boundary of every stream is also checked for clicks.

The head's cost: what each stream spends before its first byte with the fast start, measured side
by side (alternating calls, median): the head graph (`decode_start`, only the 768 samples used)
vs a whole decode of the 2 frames (what the fast start did before the head graph).

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
from runtime.codec.snac_onnx import companion_paths
from runtime.codec.streaming import HEAD_BLEND, HEAD_FRAMES, HEAD_SAMPLES, to_int16
from runtime.codec.tokens import TokenStreamParser
from tests.fixtures.clicks import WINDOW, chunk_boundaries

SEED = 0


def real_snac_onnx(cache_dir: Path) -> Path:
    """The real 24 kHz architecture with random weights, exported once per config and opset."""
    from runtime.codec.export_snac import DEFAULT_OPSET, REAL_24KHZ_CONFIG

    head = ["head-v1", HEAD_FRAMES, HEAD_SAMPLES + HEAD_BLEND]
    key = json.dumps([REAL_24KHZ_CONFIG, SEED, DEFAULT_OPSET, "stream-v3", head], sort_keys=True)
    key = key.encode()
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
        for made, final in zip(companion_paths(partial), companion_paths(path), strict=True):
            made.replace(final)
        partial.replace(path)
    return path


def random_frames(rng: np.random.Generator, count: int) -> list[Frame]:
    """`count` frames of uniformly random codes (0..4095), drawn from `rng`."""
    return [
        tuple(int(c) for c in row)  # type: ignore[misc]
        for row in rng.integers(0, 4096, size=(count, 7))
    ]


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


# What a run returns: all PCM, the audio tokens in before the first sample, and the positions
# where one returned piece of PCM ends and the next begins.
Result = tuple[np.ndarray, int | None, list[int]]


def run_public(decoder: SnacOnnxDecoder, chunks: list[str]) -> Result:
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
    return np.concatenate(out), first_audio_tokens, _joints(out)


def run_ours_fast(decoder: SnacOnnxDecoder, chunks: list[str]) -> Result:
    return _run_stream(AudioStream(decoder, fast_start=True), chunks)


def run_ours(decoder: SnacOnnxDecoder, chunks: list[str]) -> Result:
    return _run_stream(AudioStream(decoder), chunks)


def run_ours_windowed(decoder: SnacOnnxDecoder, chunks: list[str]) -> Result:
    return _run_stream(AudioStream(decoder, exact=False), chunks)


def _run_stream(stream: AudioStream, chunks: list[str]) -> Result:
    out: list[np.ndarray] = []
    first_audio_tokens = None
    for chunk in chunks:
        pcm = stream.feed(chunk)
        if pcm.size:
            out.append(pcm)
            if first_audio_tokens is None:
                first_audio_tokens = stream.parser.tokens_seen - 1
    out.append(stream.finish())
    return np.concatenate(out), first_audio_tokens, _joints(out)


def _joints(pieces: list[np.ndarray]) -> list[int]:
    return [int(n) for n in np.cumsum([p.size for p in pieces if p.size])[:-1]]


Runner = Callable[[SnacOnnxDecoder, list[str]], Result]


def measure(
    run: Runner, decoder: SnacOnnxDecoder, chunks: list[str]
) -> tuple[float, float, Result]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = run(decoder, chunks)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def head_figures(stream: np.ndarray, whole: np.ndarray) -> dict[str, float]:
    """The fast start's early samples against the whole decode (int16 units)."""
    error = stream.astype(np.float64) - whole
    rms = float(np.sqrt(np.mean(whole**2)))
    steps = np.abs(np.diff(error))
    local = np.abs(np.diff(whole[HEAD_SAMPLES - 1 - WINDOW : HEAD_SAMPLES - 1 + WINDOW]))
    median_jump = float(np.median(local))
    step = float(steps[HEAD_SAMPLES - 1])
    return {
        "head_err_over_rms": float(np.max(np.abs(error[:HEAD_SAMPLES]))) / rms,
        "blend_err_over_rms": float(
            np.max(np.abs(error[HEAD_SAMPLES : HEAD_SAMPLES + HEAD_BLEND]))
        ) / rms,
        "step_over_rms": step / rms,
        "step_over_median_jump": step / median_jump,
        "head_inner_step_over_median_jump": float(np.max(steps[: HEAD_SAMPLES - 1]))
        / median_jump,
    }


def short_heads(decoder: SnacOnnxDecoder, count: int) -> dict[str, float]:
    """`head_figures` over `count` short random utterances (5 frames): the worst of each."""
    worst: dict[str, float] = {}
    rng = np.random.default_rng(SEED + 1)
    for _ in range(count):
        frames = random_frames(rng, 5)
        whole = to_int16(decoder.decode(frames)).astype(np.float64)
        stream, _, _ = run_ours_fast(decoder, token_chunks(frames))
        for name, value in head_figures(stream, whole).items():
            worst[name] = max(worst.get(name, 0.0), value)
    return worst


def head_cost_ms(decoder: SnacOnnxDecoder, repeats: int = 30) -> tuple[float, float]:
    """(head graph, whole 2-frame decode): median ms of each, calls alternating."""
    rng = np.random.default_rng(SEED + 2)
    frames = random_frames(rng, HEAD_FRAMES)
    span = HEAD_SAMPLES + HEAD_BLEND
    calls = {
        "head": lambda: decoder.decode_start(frames, span),
        "whole": lambda: decoder.decode(frames),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(repeats + 2):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if index >= 2:  # the first calls allocate
                times[name].append((time.perf_counter() - start) * 1000)
    return statistics.median(times["head"]), statistics.median(times["whole"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Orpheus decode benchmark")
    parser.add_argument("--frames", type=int, default=70, help="utterance length in frames")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--heads", type=int, default=200, help="short utterances for head error")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "orpheus-bench-cache"
    )
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model = real_snac_onnx(args.cache_dir)
    rng = np.random.default_rng(SEED)
    frames = random_frames(rng, args.frames)
    chunks = token_chunks(frames)
    seconds = args.frames * SAMPLES_PER_FRAME / SAMPLE_RATE

    results: dict[str, object] = {}
    for threads in (1, 2):
        decoder = SnacOnnxDecoder(model, threads=threads)
        decoder.decode(frames[:4])  # warm up both window sizes before timing
        decoder.decode(frames[:20])
        whole = to_int16(decoder.decode(frames)).astype(np.float64)
        schemes: dict[str, Runner] = {
            "public": run_public, "ours": run_ours, "ours_fast": run_ours_fast
        }
        if threads == 1:  # the windowed fallback, for reference (1 thread keeps the run short)
            schemes["ours_windowed"] = run_ours_windowed
        cpu: dict[str, list[float]] = {name: [] for name in schemes}
        wall: dict[str, list[float]] = {name: [] for name in schemes}
        outputs = {}
        for _ in range(args.repeats):
            for name, runner in schemes.items():
                c, w, result = measure(runner, decoder, chunks)
                cpu[name].append(c)
                wall[name].append(w)
                outputs[name] = result
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
            for name, (pcm, first, joints) in outputs.items():
                results[f"{name}_first_audio_tokens"] = first
                results[f"{name}_samples"] = int(pcm.size)
                if pcm.size == whole.size:  # the public scheme never flushes its last frames
                    error = np.abs(pcm.astype(np.float64) - whole)
                    results[f"{name}_max_err_over_rms"] = _fig(np.max(error) / rms)
                    if name == "ours_fast":  # past the head and its crossfade
                        exact = error[HEAD_SAMPLES + HEAD_BLEND :]
                        results["ours_fast_max_err_after_head_lsb"] = _fig(np.max(exact))
                    boundaries = chunk_boundaries(pcm, whole, joints)
                    results[f"{name}_chunk_boundaries"] = len(boundaries)
                    results[f"{name}_clicks"] = sum(b.click for b in boundaries)
                    results[f"{name}_max_boundary_step_over_median_jump"] = _fig(
                        max(b.ratio for b in boundaries)
                    )
            fast_pcm = outputs["ours_fast"][0]
            for key, value in head_figures(fast_pcm, whole).items():
                results[f"ours_fast_{key}"] = _fig(value)
            for key, value in short_heads(decoder, args.heads).items():
                results[f"heads_worst_{key}"] = _fig(value)
            if decoder.head_span != (HEAD_FRAMES, HEAD_SAMPLES + HEAD_BLEND):
                raise SystemExit(f"{model} has no head graph for the fast start's head")
            head_ms, whole_ms = head_cost_ms(decoder)
            results["head_decode_ms_1t"] = round(head_ms, 2)
            results["head_whole_decode_ms_1t"] = round(whole_ms, 2)
            results["head_cost_ratio"] = round(head_ms / whole_ms, 2)
    results.update(
        frames=args.frames,
        audio_s=round(seconds, 3),
        repeats=args.repeats,
        heads=args.heads,
        bench_wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(results))
    return 0


def _fig(value: float) -> float:
    return float(f"{value:.3g}")


if __name__ == "__main__":
    raise SystemExit(main())
