"""Every response format, streamed chunk by chunk, decodes back with an independent decoder."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile

from runtime.codec import (
    CONTENT_TYPES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    SUPPORTED_FORMATS,
    UnsupportedFormatError,
    open_encoder,
)

FRAMES = 14  # 1.19 s


def speechlike_pcm(frames: int = FRAMES) -> np.ndarray:
    t = np.arange(frames * SAMPLES_PER_FRAME) / SAMPLE_RATE
    wave = 0.4 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.round(wave * 32767).astype(np.int16)


def encode_in_chunks(fmt: str, pcm: np.ndarray) -> tuple[bytes, list[int]]:
    encoder = open_encoder(fmt)
    parts = [encoder.encode(pcm[i : i + SAMPLES_PER_FRAME]) for i in range(0, pcm.size, 2048)]
    parts.append(encoder.finish())
    return b"".join(parts), [len(p) for p in parts]


def soundfile_read(data: bytes) -> tuple[np.ndarray, int]:
    """libsndfile; a streamed file declares no length, so read blocks until the end."""
    blocks = []
    with soundfile.SoundFile(io.BytesIO(data)) as sound:
        while (block := sound.read(4096, dtype="int16")).size:
            blocks.append(block)
        return np.concatenate(blocks), sound.samplerate


def pyav_decode(data: bytes) -> tuple[np.ndarray, int]:
    """A fresh demuxer and decoder over the bytes alone (nothing shared with the encoder)."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(frames, axis=-1), stream.codec_context.sample_rate


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_format_decodes_back_to_the_expected_duration(fmt):
    pcm = speechlike_pcm()
    data, sizes = encode_in_chunks(fmt, pcm)
    expected = pcm.size / SAMPLE_RATE
    if fmt == "pcm":
        assert data == pcm.astype("<i2").tobytes()
        return
    if fmt == "wav":
        audio, rate = soundfile_read(data)
        assert rate == SAMPLE_RATE
        assert np.array_equal(audio, pcm)
        duration = audio.shape[0] / rate
    else:
        # libsndfile cannot read a FLAC stream that declares no length (it seeks at the end), so
        # FLAC is checked, like the lossy formats, by FFmpeg's demuxer in a fresh container.
        audio, rate = pyav_decode(data)
        duration = audio.shape[-1] / rate
        if fmt == "flac":  # lossless
            assert rate == SAMPLE_RATE
            assert np.array_equal(audio.reshape(-1), pcm)
    assert abs(duration - expected) <= SAMPLES_PER_FRAME / SAMPLE_RATE
    # Streaming: bytes leave before the end, not only from finish().
    assert sum(sizes[: len(sizes) // 2]) > 0


def test_wav_header_declares_unknown_length_and_the_pcm_follows():
    pcm = speechlike_pcm(2)
    data, _ = encode_in_chunks("wav", pcm)
    riff, riff_size, wave, fmt_tag = struct.unpack("<4sI4s4s", data[:16])
    assert (riff, wave, fmt_tag) == (b"RIFF", b"WAVE", b"fmt ")
    channels, rate, bits = struct.unpack("<xxHI6xH", data[20:36])
    assert (channels, rate, bits) == (1, SAMPLE_RATE, 16)
    assert data[36:40] == b"data"
    assert riff_size == struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    assert data[44:] == pcm.astype("<i2").tobytes()


def test_empty_utterance_is_still_a_valid_wav():
    encoder = open_encoder("wav")
    data = encoder.finish()
    assert len(data) == 44 and data.startswith(b"RIFF")


def test_pcm_and_wav_emit_bytes_as_pcm_arrives():
    encoder = open_encoder("pcm")
    assert encoder.encode(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"
    assert encoder.finish() == b""


def test_unknown_format_and_wrong_dtype_are_rejected():
    with pytest.raises(UnsupportedFormatError, match="wav, pcm, mp3"):
        open_encoder("ogg-vorbis")
    with pytest.raises(TypeError):
        open_encoder("pcm").encode(np.zeros(4, dtype=np.float32))


def test_every_format_has_a_content_type():
    assert set(CONTENT_TYPES) == set(SUPPORTED_FORMATS)
    assert CONTENT_TYPES["mp3"] == "audio/mpeg"
