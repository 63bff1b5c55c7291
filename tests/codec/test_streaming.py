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
from runtime.codec.streaming import HEAD_BLEND, HEAD_SAMPLES


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
    """Largest deviation from the whole-utterance decode, relative to the signal's RMS."""
    rms = float(np.sqrt(np.mean(whole**2)))
    return float(np.max(np.abs(pcm.astype(np.float64) / 32767.0 - whole))) / rms


def int16_steps(pcm: np.ndarray, whole: np.ndarray) -> int:
    return int(np.max(np.abs(pcm.astype(np.int32) - to_int16(whole).astype(np.int32))))


@pytest.fixture(scope="module")
def windowed_decoder(tiny_snac_onnx) -> SnacOnnxDecoder:
    """The same model without its step graph: `StreamingDecoder` falls back to windows."""
    return SnacOnnxDecoder(tiny_snac_onnx, stream_model=False)


def test_decoder_gives_exactly_2048_samples_per_frame(tiny_snac_decoder: SnacOnnxDecoder):
    for count in (1, 2, 5):
        audio = tiny_snac_decoder.decode(random_frames(count, seed=count))
        assert audio.dtype == np.float32
        assert audio.shape == (count * SAMPLES_PER_FRAME,)
    assert tiny_snac_decoder.decode([]).shape == (0,)
    assert tiny_snac_decoder.can_stream


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 40])
def test_exact_stream_one_frame_at_a_time_equals_the_whole_decode(tiny_snac_decoder, count):
    frames = random_frames(count, seed=count)
    whole = tiny_snac_decoder.decode(frames)
    pcm, _ = stream(tiny_snac_decoder, frames, [1] * count)
    assert pcm.dtype == np.int16
    assert pcm.size == count * SAMPLES_PER_FRAME  # no lost first or last frames
    assert int16_steps(pcm, whole) <= 1  # only float rounding differs


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 40])
def test_windowed_stream_matches_the_whole_decode_within_1e3_of_rms(windowed_decoder, count):
    frames = random_frames(count, seed=count)
    whole = windowed_decoder.decode(frames).astype(np.float64)
    streaming = StreamingDecoder(windowed_decoder)
    assert not streaming.exact
    pcm, _ = stream(windowed_decoder, frames, [1] * count)
    assert pcm.size == count * SAMPLES_PER_FRAME
    assert relative_error(pcm, whole) <= 1e-3


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12),
    first_chunk=st.integers(min_value=1, max_value=3),
    chunk=st.integers(min_value=1, max_value=8),
    context=st.integers(min_value=0, max_value=3),
    exact=st.booleans(),
    fast_start=st.booleans(),
)
def test_any_push_pattern_and_schedule_matches_the_whole_decode(
    tiny_snac_decoder, windowed_decoder, sizes, first_chunk, chunk, context, exact, fast_start
):
    chunk = max(chunk, first_chunk)
    decoder = tiny_snac_decoder if exact else windowed_decoder
    frames = random_frames(sum(sizes), seed=len(sizes))
    whole = decoder.decode(frames).astype(np.float64)
    pcm, _ = stream(decoder, frames, sizes, first_chunk=first_chunk, chunk=chunk,
                    context=max(context, 0 if exact else 2), fast_start=fast_start)
    assert pcm.size == len(frames) * SAMPLES_PER_FRAME
    # A fast start's head (when one was sent) is approximate; what follows it is not.
    start = HEAD_SAMPLES + HEAD_BLEND if fast_start else 0
    if frames and exact:
        assert int16_steps(pcm[start:], whole[start:]) <= 1
    elif pcm.size > start:
        assert relative_error(pcm[start:], whole[start:]) <= 1e-3


@pytest.mark.parametrize("context", [0, 1])
def test_no_fast_start_head_once_decoding_has_begun(windowed_decoder, context):
    # With little context the windowed decode starts before 2 frames are in: no head then.
    frames = random_frames(6, seed=11)
    pcm, emitted = stream(windowed_decoder, frames, [1] * 6, context=context, fast_start=True)
    assert emitted[0] == SAMPLES_PER_FRAME * (context == 0)
    assert HEAD_SAMPLES not in emitted
    assert pcm.size == 6 * SAMPLES_PER_FRAME


def test_three_frames_of_context_cover_the_receptive_field(windowed_decoder):
    frames = random_frames(30, seed=3)
    whole = windowed_decoder.decode(frames)
    pcm, _ = stream(windowed_decoder, frames, [1] * 30, context=3, chunk=4)
    assert int16_steps(pcm, whole) <= 1  # only int16 rounding is left


def test_exact_schedule_first_audio_after_three_frames_then_small_steps(tiny_snac_decoder):
    _, emitted = stream(tiny_snac_decoder, random_frames(20, seed=1), [1] * 20)
    assert emitted[:2] == [0, 0]
    # 21 tokens in: the first step returns what the decoder's lookahead (about 2.3 frames of
    # audio) allows, then steps of 2 and 4 frames return 2048 samples per frame.
    assert 0 < emitted[2] < SAMPLES_PER_FRAME
    assert [n for n in emitted[3:] if n][:3] == [2 * 2048, 4 * 2048, 4 * 2048]


def test_windowed_schedule_starts_after_three_frames_and_doubles(windowed_decoder):
    _, emitted = stream(windowed_decoder, random_frames(40, seed=1), [1] * 40)
    frames_out = [n // SAMPLES_PER_FRAME for n in emitted]
    assert frames_out[:3] == [0, 0, 1]
    assert [n for n in frames_out if n][:4] == [1, 2, 4, 8]


def test_step_graph_rejects_a_too_small_first_step_but_ends_any_utterance(tiny_snac_decoder):
    frames = random_frames(2, seed=9)
    session = tiny_snac_decoder.open_stream()
    assert session is not None and session.first_frames == 3
    with pytest.raises(ValueError, match="at least 3"):
        session.step(frames)
    audio = session.step(frames, final=True)  # a 2-frame utterance is still decoded whole
    assert np.max(np.abs(audio - tiny_snac_decoder.decode(frames))) < 1e-5
    with pytest.raises(RuntimeError):
        session.step(frames)


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
    assert audio.samples_emitted == pcm.size == 12 * SAMPLES_PER_FRAME
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
