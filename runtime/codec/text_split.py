"""Long input: split into prompts the model handles well, and join their audio with a crossfade.

Orpheus degrades on long prompts (it drifts, rushes, or stops early), so long text is cut at
sentence boundaries into pieces of at most `max_chars`, generated in order, and the pieces' audio is
joined with a short linear crossfade to hide the seams.

Splitting rules, in order of preference: sentence ends (``.!?…`` possibly followed by a closing
quote or bracket, then whitespace) and blank lines; then clause punctuation (``,;:`` and
dashes); then whitespace; a single word longer than `max_chars` is cut hard.
Consecutive short units are packed into one piece while it fits. Whitespace runs inside a piece
become one space; no other character is ever added or dropped, so
``"".join(text.split()) == "".join("".join(p.split()) for p in pieces)``.
"""

from __future__ import annotations

import re
import threading

import numpy as np

DEFAULT_MAX_CHARS = 240  # about 15 s of speech: well inside what the model keeps steady

_LEVELS = (
    # sentence ends, optionally followed by a closing quote or bracket; blank lines
    re.compile("(?<=[.!?\u2026])\\s+|(?<=[.!?\u2026][\"')\\]\u201d\u2019])\\s+|\n\\s*\n"),
    # clause punctuation and dashes (em and en)
    re.compile("(?<=[,;:\u2014\u2013])\\s+|\\s+(?=[\u2014\u2013])"),
    re.compile(r"\s+"),
)


# The same rules by name, for the incremental splitter of streamed text (text_stream.py).
SENTENCE_BREAK, CLAUSE_BREAK, WORD_BREAK = _LEVELS


def normalise(text: str) -> str:
    """Whitespace runs to one space, ends stripped: how every piece (and streamed unit) reads."""
    return " ".join(text.split())


def _units(text: str, max_chars: int, level: int) -> list[str]:
    """Units no longer than max_chars, cut at the coarsest boundary kind that achieves it."""
    if len(normalise(text)) <= max_chars:
        unit = normalise(text)
        return [unit] if unit else []
    if level == len(_LEVELS):
        word = normalise(text)  # one word (no whitespace left): cut it hard
        return [word[i : i + max_chars] for i in range(0, len(word), max_chars)]
    out: list[str] = []
    for part in _LEVELS[level].split(text):
        if part and part.strip():
            out += _pack(_units(part, max_chars, level + 1), max_chars)
    return out


def _pack(units: list[str], max_chars: int) -> list[str]:
    pieces: list[str] = []
    for unit in units:
        if pieces and len(pieces[-1]) + 1 + len(unit) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {unit}"
        else:
            pieces.append(unit)
    return pieces


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split `text` into stripped, non-empty pieces of at most `max_chars` characters."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if len(normalise(text)) <= max_chars:
        return _units(text, max_chars, 0)
    return _pack(
        [u for part in _LEVELS[0].split(text) if part for u in _units(part, max_chars, 1)],
        max_chars,
    )


def _mix(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Linear crossfade of two equally long int16 pieces, clipped back to int16."""
    n = tail.shape[0]
    weight = (np.arange(n, dtype=np.float32) + 0.5) / n
    mixed = tail.astype(np.float32) * (1.0 - weight) + head.astype(np.float32) * weight
    return np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)


def join_overlap(crossfade: int, left_len: int, right_len: int) -> int:
    """Samples shared by two consecutive non-empty segments: never more than half of either, so a
    segment's head and tail crossfades cannot overlap."""
    return min(crossfade, left_len // 2, right_len // 2)


def crossfade_join(segments: list[np.ndarray], crossfade: int) -> np.ndarray:
    """Whole-buffer reference of `SegmentJoiner` (same output, all at once). Empty segments are
    skipped; total length = sum(len) - sum(join_overlap(...)) over consecutive non-empty
    segments."""
    out = np.zeros(0, dtype=np.int16)
    previous = 0
    for segment in segments:
        if segment.size == 0:
            continue
        n = join_overlap(crossfade, previous, segment.size) if previous else 0
        if n:
            out = np.concatenate([out[:-n], _mix(out[-n:], segment[:n]), segment[n:]])
        else:
            out = np.concatenate([out, segment])
        previous = segment.size
    return out


class SegmentJoiner:
    """Streams the audio of consecutive segments with a crossfade at each join.

    Call `push` with each segment's PCM as it is decoded, `end_segment` after each segment and
    `finish` at the end. Output equals `crossfade_join` of the segments: with crossfade X samples
    (``crossfade_ms`` at the sample rate), each join between non-empty segments of lengths a and b
    removes ``min(X, a // 2, b // 2)`` samples, i.e. exactly X per join for Orpheus segments (at
    least one 2048-sample frame) when X <= 1024. To do this it holds back the last X samples of the
    current segment (fewer once the segment is known to go on: `push`'s `at_least`), and the first
    2X samples of a segment until the join with the previous one is mixed.
    """

    def __init__(self, crossfade_ms: float = 20.0, sample_rate: int = 24000) -> None:
        self.crossfade = round(crossfade_ms * sample_rate / 1000)
        self._lock = threading.Lock()
        self._prev: np.ndarray | None = None  # unemitted end of the previous non-empty segment
        self._prev_len = 0
        self._cur = np.zeros(0, dtype=np.int16)  # unemitted samples of the current segment
        self._cur_len = 0
        self._joined = False  # the join between the previous and current segment is done

    def push(self, pcm: np.ndarray, *, at_least: int = 0) -> np.ndarray:
        """Add the current segment's next samples; return what is final. `at_least`: a lower
        bound on the segment's whole length (a `StreamingDecoder` returns 2048 samples per frame
        pushed): the samples that no join can reach then go out at once, rather than the last X
        received waiting for more audio."""
        with self._lock:
            pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
            self._cur = np.concatenate([self._cur, pcm])
            self._cur_len += pcm.size
            out = []
            if self._prev is not None and not self._joined:
                if self._cur_len < 2 * self.crossfade:
                    return np.zeros(0, dtype=np.int16)  # the overlap is not known yet
                out.append(self._join(join_overlap(self.crossfade, self._prev_len, self._cur_len)))
            # A join mixes at most X samples of this segment's end; the end is at or after both
            # what has arrived and `at_least`.
            end = min(self._cur_len, max(self._cur_len, at_least) - self.crossfade)
            release = max(0, end - (self._cur_len - self._cur.size))
            out.append(self._cur[:release])
            self._cur = self._cur[release:]
            return np.concatenate(out)

    def end_segment(self, *, fade_out: bool = False) -> np.ndarray:
        """The current segment is complete. `fade_out`: it stops mid-sound (cut short), so its
        held tail fades to silence over the crossfade length before any join."""
        with self._lock:
            if fade_out and self._cur.size:
                self._cur = _mix(self._cur, np.zeros_like(self._cur))  # a join into silence
            return self._end_segment()

    def finish(self) -> np.ndarray:
        with self._lock:
            out = self._end_segment()
            if self._prev is not None:
                out = np.concatenate([out, self._prev])
            self._prev, self._prev_len = None, 0
            return out

    def _join(self, n: int) -> np.ndarray:
        assert self._prev is not None
        cut = self._prev.size - n
        mixed = [self._prev[:cut], _mix(self._prev[cut:], self._cur[:n])]
        self._cur = self._cur[n:]
        self._prev = None
        self._joined = True
        return np.concatenate(mixed)

    def _end_segment(self) -> np.ndarray:
        out = np.zeros(0, dtype=np.int16)
        if self._cur_len == 0:
            return out  # an empty segment leaves the previous tail waiting for the next one
        if self._prev is not None and not self._joined:
            out = self._join(join_overlap(self.crossfade, self._prev_len, self._cur_len))
        self._prev, self._prev_len = self._cur, self._cur_len
        self._cur, self._cur_len, self._joined = np.zeros(0, dtype=np.int16), 0, False
        return out
