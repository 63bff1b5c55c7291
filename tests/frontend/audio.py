"""Reading what the frontend returns, for assertions (no frontend code involved; the expected
audio of a fixture model is decoded with the codec itself)."""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

import numpy as np

SAMPLES_PER_FRAME = 2048
SAMPLE_RATE = 24000


def wav_samples(data: bytes, *, streaming: bool) -> np.ndarray:
    """Samples of a mono 16-bit 24 kHz WAV. A streamed WAV has 0xFFFFFFFF sizes (length unknown);
    a complete one must carry exact sizes, which the `wave` module checks."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (fmt, channels, rate, bits) == (1, 1, SAMPLE_RATE, 16)
    assert data[36:40] == b"data"
    (size,) = struct.unpack("<I", data[40:44])
    if streaming:
        assert size == 0xFFFFFFFF
        return np.frombuffer(data[44:], dtype="<i2")
    assert size == len(data) - 44
    with wave.open(io.BytesIO(data)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def pcm_samples(data: bytes) -> np.ndarray:
    assert len(data) % 2 == 0
    return np.frombuffer(data, dtype="<i2")


def model_pcm(decoder: Any, frames: int, code_offset: int = 0) -> np.ndarray:
    """What the tiny fixture model with ``code_offset`` says (tests/fixtures/orpheus_gguf.py),
    decoded whole with ``decoder`` (a SnacOnnxDecoder): the frontend's streamed PCM must match
    it to an int16 step, and differs completely from another offset's."""
    from runtime.codec.streaming import to_int16
    from runtime.codec.tokens import TokenStreamParser
    from tests.fixtures.orpheus_gguf import audio_token_texts

    parser = TokenStreamParser()
    codes = "".join(audio_token_texts(frames, code_offset))
    return to_int16(decoder.decode(parser.feed(codes) + parser.finish()))


def decoded_seconds(data: bytes) -> float:
    """Duration of a compressed file, decoded with PyAV (FFmpeg)."""
    import av

    samples = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


def assert_speaks(audio: np.ndarray, expected: np.ndarray) -> None:
    """``audio`` (as a deployed frontend streams it, fast start on) is ``expected`` (a whole
    decode): the approximate head within its stated bound (3% of the signal's RMS), then exact
    to an int16 step or two."""
    from runtime.codec.streaming import HEAD_BLEND, HEAD_SAMPLES

    assert audio.size == expected.size, (audio.size, expected.size)
    early = HEAD_SAMPLES + HEAD_BLEND
    diff = np.abs(audio.astype(int) - expected.astype(int))
    rms = float(np.sqrt(np.mean(expected.astype(float) ** 2)))
    assert diff[:early].max() <= 0.03 * rms, (diff[:early].max(), rms)
    assert diff[early:].max() <= 2
