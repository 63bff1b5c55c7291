"""Prompt building and voice validation."""

from __future__ import annotations

import pytest

from runtime.codec import (
    EMOTION_TAGS,
    VOICES,
    UnknownVoiceError,
    build_text_prompt,
    build_token_prompt,
    validate_voice,
)


def fake_tokenize(text: str) -> list[int]:
    # A stand-in tokenizer: one id per character, with BOS as Llama-3's tokenizer adds it.
    return [128000, *(ord(c) for c in text)]


def test_text_prompt_is_the_community_gguf_form_with_tags_passed_through():
    assert (
        build_text_prompt("Hi <laugh> there", "tara") == "<|audio|>tara: Hi <laugh> there<|eot_id|>"
    )


def test_token_prompt_wraps_the_text_in_the_canonical_markers():
    ids = build_token_prompt("Hi", "leo", fake_tokenize)
    assert ids == [128259, 128000, *(ord(c) for c in "leo: Hi"), 128009, 128260, 128261, 128257]
    # A tokenizer that omits BOS gets it added, so both conventions give the same prompt.
    assert build_token_prompt("Hi", "leo", lambda t: fake_tokenize(t)[1:]) == ids


def test_validate_voice_accepts_known_and_extra_voices_case_insensitively():
    assert validate_voice("Tara") == "tara"
    assert validate_voice("custom", extra_voices=["Custom"]) == "custom"
    with pytest.raises(UnknownVoiceError) as info:
        validate_voice("alloy")
    assert isinstance(info.value, ValueError)
    for voice in VOICES:
        assert voice in str(info.value)


def test_known_voices_and_tags():
    assert VOICES == ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
    assert "<laugh>" in EMOTION_TAGS and len(EMOTION_TAGS) == 8
