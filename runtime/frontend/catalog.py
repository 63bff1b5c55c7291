"""Which model speaks which voice: the deployment's models, from ORPHEUS_MODELS.

One model (no ORPHEUS_MODELS): ``ORPHEUS_MODEL_NAME`` with the 8 English voices plus
``ORPHEUS_EXTRA_VOICES``, exactly as before. Several models: the CLI renders the manifest
(orpheus_deploy/models.py) as a JSON list, one object per model::

    [{"name": "orpheus", "language": "en", "voices": ["tara", ...], "prompt": "{voice}: {text}",
      "default": true},
     {"name": "orpheus-fr", "language": "fr", "voices": ["pierre", "amelie", "marie"], ...}]

and the backend is llama-server's router, which serves each request with the model its
``model`` field names. A voice belongs to exactly one model; ORPHEUS_EXTRA_VOICES are the
default model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.codec.prompt import DEFAULT_PROMPT_TEMPLATE, UnknownVoiceError
from runtime.codec.protocol import VOICES

__all__ = ["CatalogError", "CatalogModel", "ModelCatalog", "parse_models"]

_FORBIDDEN_IN_VOICE = set(",:{}<>\"'\\/") | {" ", "\t", "\n", "\r"}


class CatalogError(ValueError):
    """ORPHEUS_MODELS is malformed; the message says what is wrong."""


@dataclass(frozen=True)
class CatalogModel:
    name: str
    language: str
    voices: tuple[str, ...]
    prompt: str = DEFAULT_PROMPT_TEMPLATE
    default: bool = False


def _voices(raw: object, model: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
        raise CatalogError(f"model {model!r}: 'voices' must be a non-empty list of names")
    voices = tuple(v.strip().lower() for v in raw)
    bad = [v for v in voices if not v or _FORBIDDEN_IN_VOICE & set(v)]
    if bad:
        raise CatalogError(f"model {model!r}: invalid voice name(s) {bad}")
    return voices


def _prompt(raw: object, model: str) -> str:
    template = DEFAULT_PROMPT_TEMPLATE if raw is None else raw
    rest = str(template).replace("{voice}", "", 1).replace("{text}", "", 1)
    if not isinstance(template, str) or template.count("{text}") != 1 or "{" in rest \
            or "}" in rest:
        raise CatalogError(f"model {model!r}: 'prompt' must hold {{text}} once and at most "
                           "{voice} besides")
    return template


def parse_models(raw: str) -> tuple[CatalogModel, ...]:
    """ORPHEUS_MODELS -> models, the default first; CatalogError when it cannot be served."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CatalogError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, list) or not data or not all(isinstance(m, dict) for m in data):
        raise CatalogError("expected a JSON list of models: [{\"name\", \"language\", "
                           "\"voices\", \"prompt\", \"default\"}, ...]")
    models: list[CatalogModel] = []
    for item in data:
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CatalogError("every model needs a 'name'")
        models.append(CatalogModel(
            name=name.strip(), language=str(item.get("language") or "en"),
            voices=_voices(item.get("voices"), name), prompt=_prompt(item.get("prompt"), name),
            default=bool(item.get("default", False))))
    defaults = [m for m in models if m.default]
    if len(defaults) > 1:
        raise CatalogError(f"several default models: {[m.name for m in defaults]}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise CatalogError(f"model names repeat: {names}")
    owner: dict[str, str] = {}
    for model in models:
        for voice in model.voices:
            if voice in owner:
                raise CatalogError(f"voice {voice!r} belongs to both {owner[voice]!r} and "
                                   f"{model.name!r}")
            owner[voice] = model.name
    first = defaults[0] if defaults else models[0]
    return (first, *[m for m in models if m is not first])


class ModelCatalog:
    """The models and the voice -> model map. ``routed``: several models, so every backend
    request names its model (llama-server's router chooses by it)."""

    def __init__(self, models: Iterable[CatalogModel], routed: bool) -> None:
        self.models = tuple(models)
        self.routed = routed
        self._by_voice = {v: m for m in self.models for v in m.voices}
        self._by_name = {m.name.lower(): m for m in self.models}

    @classmethod
    def build(cls, models_json: str, model_name: str, extra_voices: Iterable[str]
              ) -> ModelCatalog:
        extra = [v for v in extra_voices if v]
        if not models_json.strip():
            voices = tuple(dict.fromkeys([*VOICES, *extra]))
            return cls([CatalogModel(model_name, "en", voices, default=True)], routed=False)
        default, *others = parse_models(models_json)
        taken = {v: m.name for m in others for v in m.voices}
        clash = [f"{v!r} ({taken[v]})" for v in extra if v in taken]
        if clash:
            raise CatalogError(f"ORPHEUS_EXTRA_VOICES names voices of other models: "
                               f"{', '.join(clash)}")
        voices = tuple(dict.fromkeys([*default.voices, *extra]))
        default = CatalogModel(default.name, default.language, voices, default.prompt, True)
        return cls([default, *others], routed=len(others) > 0)

    @property
    def default(self) -> CatalogModel:
        return self.models[0]

    def voices(self) -> list[str]:
        return list(self._by_voice)

    def model(self, name: str) -> CatalogModel | None:
        return self._by_name.get(name.strip().lower())

    def resolve_voice(self, voice: str) -> tuple[CatalogModel, str]:
        """The model that speaks ``voice`` (case-insensitive) and the normalised name; raises
        UnknownVoiceError listing every valid voice."""
        name = voice.strip().lower()
        model = self._by_voice.get(name)
        if model is None:
            raise UnknownVoiceError(voice, self.voices())
        return model, name
