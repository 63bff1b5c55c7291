"""The OpenAPI document, exact enough for schema-driven clients and fuzzers.

FastAPI derives most of it from the types. What it cannot know is added here: the values only the
running deployment knows (its voices, the formats this machine's FFmpeg can encode, the model names
it answers to), the media types the speech route really returns (one audio type per format, and
`text/event-stream` for `stream_format: "sse"`; never JSON), the API-key schemes, and that invalid
requests are 400 in OpenAI's shape (FastAPI would list a 422 that is never sent).

Served at GET /openapi.json, behind the API key like every route but /health; there is no /docs or
/redoc page (a browser cannot send the key when such a page fetches the document).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from runtime.codec.encoders import CONTENT_TYPES, SUPPORTED_FORMATS
from runtime.frontend.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechStreamError
from runtime.frontend.speech import MODEL_ALIASES, STREAM_FORMATS

__all__ = ["OPENAPI_URL", "install_openapi"]

OPENAPI_URL = "/openapi.json"
SPEECH_PATH = "/v1/audio/speech"
_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        _make_exact(schema, app)
        if hasattr(app.state, "speech"):  # the formats are known once the app has started
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _json(obj: Any) -> dict[str, Any]:
    return {"application/json": {"schema": obj}}


def _make_exact(schema: dict[str, Any], app: FastAPI) -> None:
    settings = app.state.settings
    speech = getattr(app.state, "speech", None)
    formats = list(speech.formats if speech is not None else SUPPORTED_FORMATS)
    # Every model's voices and names (ORPHEUS_MODELS), as requests are checked (speech.py).
    catalog = speech.catalog if speech is not None else settings.catalog()
    voices = catalog.voices()
    models = sorted({settings.model_name.lower(), *MODEL_ALIASES,
                     *(m.name.lower() for m in catalog.models)})
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})

    # The request: enums for what the deployment accepts; `input` must have a non-space.
    request = schemas["SpeechRequest"]["properties"]
    request["model"].update(type="string", enum=models)
    request["voice"] = {
        "anyOf": [{"type": "string", "enum": voices}, {"$ref": _REF.format(model="VoiceRef")}],
        "default": catalog.default.voices[0],
        "description": "A voice of GET /v1/audio/voices (case-insensitive), or {\"id\": <it>}.",
    }
    schemas["VoiceRef"]["properties"]["id"].update(enum=voices)
    request["input"].update(minLength=1, maxLength=settings.max_input_chars, pattern=r"\S")
    _nullable_enum(request, "response_format", formats)
    _nullable_enum(request, "stream_format", list(STREAM_FORMATS))
    request["instructions"]["anyOf"] = [{"type": "string", "pattern": r"^\s*$"}, {"type": "null"}]

    # The events of stream_format "sse".
    _, defs = models_json_schema(
        [(m, "serialization") for m in (SpeechAudioDelta, SpeechAudioDone, SpeechStreamError)],
        ref_template=_REF,
    )
    schemas.update(defs.get("$defs", {}))
    events = {"oneOf": [{"$ref": _REF.format(model=m.__name__)}
                        for m in (SpeechAudioDelta, SpeechAudioDone, SpeechStreamError)]}

    audio = {CONTENT_TYPES[f]: {"schema": {"type": "string", "format": "binary"}}
             for f in formats}
    operation = schema["paths"][SPEECH_PATH]["post"]
    responses = operation["responses"]
    responses["200"] = {
        "description": "The audio, streamed as it is decoded (whole, with a Content-Length, "
                       "when `stream` is false): the media type of `response_format`, or "
                       "text/event-stream of the events below with stream_format \"sse\".",
        "content": {**audio, "text/event-stream": {"schema": events}},
    }
    responses["413"] = {"description": "request body too large", "content": _json(_ERROR)}
    responses["429"] = {
        "description": "over this key's limit of concurrent streams or requests per minute",
        "headers": _RETRY_AFTER, "content": _json(_ERROR),
    }
    responses["503"]["headers"] = _RETRY_AFTER

    # Invalid requests are 400 in OpenAI's shape (errors.py), never FastAPI's 422.
    for path in schema["paths"].values():
        for each in path.values():
            listed = each.get("responses", {})
            if listed.pop("422", None) is not None:
                listed.setdefault("400", {"description": "invalid request",
                                          "content": _json(_ERROR)})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)

    # Either header carries the key; /health needs none.
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
    schema["paths"]["/health"]["get"]["security"] = []


def _nullable_enum(properties: dict[str, Any], name: str, values: list[str]) -> None:
    field = properties[name]
    field.pop("type", None)
    field["anyOf"] = [{"type": "string", "enum": values}, {"type": "null"}]
