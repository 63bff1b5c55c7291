"""The model manifest: which GGUFs the deployment serves, with their voices and languages.

One model is the default: the English Orpheus fine-tune with its 8 voices, named ``orpheus``,
recorded by ``orpheus upload-model PATH`` as today (``model_object`` in the cloud state). Further
models (a language's research release, a user's own fine-tune) are registered with
``orpheus upload-model PATH --voices a,b,c [--language fr]`` and kept in the same state file
(``_orpheus/state.json`` in the model bucket), so every machine agrees on the manifest.

Everything here is pure: the manifest is a function of the settings and the state, the service
specs render it (so ``plan`` can diff it), and the checks raise :class:`InputError` with what to
do, before anything is uploaded or deployed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import InputError
from orpheus_deploy.gguf_meta import GgufDims

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.state import DeploymentState

DEFAULT_MODEL_NAME = "orpheus"
# The English model's voices: the same list as runtime/codec/protocol.py VOICES (the CLI does not
# import the codec, which needs numpy; tests/cli/test_models.py keeps the two equal).
STANDARD_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
DEFAULT_LANGUAGE = "en"
# How the Orpheus fine-tunes were trained to read a request: "{voice}: {text}". A single-speaker
# fine-tune trained without a name prefix uses "{text}".
DEFAULT_PROMPT = "{voice}: {text}"
# Model names the frontend already answers to (runtime/frontend/speech.py MODEL_ALIASES): an
# extra model with one of these names would make a request's `model` ambiguous.
RESERVED_NAMES = frozenset({DEFAULT_MODEL_NAME, "tts-1", "tts-1-hd", "gpt-4o-mini-tts",
                            "gpt-4o-mini-tts-2025-12-15"})

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
_VOICE_PUNCTUATION = frozenset("-_.")
_MAX_VOICE_CHARS = 40


@dataclass(frozen=True)
class ModelEntry:
    """One served GGUF. ``size``/``dims`` are None for a model recorded before they were kept."""

    name: str
    object: str
    language: str = DEFAULT_LANGUAGE
    voices: tuple[str, ...] = STANDARD_VOICES
    prompt: str = DEFAULT_PROMPT
    size: int | None = None
    crc32c: str | None = None
    dims: GgufDims | None = None
    default: bool = False

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "object": self.object, "language": self.language,
                "voices": list(self.voices), "prompt": self.prompt, "size": self.size,
                "crc32c": self.crc32c, "dims": self.dims.as_dict() if self.dims else None}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ModelEntry | None:
        """An entry of ``state.models``, or None when it is unreadable (a hand-edited file)."""
        try:
            dims = data.get("dims")
            return cls(name=str(data["name"]), object=str(data["object"]),
                       language=str(data.get("language") or DEFAULT_LANGUAGE),
                       voices=tuple(str(v) for v in data["voices"]),
                       prompt=str(data.get("prompt") or DEFAULT_PROMPT),
                       size=int(data["size"]) if data.get("size") is not None else None,
                       crc32c=data.get("crc32c"),
                       dims=GgufDims.from_dict(dims) if isinstance(dims, dict) else None)
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        size = f"{self.size / 1e9:.2f} GB" if self.size else "size unknown"
        return f"{self.language}, voices {', '.join(self.voices)}, {self.object} ({size})"


# -- validation --------------------------------------------------------------------------------
def model_name_from_object(object_name: str) -> str:
    """``Orpheus-3b-French-FT-Q4_K_M.gguf`` -> ``orpheus-3b-french-ft-q4_k_m``."""
    stem = object_name.rsplit("/", 1)[-1]
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    return name[:63] or "model"


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InputError(f"Invalid model name {name!r}",
                         "use 1-63 lowercase letters, digits, '.', '_' or '-' (--model-name)")
    if name in RESERVED_NAMES:
        raise InputError(f"The model name {name!r} is reserved (the default model and the "
                         "OpenAI model names answer to it)", "choose another --model-name")
    return name


def validate_voices(raw: str | Iterable[str]) -> tuple[str, ...]:
    """Voice names, lowercased as the frontend compares them; letters (any script), digits and
    ``- _ .`` only, because the prompt is ``{voice}: {text}`` and a list is comma-separated."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    voices: list[str] = []
    for item in items:
        voice = item.strip().lower()
        if not voice:
            continue
        ok = len(voice) <= _MAX_VOICE_CHARS and all(
            unicodedata.category(c)[0] in "LMN" or c in _VOICE_PUNCTUATION for c in voice)
        if not ok:
            raise InputError(f"Invalid voice name {item.strip()!r}",
                             f"use up to {_MAX_VOICE_CHARS} letters, digits, '-', '_' or '.'")
        if voice in voices:
            raise InputError(f"The voice {voice!r} is listed twice", "list each voice once")
        voices.append(voice)
    if not voices:
        raise InputError("No voice names given", 'pass --voices "name1,name2"')
    return tuple(voices)


def validate_language(language: str) -> str:
    code = language.strip().lower()
    if not _LANGUAGE_RE.match(code):
        raise InputError(f"Invalid language {language!r}",
                         "use a language code such as fr, de, ko, hi, zh, es, it or pt-br")
    return code


def validate_prompt(prompt: str) -> str:
    """A template with ``{text}`` once and ``{voice}`` at most once, nothing else in braces."""
    rest = prompt.replace("{voice}", "", 1).replace("{text}", "", 1)
    if prompt.count("{text}") != 1 or "{" in rest or "}" in rest or len(prompt) > 200:
        raise InputError(f"Invalid prompt template {prompt!r}",
                         'use "{voice}: {text}" (the Orpheus format) or "{text}"')
    return prompt


# -- the manifest ------------------------------------------------------------------------------
def default_entry(settings: Settings, state: DeploymentState) -> ModelEntry | None:
    """The English default model, from the settings' ``model_object`` or the recorded one."""
    obj = settings.model_object or state.model_object
    if not obj:
        return None
    recorded = obj == state.model_object
    dims = GgufDims.from_dict(state.model_dims) if recorded and state.model_dims else None
    return ModelEntry(name=DEFAULT_MODEL_NAME, object=obj, default=True,
                      size=state.model_size if recorded else None,
                      crc32c=state.model_crc32c if recorded else None, dims=dims)


def extra_entries(state: DeploymentState) -> list[ModelEntry]:
    entries = (ModelEntry.from_state(m) for m in state.models if isinstance(m, dict))
    return sorted((e for e in entries if e is not None), key=lambda e: e.name)


def manifest(settings: Settings, state: DeploymentState) -> list[ModelEntry]:
    """Every served model, the default first (empty when no default model is uploaded yet)."""
    default = default_entry(settings, state)
    return [default, *extra_entries(state)] if default is not None else []


def check_registration(entry: ModelEntry, state: DeploymentState, default_object: str | None
                       ) -> None:
    """Refuse an entry whose voices or file another model already has (bad input, before any
    upload)."""
    owners: dict[str, str] = {v: DEFAULT_MODEL_NAME for v in STANDARD_VOICES}
    for other in extra_entries(state):
        if other.name == entry.name:
            continue
        owners.update({v: other.name for v in other.voices})
        if other.object == entry.object:
            raise InputError(f"{entry.object} is already registered as model {other.name!r}",
                             f"remove it first: orpheus remove-model {other.name}")
    if entry.object == default_object:
        raise InputError(f"{entry.object} is the default model",
                         "upload the other model's file, or a copy under another --name")
    taken = [f"{v!r} (model {owners[v]!r})" for v in entry.voices if v in owners]
    if taken:
        raise InputError(
            f"Voice name(s) already served by another model: {', '.join(taken)}",
            "voice names must be unique across models: rename the voices (--voices), or "
            "remove the other model with `orpheus remove-model NAME`")


def with_model(state: DeploymentState, entry: ModelEntry) -> DeploymentState:
    """The state with ``entry`` registered (replacing a model of the same name)."""
    models = [m for m in state.models if not (isinstance(m, dict) and m.get("name") == entry.name)]
    models.append(entry.to_state())
    return dataclasses.replace(state, models=sorted(models, key=lambda m: str(m.get("name"))))


def without_model(state: DeploymentState, name: str) -> DeploymentState:
    return dataclasses.replace(state, models=[
        m for m in state.models if not (isinstance(m, dict) and m.get("name") == name)])


# -- what the services are told (pure; the specs call these) -----------------------------------
def frontend_models_env(models: Sequence[ModelEntry]) -> str:
    """``ORPHEUS_MODELS``: the voice -> model map the frontend routes by."""
    return json.dumps([{"name": m.name, "language": m.language, "voices": list(m.voices),
                        "prompt": m.prompt, "default": m.default} for m in models],
                      ensure_ascii=False, separators=(",", ":"))


def backend_model_files_env(models: Sequence[ModelEntry]) -> str:
    """``MODEL_FILES``: model name -> object name under the bucket mount (``MODELS_DIR``)."""
    return json.dumps({m.name: m.object for m in models}, ensure_ascii=False,
                      separators=(",", ":"))


def parse_frontend_models_env(value: str) -> dict[str, dict[str, Any]]:
    """Inverse of :func:`frontend_models_env` for a live service (for `plan`); {} if unreadable."""
    try:
        data = json.loads(value)
        return {str(m["name"]): m for m in data if isinstance(m, dict)}
    except (ValueError, TypeError, KeyError):
        return {}
