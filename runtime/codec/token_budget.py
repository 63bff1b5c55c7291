"""How many tokens a text segment may generate, and splitting text so every segment fits.

A backend request needs a `max_tokens`. A fixed number either cuts slow speech off (2000 tokens are
24 s of audio, and 240 characters spoken slowly take longer) or lets a model that does not stop
run for minutes. So each segment asks for what its text can take at a generous, slow speech rate:

* Orpheus generates 82.03 tokens per second of audio (7 tokens per 2048-sample frame at 24 kHz);
* typical English narration runs about 14-15 characters per second (150 words a minute); the
  budget assumes 5, three times slower, which covers deliberate speech and the pauses that
  punctuation and ellipses bring;
* a digit counts as 5 characters (numbers are read out: "2024" is "twenty twenty-four");
* an emotion tag (``<laugh>``, ``<sigh>`` ...) adds 2 seconds instead of its characters;
* 3 seconds more cover the silence and breath around the speech, and a frame for control tokens.

The backend's slot bounds what one request may generate (``ORPHEUS_MAX_TOKENS``): `plan_segments`
splits text more finely where a segment's budget would exceed it, so that a long input is never
cut off by the limit (a segment that still reaches it is reported by the caller).
"""

from __future__ import annotations

import math
import re

from runtime.codec.protocol import EMOTION_TAGS, FRAME_TOKENS, TOKENS_PER_SECOND
from runtime.codec.text_split import split_text

__all__ = ["MIN_SEGMENT_CHARS", "plan_segments", "token_budget"]

SLOW_CHARS_PER_SECOND = 5.0
CHARS_PER_DIGIT = 5
SECONDS_PER_TAG = 2.0
SECONDS_AROUND = 3.0
# Segments are not split below this (a sentence fragment shorter than this speaks worse than a
# segment that may reach the limit).
MIN_SEGMENT_CHARS = 20

_TAG = re.compile("|".join(re.escape(tag) for tag in EMOTION_TAGS))


def token_budget(text: str) -> int:
    """Tokens `text` may take when spoken slowly: whole frames, plus one frame of slack."""
    tags = len(_TAG.findall(text))
    spoken = _TAG.sub("", text)
    digits = sum(ch.isdigit() for ch in spoken)
    chars = len(spoken) + (CHARS_PER_DIGIT - 1) * digits
    seconds = SECONDS_AROUND + chars / SLOW_CHARS_PER_SECOND + SECONDS_PER_TAG * tags
    return (math.ceil(seconds * TOKENS_PER_SECOND / FRAME_TOKENS) + 1) * FRAME_TOKENS


def plan_segments(text: str, max_chars: int, max_tokens: int) -> list[str]:
    """`split_text(text, max_chars)`, with each piece whose budget exceeds `max_tokens` split again
    (at the same kind of boundaries, down to `MIN_SEGMENT_CHARS`). The text is kept as
    `split_text` keeps it: no character added or dropped besides whitespace runs."""
    out: list[str] = []
    for piece in split_text(text, max_chars):
        out += _fit(piece, max_tokens)
    return out


def _fit(piece: str, max_tokens: int) -> list[str]:
    budget = token_budget(piece)
    if budget <= max_tokens or len(piece) <= MIN_SEGMENT_CHARS:
        return [piece]
    # The budget is a fixed part plus a part that grows with the text: shrink the text by the
    # ratio of the growing parts. Each round splits strictly shorter, so it ends.
    fixed = token_budget("")
    target = len(piece) * max(0, max_tokens - fixed) // (budget - fixed)
    target = max(MIN_SEGMENT_CHARS, min(len(piece) - 1, target))
    return [part for sub in split_text(piece, target) for part in _fit(sub, max_tokens)]
