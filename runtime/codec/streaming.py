"""Streaming decode: frames in, int16 PCM out as early and as cheaply as possible.

SNAC's decoder is a stack of non-causal convolutions, so a frame decoded alone is wrong at its
edges (design section 5). Two ways to stream, chosen by what the decoder offers:

* Exact (default with a `SnacOnnxDecoder` that has the step graph): the decoder keeps every
  layer's input tail as state, so each frame is decoded once and the output equals the
  whole-utterance decode. Output lags the input by the decoder's lookahead (about 2.3 frames),
  which the final step returns.
* Windowed (any decoder with `decode`): each decode takes a chunk of new frames plus `context`
  frames on each side and keeps only the chunk's samples; cost per frame ~ (chunk + 2 context) /
  chunk; 2 frames of context match a whole decode to ~1e-3 of signal RMS, 3 frames exactly.

Both follow one schedule: the first decode once ``first_chunk + context`` frames are in (3 frames,
21 tokens, by default), then chunks doubling up to `chunk` frames; a push that brings more frames
than due decodes them together (up to `chunk` per call), so bursts cost fewer calls. At the start
and the end the whole-utterance decode sees zero padding, and so do these, so the edges match too.
After `flush()` exactly 2048 samples per pushed frame have been returned.

Fast start (``fast_start=True``): an output sample depends on the codes up to 2.1 frames after it
(measured on the real 24 kHz architecture: with n frames in, samples up to n - 2.1 frames match a
whole decode to float rounding), so exact audio cannot begin before 3 frames. With only 2 frames
(14 tokens) in, those 2 are decoded as if the utterance ended there and the first `HEAD_SAMPLES`
(512, 21 ms) go out at once; near the start they are close to the exact decode, the error growing
towards the unknown right edge. When the exact decode reaches them, it takes over through a
`HEAD_BLEND`-sample (10.7 ms) linear crossfade from the approximate samples, so the boundary adds
no step (a click). Over those 768 samples the output stays within 3% of the signal RMS of the
exact decode (worst of 200 random utterances: 0.8%; bench/decode), and after them it equals the
exact decode to one int16 step. Only those 768 samples of the 2-frame decode are needed: the
decoder's `decode_start` computes just them when the export has a head graph
(`runtime.codec.head_graph`), at 0.39x the cost of a whole 2-frame decode (13 vs 32 ms). That
cost is paid by every stream before its first byte, so it is what several streams starting at
once queue behind: the head is as short as it can be while 21 ms is still worth sending.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from runtime.codec.protocol import SAMPLES_PER_FRAME, Frame
from runtime.codec.snac_onnx import SnacStream
from runtime.codec.tokens import TokenStreamParser

# Defaults chosen with bench/decode: 3 frames (21 tokens) before the first audio, then chunks
# doubling up to 4 frames on the step graph (no context cost, so small steps keep audio flowing
# even from a backend barely faster than real time), or up to 32 frames with 2 frames of context
# each side when windowed (large chunks amortise the context; larger ones run slower per frame).
DEFAULT_FIRST_CHUNK = 1
DEFAULT_CHUNK_EXACT = 4
DEFAULT_CHUNK_WINDOWED = 32
DEFAULT_CONTEXT = 2
# Fast start (module docstring): frames in before the approximate head, the samples it sends, and
# the crossfade into the exact decode. Chosen by measuring the 2-frame decode against the whole
# decode on the real architecture: its error is at most 0.8% of RMS over the first 768 samples,
# 2.2% up to 1024, 3.5% up to 1536, then grows fast (8.5% at 2048, 100% at the edge). The head
# and the crossfade are as short as stays worth sending and a fade rather than a step (10 ms or
# more): every sample they add is one more the head must decode before any stream's first byte.
HEAD_FRAMES = 2
HEAD_SAMPLES = 512
HEAD_BLEND = 256


class FrameDecoder(Protocol):
    def decode(self, frames: Sequence[Frame]) -> np.ndarray: ...


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16, clipped first so that out-of-range samples saturate
    instead of wrapping around."""
    scaled = np.rint(np.asarray(audio, dtype=np.float32) * 32767.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


_EMPTY = np.zeros(0, dtype=np.int16)


class StreamingDecoder:
    """Decode one utterance incrementally; thread-safe per instance.

    With a decoder that has a step graph (`SnacOnnxDecoder.open_stream()`), every frame is decoded
    once and the result equals the whole-utterance decode (to float rounding); otherwise chunks
    are decoded with `context` frames on each side as described in the module docstring. Both
    follow the same schedule: the first decode once ``first_chunk + context`` frames are in (and
    at least what the step graph needs), then chunks doubling up to `chunk` frames. With
    `fast_start`, an approximate head goes out after `HEAD_FRAMES` frames (module docstring).
    """

    def __init__(
        self,
        decoder: FrameDecoder,
        *,
        first_chunk: int = DEFAULT_FIRST_CHUNK,
        chunk: int | None = None,
        context: int = DEFAULT_CONTEXT,
        exact: bool = True,
        fast_start: bool = False,
    ) -> None:
        open_stream = getattr(decoder, "open_stream", None) if exact else None
        self._stream: SnacStream | None = open_stream() if open_stream else None
        if chunk is None:
            chunk = DEFAULT_CHUNK_EXACT if self._stream is not None else DEFAULT_CHUNK_WINDOWED
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
        self._emitted = 0  # frames decoded for good (their samples returned, or in the step graph)
        self._next_chunk = first_chunk
        self._flushed = False
        self._samples = 0  # samples returned so far
        self._head_pending = fast_start  # the head may still be sent (nothing decoded yet)
        self._decoded = 0  # samples the exact (or windowed) decode has produced
        self._skip = 0  # its first samples, already sent as the head
        self._head_tail = np.zeros(0, dtype=np.float32)  # the head's samples to crossfade from

    @property
    def exact(self) -> bool:
        """True when decoding on the step graph (no context frames, no approximation)."""
        return self._stream is not None

    @property
    def frames_pushed(self) -> int:
        return self._total

    @property
    def frames_emitted(self) -> int:
        """Frames handed to the decoder for good (the step graph returns their audio with a
        lag of about 2.3 frames; `samples_emitted` counts what was returned)."""
        return self._emitted

    @property
    def samples_emitted(self) -> int:
        return self._samples

    def push(self, frames: Sequence[Frame]) -> np.ndarray:
        """Add frames; return the int16 samples that are final now (maybe none)."""
        with self._lock:
            if self._flushed:
                raise RuntimeError("push() after flush()")
            self._frames.extend(frames)
            self._total += len(frames)
            pieces = []
            if self._head_pending and self._due() > 0:
                self._head_pending = False  # the exact decode begins now: no head
            elif self._head_pending and self._total >= HEAD_FRAMES:
                self._head_pending = False
                pieces.append(self._head())
            while (count := self._due()) > 0:
                pieces.append(self._decode(count, final=False))
                self._next_chunk = min(self._next_chunk * 2, self.chunk)
            return np.concatenate(pieces) if pieces else _EMPTY

    def flush(self) -> np.ndarray:
        """Decode every frame not yet returned (the end needs no right context)."""
        with self._lock:
            if self._flushed:
                return _EMPTY
            self._flushed = True
            pieces = []
            while self._total - self._emitted > (size := self._step_limit()):
                pieces.append(self._decode(size, final=False))
            if self._stream is not None or self._emitted < self._total:
                pieces.append(self._decode(self._total - self._emitted, final=True))
            return np.concatenate(pieces) if pieces else _EMPTY

    def _head(self) -> np.ndarray:
        """The first frames decoded as if the utterance ended there: send the start, keep the
        next samples to crossfade from."""
        frames, span = self._frames[:HEAD_FRAMES], HEAD_SAMPLES + HEAD_BLEND
        decode_start = getattr(self._decoder, "decode_start", None)
        if decode_start is not None:  # only the samples used (`SnacOnnxDecoder` with a head graph)
            approx = decode_start(frames, span)
        else:
            approx = self._decoder.decode(frames)[:span]
        approx = np.asarray(approx, dtype=np.float32)
        self._skip = HEAD_SAMPLES
        self._head_tail = approx[HEAD_SAMPLES : HEAD_SAMPLES + HEAD_BLEND]
        head = to_int16(approx[:HEAD_SAMPLES])
        self._samples += head.shape[0]
        return head

    def _after_head(self, audio: np.ndarray) -> np.ndarray:
        """The exact decode's new samples, less those the head already sent, crossfaded in from
        the head over the next `HEAD_BLEND` samples."""
        start = self._decoded
        self._decoded += audio.shape[0]
        if self._skip == 0 or start >= self._skip + self._head_tail.shape[0]:
            return audio
        audio = audio[max(0, self._skip - start) :]
        offset = max(0, start - self._skip)  # where this piece starts inside the blend
        count = min(audio.shape[0], self._head_tail.shape[0] - offset)
        if count > 0:
            weight = (np.arange(offset, offset + count, dtype=np.float32) + 0.5) / HEAD_BLEND
            blended = self._head_tail[offset : offset + count] * (1 - weight)
            audio = np.concatenate([blended + audio[:count] * weight, audio[count:]])
        return audio

    def _step_limit(self) -> int:
        """Most frames per decode: `chunk`, except that the step graph's first step may need
        more."""
        if self._stream is not None and self._emitted == 0:
            return max(self.chunk, self._stream.first_frames)
        return self.chunk

    def _due(self) -> int:
        """Frames to decode now under the schedule (0: wait for more)."""
        waiting = self._total - self._emitted
        if self._stream is not None:
            if self._emitted == 0:
                need = max(self.first_chunk + self.context, self._stream.first_frames)
                return min(waiting, max(self.chunk, need)) if waiting >= need else 0
            ready = waiting
        else:
            ready = waiting - self.context
        return min(ready, max(self.chunk, self._next_chunk)) if ready >= self._next_chunk else 0

    def _decode(self, count: int, *, final: bool) -> np.ndarray:
        start, end = self._emitted, self._emitted + count
        if self._stream is not None:
            audio = self._stream.step(
                self._frames[start - self._base : end - self._base], final=final
            )
            keep_from = end
        else:
            lo = max(0, start - self.context)
            hi = min(self._total, end + self.context)
            window = self._frames[lo - self._base : hi - self._base]
            decoded = self._decoder.decode(window)
            audio = decoded[(start - lo) * SAMPLES_PER_FRAME : (end - lo) * SAMPLES_PER_FRAME]
            keep_from = end - self.context  # the next chunk's left context
        self._emitted = end
        # Frames before `keep_from` are never read again.
        drop = max(0, keep_from) - self._base
        if drop > 0:
            del self._frames[:drop]
            self._base += drop
        audio = self._after_head(audio)
        self._samples += audio.shape[0]
        return to_int16(audio)


class AudioStream:
    """Backend text chunks in, int16 PCM out: a `TokenStreamParser` feeding a `StreamingDecoder`.

    When the end-of-speech token arrives, the remaining audio is flushed by that same `feed` call,
    so the caller gets the tail without waiting for the HTTP stream to close. Thread-safe per
    instance.
    """

    def __init__(self, decoder: FrameDecoder, **opts: Any) -> None:
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
        return self.decoder.samples_emitted

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
