"""Streaming audio encoders: int16 PCM in, bytes of the requested format out as soon as they exist.

`wav` and `pcm` are written by hand (no dependency). The compressed formats go through PyAV (FFmpeg)
into a write-only sink, so the muxers cannot seek back to patch headers and must emit a streamable
file: mp3 (LAME), opus in Ogg (pages of 60 ms so that bytes flow while speaking), flac, and aac in
ADTS (the raw-stream framing that browsers and ffmpeg play without an index).
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from av import AudioStream

SUPPORTED_FORMATS = ("wav", "pcm", "mp3", "opus", "flac", "aac")
CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "flac": "audio/flac",
    "aac": "audio/aac",
}

# Unknown length: the RIFF and data sizes are set to the largest value (as FFmpeg and OpenAI do for
# streamed WAV); decoders then read samples until the end of the stream.
STREAMING_SIZE = 0xFFFFFFFF

# format -> (FFmpeg muxer, encoder, muxer options)
_PYAV_FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", {}),
    "opus": ("ogg", "libopus", {"page_duration": "60000"}),
    "flac": ("flac", "flac", {}),
    "aac": ("adts", "aac", {}),
}


class UnsupportedFormatError(ValueError):
    def __init__(self, fmt: str) -> None:
        self.format = fmt
        super().__init__(
            f"unsupported response_format {fmt!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        )


class AudioEncoder(Protocol):
    content_type: str

    def encode(self, pcm: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...


def _as_int16(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {pcm.dtype}")
    return np.ascontiguousarray(pcm.reshape(-1))


def wav_header(sample_rate: int, channels: int = 1, data_size: int = STREAMING_SIZE) -> bytes:
    """44-byte PCM WAV header; the default sizes mean "until the end of the stream"."""
    block_align = channels * 2
    riff_size = STREAMING_SIZE if data_size == STREAMING_SIZE else 36 + data_size
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16
        )
        + b"data"
        + struct.pack("<I", data_size)
    )


class PcmEncoder:
    """Raw s16le mono; with `header=True`, a streaming WAV."""

    def __init__(self, sample_rate: int, *, header: bool = False) -> None:
        self.content_type = CONTENT_TYPES["wav" if header else "pcm"]
        self._pending_header = wav_header(sample_rate) if header else b""

    def encode(self, pcm: np.ndarray) -> bytes:
        out = self._pending_header + _as_int16(pcm).astype("<i2", copy=False).tobytes()
        self._pending_header = b""
        return out

    def finish(self) -> bytes:
        # An empty utterance still yields a valid (empty) WAV file.
        out, self._pending_header = self._pending_header, b""
        return out


class _Sink:
    """Write-only file object: no seek/tell, so FFmpeg treats the output as a stream."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class PyAVEncoder:
    """A compressed format via PyAV; `encode` returns whatever the muxer has written so far."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        import av  # imported on use: PCM-only callers do not pay for FFmpeg

        muxer, codec, options = _PYAV_FORMATS[fmt]
        self.content_type = CONTENT_TYPES[fmt]
        self._av = av
        self._sample_rate = sample_rate
        self._sink = _Sink()
        # flush_packets: hand every muxed packet to the sink at once instead of buffering 32 KiB.
        self._container = av.open(
            self._sink, mode="w", format=muxer, options={"flush_packets": "1", **options}
        )
        stream = self._container.add_stream(codec, rate=sample_rate)
        # add_stream is typed for any kind of stream; every codec in _PYAV_FORMATS is audio.
        if not isinstance(stream, av.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        self._stream: AudioStream = stream
        self._stream.layout = "mono"
        self._lock = threading.Lock()
        self._closed = False

    def encode(self, pcm: np.ndarray) -> bytes:
        samples = _as_int16(pcm)
        with self._lock:
            if self._closed:
                raise RuntimeError("encode() after finish()")
            if samples.size:
                frame = self._av.AudioFrame.from_ndarray(
                    samples[None, :], format="s16", layout="mono"
                )
                frame.sample_rate = self._sample_rate
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            return self._sink.take()

    def finish(self) -> bytes:
        with self._lock:
            if not self._closed:
                self._closed = True
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            return self._sink.take()


def open_encoder(fmt: str, sample_rate: int = 24000) -> AudioEncoder:
    """A fresh encoder for one response; raises `UnsupportedFormatError` for unknown formats."""
    name = fmt.lower()
    if name == "wav":
        return PcmEncoder(sample_rate, header=True)
    if name == "pcm":
        return PcmEncoder(sample_rate)
    if name in _PYAV_FORMATS:
        return PyAVEncoder(name, sample_rate)
    raise UnsupportedFormatError(fmt)
