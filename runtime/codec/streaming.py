"""Chunked streaming decode: frames in, int16 PCM out as early and as cheaply as possible.

SNAC's decoder is a stack of non-causal convolutions, so a frame decoded alone is wrong at its
edges. Each decode therefore takes a chunk of new frames plus `context` frames on each side and
keeps only the chunk's samples (design section 5). Chunk sizes follow a schedule: the first chunk is
small so that audio starts after ``first_chunk + context`` frames, then sizes double up to `chunk`,
which amortises the context overhead (cost per frame ~ (chunk + 2 context) / chunk). At the start of
the utterance there is no left context to take and at the end `flush()` decodes the remaining frames
with no right context: in both cases the whole-utterance decode sees the same zero padding, so the
edges match it too. After `flush()` exactly 2048 samples per pushed frame have been returned.

When a push brings more frames than the schedule needs (a backend faster than real time), all ready
frames are decoded together, up to `chunk` per call, so bursts cost fewer calls.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from runtime.codec.protocol import SAMPLES_PER_FRAME, Frame
from runtime.codec.tokens import TokenStreamParser

# Defaults chosen with bench/decode (see its report): 3 frames (21 tokens) before the first audio,
# then chunks doubling up to 32 frames, with 2 frames of context each side.
DEFAULT_FIRST_CHUNK = 1
DEFAULT_CHUNK = 32
DEFAULT_CONTEXT = 2


class FrameDecoder(Protocol):
    def decode(self, frames: Sequence[Frame]) -> np.ndarray: ...


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16, clipped first so that out-of-range samples saturate
    instead of wrapping around."""
    scaled = np.rint(np.asarray(audio, dtype=np.float32) * 32767.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


_EMPTY = np.zeros(0, dtype=np.int16)


class StreamingDecoder:
    """Decode one utterance incrementally; thread-safe per instance."""

    def __init__(
        self,
        decoder: FrameDecoder,
        *,
        first_chunk: int = DEFAULT_FIRST_CHUNK,
        chunk: int = DEFAULT_CHUNK,
        context: int = DEFAULT_CONTEXT,
    ) -> None:
        if first_chunk < 1 or chunk < first_chunk or context < 0:
            raise ValueError("need 1 <= first_chunk <= chunk and context >= 0")
        self._decoder = decoder
        self.first_chunk = first_chunk
        self.chunk = chunk
        self.context = context
        self._lock = threading.Lock()
        self._frames: list[Frame] = []  # frames from index `_base` on (older ones are not needed)
        self._base = 0
        self._total = 0  # frames pushed
        self._emitted = 0  # frames whose samples have been returned
        self._next_chunk = first_chunk
        self._flushed = False

    @property
    def frames_pushed(self) -> int:
        return self._total

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def push(self, frames: Sequence[Frame]) -> np.ndarray:
        """Add frames; return the int16 samples that are final now (maybe none)."""
        with self._lock:
            if self._flushed:
                raise RuntimeError("push() after flush()")
            self._frames.extend(frames)
            self._total += len(frames)
            pieces = []
            while True:
                ready = self._total - self.context - self._emitted
                if ready < self._next_chunk:
                    break
                count = min(ready, max(self.chunk, self._next_chunk))
                pieces.append(self._decode(self._emitted, self._emitted + count))
                self._next_chunk = min(self._next_chunk * 2, self.chunk)
            return np.concatenate(pieces) if pieces else _EMPTY

    def flush(self) -> np.ndarray:
        """Decode every frame not yet returned (the end needs no right context)."""
        with self._lock:
            self._flushed = True
            pieces = []
            while self._emitted < self._total:
                count = min(self._total - self._emitted, self.chunk)
                pieces.append(self._decode(self._emitted, self._emitted + count))
            return np.concatenate(pieces) if pieces else _EMPTY

    def _decode(self, start: int, end: int) -> np.ndarray:
        lo = max(0, start - self.context)
        hi = min(self._total, end + self.context)
        window = self._frames[lo - self._base : hi - self._base]
        audio = self._decoder.decode(window)
        keep = audio[(start - lo) * SAMPLES_PER_FRAME : (end - lo) * SAMPLES_PER_FRAME]
        self._emitted = end
        # Frames before the next chunk's left context are never read again.
        drop = max(0, end - self.context) - self._base
        if drop > 0:
            del self._frames[:drop]
            self._base += drop
        return to_int16(keep)


class AudioStream:
    """Backend text chunks in, int16 PCM out: a `TokenStreamParser` feeding a `StreamingDecoder`.

    When the end-of-speech token arrives, the remaining audio is flushed by that same `feed` call,
    so the caller gets the tail without waiting for the HTTP stream to close. Thread-safe per
    instance.
    """

    def __init__(self, decoder: FrameDecoder, **opts: int) -> None:
        self.parser = TokenStreamParser()
        self.decoder = StreamingDecoder(decoder, **opts)
        self._lock = threading.Lock()
        self._finished = False

    @property
    def frames(self) -> int:
        return self.decoder.frames_pushed

    @property
    def ended(self) -> bool:
        return self.parser.ended

    @property
    def samples_emitted(self) -> int:
        return self.decoder.frames_emitted * SAMPLES_PER_FRAME

    def feed(self, text_chunk: str) -> np.ndarray:
        with self._lock:
            if self._finished:
                return _EMPTY
            pcm = self.decoder.push(self.parser.feed(text_chunk))
            if self.parser.ended:
                pcm = np.concatenate([pcm, self._finish_locked()])
            return pcm

    def finish(self) -> np.ndarray:
        """The backend stream closed (or the caller gives up): return the rest of the audio."""
        with self._lock:
            return self._finish_locked()

    def _finish_locked(self) -> np.ndarray:
        if self._finished:
            return _EMPTY
        self._finished = True
        pcm = self.decoder.push(self.parser.finish())
        return np.concatenate([pcm, self.decoder.flush()])
