"""Chunked streaming decode against whole-utterance decode, on a real tiny-config SNAC ONNX."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.codec import (
    SAMPLES_PER_FRAME,
    AudioStream,
    SnacOnnxDecoder,
    StreamingDecoder,
    frame_to_token_text,
    to_int16,
)


def random_frames(count: int, seed: int) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(c) for c in row) for row in rng.integers(0, 4096, size=(count, 7))]


def stream(decoder, frames, sizes, **opts) -> tuple[np.ndarray, list[int]]:
    """Push `frames` in pieces of the given sizes; return all PCM and the per-push output sizes."""
    streaming = StreamingDecoder(decoder, **opts)
    out, emitted, i = [], [], 0
    for size in sizes:
        pcm = streaming.push(frames[i : i + size])
        i += size
        out.append(pcm)
        emitted.append(pcm.size)
    assert i == len(frames)
    out.append(streaming.flush())
    return np.concatenate(out), emitted


def relative_error(pcm: np.ndarray, whole: np.ndarray) -> float:
    # Against the AC part of the signal (the tiny model's output carries a DC offset that would
    # make an RMS-relative error look smaller than it is).
    scale = float(np.std(whole))
    return float(np.max(np.abs(pcm.astype(np.float64) / 32767.0 - whole))) / scale


def test_decoder_gives_exactly_2048_samples_per_frame(tiny_snac_decoder: SnacOnnxDecoder):
    for count in (1, 2, 5):
        audio = tiny_snac_decoder.decode(random_frames(count, seed=count))
        assert audio.dtype == np.float32
        assert audio.shape == (count * SAMPLES_PER_FRAME,)
    assert tiny_snac_decoder.decode([]).shape == (0,)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 40])
def test_one_frame_at_a_time_matches_the_whole_decode(tiny_snac_decoder, count):
    frames = random_frames(count, seed=count)
    whole = tiny_snac_decoder.decode(frames).astype(np.float64)
    pcm, _ = stream(tiny_snac_decoder, frames, [1] * count)
    assert pcm.dtype == np.int16
    assert pcm.size == count * SAMPLES_PER_FRAME  # no lost first or last frames
    assert relative_error(pcm, whole) <= 1e-3


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12),
    first_chunk=st.integers(min_value=1, max_value=3),
    chunk=st.integers(min_value=3, max_value=8),
    context=st.integers(min_value=2, max_value=3),
)
def test_any_push_pattern_and_schedule_matches_the_whole_decode(
    tiny_snac_decoder, sizes, first_chunk, chunk, context
):
    frames = random_frames(sum(sizes), seed=len(sizes))
    whole = tiny_snac_decoder.decode(frames).astype(np.float64)
    pcm, _ = stream(
        tiny_snac_decoder, frames, sizes, first_chunk=first_chunk, chunk=chunk, context=context
    )
    assert pcm.size == len(frames) * SAMPLES_PER_FRAME
    if frames:
        assert relative_error(pcm, whole) <= 1e-3


def test_three_frames_of_context_cover_the_receptive_field(tiny_snac_decoder):
    frames = random_frames(30, seed=3)
    whole = tiny_snac_decoder.decode(frames)
    pcm, _ = stream(tiny_snac_decoder, frames, [1] * 30, context=3, chunk=4)
    # Only int16 rounding is left: at most one step.
    assert np.max(np.abs(pcm.astype(np.int32) - to_int16(whole).astype(np.int32))) <= 1


def test_default_schedule_starts_after_three_frames_and_grows(tiny_snac_decoder):
    _, emitted = stream(tiny_snac_decoder, random_frames(40, seed=1), [1] * 40)
    frames_out = [n // SAMPLES_PER_FRAME for n in emitted]
    assert frames_out[:2] == [0, 0]
    assert frames_out[2] == 1  # 21 tokens in: the first frame is out
    nonzero = [n for n in frames_out if n]
    assert nonzero[:4] == [1, 2, 4, 8]  # then chunks double


def test_int16_conversion_saturates_instead_of_wrapping():
    pcm = to_int16(np.array([1.5, 1.0, 0.5, 0.0, -1.0, -1.5], dtype=np.float32))
    assert pcm.tolist() == [32767, 32767, 16384, 0, -32767, -32768]


def test_push_after_flush_is_an_error(tiny_snac_decoder):
    streaming = StreamingDecoder(tiny_snac_decoder)
    streaming.flush()
    with pytest.raises(RuntimeError):
        streaming.push(random_frames(1, seed=0))


def token_text(frames) -> str:
    return "<custom_token_1>" + "".join(frame_to_token_text(f) for f in frames) + "<custom_token_2>"


def test_audio_stream_turns_sse_text_into_the_same_audio(tiny_snac_decoder):
    frames = random_frames(12, seed=5)
    text = token_text(frames)
    audio = AudioStream(tiny_snac_decoder)
    pieces = [audio.feed(text[i : i + 13]) for i in range(0, len(text), 13)]
    assert audio.ended  # end of speech flushed the tail in the same feed call
    assert audio.frames == 12
    pieces.append(audio.finish())
    pcm = np.concatenate(pieces)
    reference, _ = stream(tiny_snac_decoder, frames, [1] * 12)
    assert np.array_equal(pcm, reference)
    assert audio.finish().size == 0


def test_audio_stream_without_end_token_flushes_on_finish(tiny_snac_decoder):
    frames = random_frames(5, seed=6)
    audio = AudioStream(tiny_snac_decoder, first_chunk=2, chunk=4, context=2)
    head = audio.feed("".join(frame_to_token_text(f) for f in frames) + "<custom_token_12")
    assert not audio.ended
    pcm = np.concatenate([head, audio.finish()])
    assert pcm.size == 5 * SAMPLES_PER_FRAME
    assert audio.parser.invalid_tokens == 1


def test_concurrent_streams_share_one_session(tiny_snac_decoder):
    utterances = [random_frames(15 + i, seed=100 + i) for i in range(6)]
    expected = [stream(tiny_snac_decoder, frames, [1] * len(frames))[0] for frames in utterances]

    def run(frames):
        audio = AudioStream(tiny_snac_decoder)
        text = token_text(frames)
        out = [audio.feed(text[i : i + 7]) for i in range(0, len(text), 7)]
        return np.concatenate([*out, audio.finish()])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, utterances))
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got, want)
