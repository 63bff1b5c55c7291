"""Streaming parser: server-sent text chunks in, validated SNAC frames out.

The backend streams text such as ``<custom_token_4106><custom_token_8202>`` in arbitrary pieces;
one chunk may hold several tokens, half a token, or other text. Token N carries code
``c = N - 10 - 4096 * p`` at frame position ``p``. Unlike a running token count, the number itself
says which position it was generated for (``p = (N - 10) // 4096``), so the parser tracks positions
from the stream and never guesses.

Resynchronisation rule (why no good frame is lost):

* A number that cannot be an audio code at all (a control number other than end of
  speech, which is ignored, or ``N > 10 + 7 * 4096 - 1``) is counted in ``invalid_tokens`` and
  skipped; the frame being collected is kept, so a stray inserted token costs nothing.
* A valid audio token whose position is not the next one expected means a token was lost or the
  model slipped: the incomplete frame is dropped (its tokens are counted in ``dropped_tokens``) and
  collection restarts at the next position-0 token (this one, if it is position 0).
* A frame is emitted the moment its 7th token arrives, so every complete, in-order run of positions
  0..6 becomes a frame; ``finish()`` only has to discard an incomplete tail.

Text is scanned as one logical string whatever the chunking: a possible token prefix at the end of
a chunk (``<custom_to``, ``<custom_token_12``) is held until the next chunk decides it, so any
split of the same text yields the same frames and counters.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from runtime.codec.protocol import (
    AUDIO_OFFSET_N,
    CODEBOOK_SIZE,
    CUSTOM_TOKEN_BASE,
    END_OF_AI_ID,
    END_OF_SPEECH_N,
    FRAME_TOKENS,
    MAX_AUDIO_N,
    Frame,
)

_PREFIX = "<custom_token_"
_MAX_DIGITS = 9  # more digits than any real id; bounds what a garbage stream can make us hold
_TOKEN = re.compile(f"<custom_token_([0-9]{{1,{_MAX_DIGITS}}})>")
_END_OF_AI_N = END_OF_AI_ID - CUSTOM_TOKEN_BASE


def _could_become_token(tail: str) -> bool:
    """True when `tail` (starting at a '<') may still grow into a complete token."""
    if len(tail) <= len(_PREFIX):
        return _PREFIX.startswith(tail)
    digits = tail[len(_PREFIX) :]
    return (
        tail.startswith(_PREFIX)
        and len(digits) <= _MAX_DIGITS
        and all("0" <= ch <= "9" for ch in digits)
    )


class TokenStreamParser:
    """Incremental Orpheus token parser; thread-safe per instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = ""  # a possible token prefix carried to the next chunk
        self._codes: list[int] = []  # the frame being collected, positions 0..len-1
        self._finished = False
        self.ended = False
        self.tokens_seen = 0
        self.invalid_tokens = 0
        self.dropped_tokens = 0
        self.frames_emitted = 0

    def feed(self, chunk: str) -> list[Frame]:
        """Parse one text chunk; return the frames it completed (possibly none)."""
        with self._lock:
            if self.ended or self._finished:
                return []
            text = self._pending + chunk
            frames: list[Frame] = []
            last = 0
            for match in _TOKEN.finditer(text):
                last = match.end()
                self._on_token(int(match.group(1)), frames)
                if self.ended:
                    self._pending = ""
                    return frames
            tail = text[last:]
            cut = tail.rfind("<")
            self._pending = tail[cut:] if cut >= 0 and _could_become_token(tail[cut:]) else ""
            return frames

    def feed_ids(self, ids: Iterable[int]) -> list[Frame]:
        """Parse token ids (servers that stream ids rather than text); text ids are skipped."""
        with self._lock:
            frames: list[Frame] = []
            if self.ended or self._finished:
                return frames
            for token_id in ids:
                if token_id >= CUSTOM_TOKEN_BASE:
                    self._on_token(token_id - CUSTOM_TOKEN_BASE, frames)
                    if self.ended:
                        break
            return frames

    def finish(self) -> list[Frame]:
        """The stream is over: discard an incomplete frame and return what is left (always whole
        frames; as frames are emitted on their 7th token, this is empty in practice)."""
        with self._lock:
            if not self._finished:
                self._finished = True
                if len(self._pending) > len(_PREFIX):
                    self.invalid_tokens += 1  # a token cut off by the end of the stream
                self._pending = ""
                self._drop_partial()
            return []

    @property
    def partial_tokens(self) -> int:
        """Tokens of the frame being collected (what a `finish()` now would drop)."""
        return len(self._codes)

    def _drop_partial(self) -> None:
        self.dropped_tokens += len(self._codes)
        self._codes = []

    def _on_token(self, n: int, frames: list[Frame]) -> None:
        self.tokens_seen += 1
        if n in (END_OF_SPEECH_N, _END_OF_AI_N):
            self.ended = True
            self._drop_partial()
            return
        if n < AUDIO_OFFSET_N:
            return  # start-of-speech and the other control tokens carry no audio
        if n > MAX_AUDIO_N:
            self.invalid_tokens += 1
            return
        position, code = divmod(n - AUDIO_OFFSET_N, CODEBOOK_SIZE)
        if position != len(self._codes):
            self._drop_partial()
            if position != 0:
                self.dropped_tokens += 1  # waiting for the next frame start
                return
        self._codes.append(code)
        if len(self._codes) == FRAME_TOKENS:
            frames.append(tuple(self._codes))  # type: ignore[arg-type]
            self.frames_emitted += 1
            self._codes = []
