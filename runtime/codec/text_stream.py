"""Text that arrives a few words at a time (a language model writing) -> speakable units, each
released as soon as it is complete, by the same boundary rules as `text_split`.

A unit is released:

1. at a sentence end (``.!?…`` and closing quotes or brackets, followed by whitespace; or a blank
   line), the first rule of `split_text`; a sentence longer than `max_chars` is cut by
   `split_text` itself;
2. at a clause boundary (``,;:`` and dashes), once the sentence in progress is long
   (`clause_chars`) or has waited `clause_after_s` seconds, so that a long sentence, or a writer
   that pauses mid-sentence, does not hold the voice back; a clause shorter than
   `min_clause_chars` is kept for the next one;
3. at a word boundary, when the sentence in progress passes `max_chars` without a clause boundary
   (one word longer than that is cut hard, as `split_text` does).

Only text followed by whitespace counts for rules 2 and 3: the last word may still be growing
("Hel" + "lo"). `flush()` releases everything pending, mid-word or not. Units are normalised as in
`split_text` (whitespace runs become one space), and no other character is added or dropped: the
units of a stream, joined, hold exactly the non-whitespace characters that were fed.

Pure and synchronous: the caller passes the time, so the rules are testable without a clock.
"""

from __future__ import annotations

import re

from runtime.codec.text_split import (
    CLAUSE_BREAK,
    DEFAULT_MAX_CHARS,
    SENTENCE_BREAK,
    WORD_BREAK,
    normalise,
    split_text,
)

__all__ = ["CLAUSE_AFTER_S", "CLAUSE_CHARS", "MIN_CLAUSE_CHARS", "TextStream"]

CLAUSE_CHARS = 80  # about 5 s of speech: long enough to sound natural, short enough to start soon
CLAUSE_AFTER_S = 1.0  # a writer silent this long mid-sentence has probably paused (a tool call)
MIN_CLAUSE_CHARS = 16  # "Well," alone would be an odd thing to say

def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - only the last one is wanted
        pass
    return found


def _clause_end(text: str, min_chars: int) -> int:
    """Where `text` can be cut after its last clause boundary, if the part before holds at least
    `min_chars` characters once normalised; else 0. Normalising a longer prefix never gives a
    shorter string, so when the last boundary falls short every earlier one does too."""
    last = _last_match(CLAUSE_BREAK, text)
    if last is not None and len(normalise(text[: last.end()])) >= min_chars:
        return last.end()
    return 0


class TextStream:
    def __init__(
        self,
        max_chars: int = DEFAULT_MAX_CHARS,
        clause_chars: int = CLAUSE_CHARS,
        clause_after_s: float = CLAUSE_AFTER_S,
        min_clause_chars: int = MIN_CLAUSE_CHARS,
    ) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.max_chars = max_chars
        self.clause_chars = clause_chars
        self.clause_after_s = clause_after_s
        self.min_clause_chars = min_clause_chars
        self._buffer = ""
        self._since: float | None = None  # when the pending text started waiting

    @property
    def pending(self) -> int:
        """Characters fed and not released yet."""
        return len(self._buffer)

    def deadline(self) -> float | None:
        """When `poll` may release a clause by the time rule (None: nothing is waiting)."""
        return None if self._since is None else self._since + self.clause_after_s

    def feed(self, text: str, now: float) -> list[str]:
        """Add `text` (any piece: a word, half a word, several sentences); the units it
        completes."""
        self._buffer += text
        if self._since is None and self._buffer.strip():
            self._since = now
        return self._release(now)

    def poll(self, now: float) -> list[str]:
        """The units that time alone has completed (rule 2)."""
        return self._release(now)

    def flush(self) -> list[str]:
        """Everything pending, as units."""
        units = split_text(self._buffer, self.max_chars)
        self._buffer, self._since = "", None
        return units

    def _take(self, end: int, now: float) -> str:
        """Remove and return the first `end` characters of the buffer."""
        head, self._buffer = self._buffer[:end], self._buffer[end:]
        self._since = now if self._buffer.strip() else None
        return head

    def _settled(self) -> int:
        """Length of the buffer's prefix that ends at whitespace (0 if there is none)."""
        last = _last_match(WORD_BREAK, self._buffer)
        return last.end() if last is not None else 0

    def _release(self, now: float) -> list[str]:
        units: list[str] = []
        # 1. Complete sentences.
        last = _last_match(SENTENCE_BREAK, self._buffer)
        if last is not None:
            head = self._take(last.end(), now)
            units += [unit for part in SENTENCE_BREAK.split(head) if part.strip()
                      for unit in split_text(part, self.max_chars)]
        # 2. A clause of a long or slow sentence.
        settled = self._settled()
        size = len(normalise(self._buffer[:settled]))
        overdue = self._since is not None and now - self._since >= self.clause_after_s
        if size and (size >= self.clause_chars or overdue):
            cut = _clause_end(self._buffer[:settled], self.min_clause_chars)
            if cut:
                units += split_text(self._take(cut, now), self.max_chars)
        # 3. A sentence that outgrew max_chars without a clause boundary.
        while True:
            settled = self._settled()
            if len(normalise(self._buffer[:settled])) > self.max_chars:
                first = split_text(self._buffer[:settled], self.max_chars)[0]
                units.append(normalise(self._take(self._raw_end(first), now)))
            elif settled == 0 and len(self._buffer) > self.max_chars:
                units.append(self._take(self.max_chars, now))  # one endless word: cut hard
            else:
                return units

    def _raw_end(self, piece: str) -> int:
        """Index in the raw buffer just after the characters of `piece`, a normalised prefix of
        it (`split_text` only changes whitespace, so counting the others finds the end)."""
        wanted = len(piece.replace(" ", ""))
        seen = 0
        for index, char in enumerate(self._buffer):
            if not char.isspace():
                seen += 1
                if seen == wanted:
                    return index + 1
        return len(self._buffer)
