"""Prompts for the Orpheus model, in the two forms a backend may want.

The text form suits a GGUF served by llama.cpp, whose chat-less completions endpoint tokenizes the
string itself; the id form is the canonical one from the model card, for servers that accept ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runtime.codec.protocol import (
    BOS_ID,
    END_OF_HUMAN_ID,
    EOT_ID,
    START_OF_AI_ID,
    START_OF_HUMAN_ID,
    START_OF_SPEECH_ID,
    VOICES,
)


class UnknownVoiceError(ValueError):
    """The requested voice is not one the model (or the deployment's extra list) knows."""

    def __init__(self, voice: str, valid: Iterable[str]) -> None:
        self.voice = voice
        self.valid = tuple(valid)
        super().__init__(f"unknown voice {voice!r}; valid voices: {', '.join(self.valid)}")


def validate_voice(voice: str, extra_voices: Iterable[str] = ()) -> str:
    """Return the normalised voice name or raise `UnknownVoiceError` listing the valid ones.

    Names are compared case-insensitively because OpenAI clients send voices like "Tara".
    """
    valid = list(VOICES)
    for extra in extra_voices:
        name = extra.strip().lower()
        if name and name not in valid:
            valid.append(name)
    name = voice.strip().lower()
    if name not in valid:
        raise UnknownVoiceError(voice, valid)
    return name


# How Orpheus fine-tunes read a request; a model trained without a speaker prefix uses "{text}".
DEFAULT_PROMPT_TEMPLATE = "{voice}: {text}"


def build_text_prompt(text: str, voice: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The community GGUF prompt; emotion tags such as `<laugh>` pass through untouched.

    ``template`` is the model's own format (its ``{voice}`` and ``{text}`` are filled in; the
    text is inserted last, so braces in it are never read as fields).
    """
    return f"<|audio|>{template.replace('{voice}', voice).replace('{text}', text)}<|eot_id|>"


def build_token_prompt(text: str, voice: str, tokenize: Callable[[str], list[int]]) -> list[int]:
    """The canonical id prompt: human turn, the text (BOS included), then start of AI speech.

    `tokenize` is the Llama-3 tokenizer of the serving backend; a BOS is added when it leaves it
    out, so both `add_special_tokens` conventions give the same prompt.
    """
    ids = list(tokenize(f"{voice}: {text}"))
    if not ids or ids[0] != BOS_ID:
        ids.insert(0, BOS_ID)
    return [START_OF_HUMAN_ID, *ids, EOT_ID, END_OF_HUMAN_ID, START_OF_AI_ID, START_OF_SPEECH_ID]
