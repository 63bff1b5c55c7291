"""Consecutive pieces of speech to one encoded file: crossfaded where they meet, sped up or
slowed down (`speed`), encoded in the response format.

Both ways of asking for speech end here: a POST's text segments (speech.py, one decoder segment
per backend request) and a WebSocket utterance's units (speech_socket.py, one backend request
each). Synchronous; its owner calls it from one worker thread at a time.
"""

from __future__ import annotations

import numpy as np

from runtime.codec.encoders import open_encoder
from runtime.codec.protocol import SAMPLE_RATE
from runtime.codec.text_split import SegmentJoiner
from runtime.frontend.tempo import TempoFilter

__all__ = ["JoinedAudio"]


class JoinedAudio:
    """PCM in, segment by segment; encoded bytes out. ``samples`` counts what the listener hears
    (after the crossfades and the tempo). ``skip_header``: leave out the header the format's file
    starts with (`_SkipHeader`), for a stream that continues an earlier one."""

    def __init__(self, fmt: str, speed: float, *, skip_header: bool = False) -> None:
        self._encoder = open_encoder(fmt, SAMPLE_RATE)
        self._joiner = SegmentJoiner(sample_rate=SAMPLE_RATE)
        self._tempo = TempoFilter(speed, SAMPLE_RATE) if speed != 1.0 else None
        self._strip = _SkipHeader(fmt) if skip_header and fmt in ("wav", "mp3") else None
        self.samples = 0

    def push(self, pcm: np.ndarray, *, at_least: int = 0) -> bytes:
        """More of the current segment; `at_least`: a lower bound on its whole length, so that
        what no crossfade can reach goes out at once (`SegmentJoiner.push`)."""
        return self._emit(self._joiner.push(pcm, at_least=at_least))

    def end_segment(self, tail: np.ndarray | None = None, *, fade_out: bool = False) -> bytes:
        """The segment's last samples (`tail`) and its end; `fade_out`: it was cut mid-speech."""
        pcm = self._joiner.push(tail) if tail is not None else np.zeros(0, dtype=np.int16)
        return self._emit(np.concatenate([pcm, self._joiner.end_segment(fade_out=fade_out)]))

    def finish(self) -> bytes:
        """Everything still held, then the encoder's end."""
        out = self._emit(self._joiner.finish())
        if self._tempo is not None:
            out += self._emit(self._tempo.finish(), tempo=False)
        return out + self._out(self._encoder.finish())

    def _emit(self, pcm: np.ndarray, *, tempo: bool = True) -> bytes:
        if tempo and self._tempo is not None and pcm.size:
            pcm = self._tempo.process(pcm)
        if not pcm.size:
            # Never call the encoder with nothing: a WAV encoder would answer with a bare header,
            # which must not go out before there is audio behind it.
            return b""
        self.samples += int(pcm.size)
        return self._out(self._encoder.encode(pcm))

    def _out(self, data: bytes) -> bytes:
        return self._strip(data) if self._strip is not None and data else data


class _SkipHeader:
    """Drops the header a file of `fmt` starts with (a WAV header; the ID3v2 tag of an MP3), for
    the utterances after a WebSocket connection's first: the binary messages of a connection are
    then one stream, which a client can feed to one decoder (a header in the middle would stop
    it). An MP3 utterance still decodes alone; the other compressed formats need nothing
    dropped."""

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._head = b""
        self._skip: int | None = None  # bytes still to drop, once the header's size is known

    def __call__(self, data: bytes) -> bytes:
        if self._skip is None:
            self._head += data
            if len(self._head) < 10:
                return b""
            data, self._head = self._head, b""
            self._skip = self._header_size(data)
        drop = min(self._skip, len(data))
        self._skip -= drop
        return data[drop:]

    def _header_size(self, head: bytes) -> int:
        if self._fmt == "wav":
            return 44
        if head.startswith(b"ID3"):
            # Its size is syncsafe (7 bits a byte) after the 10-byte header; a footer adds 10.
            size = head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9]
            return 10 + size + (10 if head[5] & 0x10 else 0)
        return 0
