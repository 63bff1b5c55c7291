"""The Orpheus token protocol: ids, voices, tags and the SNAC frame layout (design section 4).

Everything here is a constant or a pure function so that the parser, the prompt builder and the
decoder agree on one definition.
"""

from __future__ import annotations

from typing import Final

# Llama-3 has 128256 entries; Orpheus appends `<custom_token_N>` as id 128256 + N.
LLAMA_VOCAB_SIZE: Final = 128256
CUSTOM_TOKEN_BASE: Final = LLAMA_VOCAB_SIZE

BOS_ID: Final = 128000
EOT_ID: Final = 128009  # <|eot_id|>
START_OF_SPEECH_ID: Final = 128257  # <custom_token_1>
END_OF_SPEECH_ID: Final = 128258  # <custom_token_2>
START_OF_HUMAN_ID: Final = 128259
END_OF_HUMAN_ID: Final = 128260
START_OF_AI_ID: Final = 128261
END_OF_AI_ID: Final = 128262
AUDIO_BASE_ID: Final = 128266  # <custom_token_10>: code 0 at frame position 0

# The same ids as `<custom_token_N>` numbers, which is how they appear in streamed text.
END_OF_SPEECH_N: Final = END_OF_SPEECH_ID - CUSTOM_TOKEN_BASE  # 2
AUDIO_OFFSET_N: Final = AUDIO_BASE_ID - CUSTOM_TOKEN_BASE  # 10

FRAME_TOKENS: Final = 7
CODEBOOK_SIZE: Final = 4096
# Largest N that still names an audio code: position 6, code 4095.
MAX_AUDIO_N: Final = AUDIO_OFFSET_N + FRAME_TOKENS * CODEBOOK_SIZE - 1

SAMPLE_RATE: Final = 24000
HOP_LENGTH: Final = 512
SAMPLES_PER_FRAME: Final = 4 * HOP_LENGTH  # the finest SNAC level has 4 codes per frame
TOKENS_PER_SECOND: Final = FRAME_TOKENS * SAMPLE_RATE / SAMPLES_PER_FRAME  # 82.03

VOICES: Final = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
EMOTION_TAGS: Final = (
    "<laugh>",
    "<chuckle>",
    "<sigh>",
    "<cough>",
    "<sniffle>",
    "<groan>",
    "<yawn>",
    "<gasp>",
)

# One frame of 7 SNAC codes (each 0..4095) in stream order f0..f6.
Frame = tuple[int, int, int, int, int, int, int]


def audio_token_n(code: int, position: int) -> int:
    """The `<custom_token_N>` number that carries `code` at frame `position`."""
    if not 0 <= code < CODEBOOK_SIZE or not 0 <= position < FRAME_TOKENS:
        raise ValueError(f"code {code} at position {position} is outside the SNAC frame")
    return AUDIO_OFFSET_N + CODEBOOK_SIZE * position + code


def frame_to_token_text(frame: Frame) -> str:
    """The streamed text of one frame (what the backend would send for it)."""
    return "".join(f"<custom_token_{audio_token_n(c, p)}>" for p, c in enumerate(frame))
