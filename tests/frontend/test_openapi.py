"""The OpenAPI document describes the API exactly: what the deployment accepts (enums), and what
the speech route really returns (an audio type per format, text/event-stream; never JSON)."""

from __future__ import annotations

import httpx

from runtime.codec.encoders import CONTENT_TYPES
from runtime.codec.protocol import VOICES

SPEECH = "/v1/audio/speech"


def document(app) -> dict:
    response = httpx.get(f"{app.base_url}/openapi.json", headers=app.headers(), timeout=30)
    assert response.status_code == 200
    return response.json()


def test_request_fields_are_enums_of_what_this_deployment_accepts(frontend_factory):
    app = frontend_factory(ORPHEUS_EXTRA_VOICES="narrator", ORPHEUS_MODEL_NAME="Orpheus-3B")
    doc = document(app)
    schemas = doc["components"]["schemas"]
    request = schemas["SpeechRequest"]["properties"]
    voices = [*VOICES, "narrator"]
    by_name, by_object = request["voice"]["anyOf"]
    assert by_name == {"type": "string", "enum": voices}
    assert by_object == {"$ref": "#/components/schemas/VoiceRef"}
    assert schemas["VoiceRef"]["properties"]["id"]["enum"] == voices
    formats = list(app.app.state.speech.formats)
    assert request["response_format"]["anyOf"] == [{"type": "string", "enum": formats},
                                                   {"type": "null"}]
    assert request["stream_format"]["anyOf"][0]["enum"] == ["audio", "sse"]
    assert "orpheus-3b" in request["model"]["enum"] and "tts-1" in request["model"]["enum"]
    assert (request["input"]["minLength"], request["input"]["maxLength"]) == (1, 4096)


def test_the_speech_route_lists_its_real_media_types(frontend):
    doc = document(frontend)
    responses = doc["paths"][SPEECH]["post"]["responses"]
    formats = frontend.app.state.speech.formats
    ok = responses["200"]["content"]
    assert set(ok) == {CONTENT_TYPES[f] for f in formats} | {"text/event-stream"}
    assert ok["text/event-stream"]["schema"]["oneOf"] == [
        {"$ref": f"#/components/schemas/{name}"}
        for name in ("SpeechAudioDelta", "SpeechAudioDone", "SpeechStreamError")]
    # Each listed type is what a request in that format gets.
    for fmt in formats:
        got = httpx.post(f"{frontend.base_url}{SPEECH}", headers=frontend.headers(), timeout=30,
                         json={"input": "Typed.", "response_format": fmt})
        assert got.headers["content-type"] in ok
        assert got.headers["content-type"] == CONTENT_TYPES[fmt]
    for status in ("400", "401", "413", "429", "502", "503", "504"):
        assert set(responses[status]["content"]) == {"application/json"}, status
    assert "Retry-After" in responses["429"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]


def test_no_422_that_is_never_sent_and_the_keys_are_described(frontend):
    doc = document(frontend)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/health"]["get"]["security"] == []


def test_every_model_of_the_catalog_is_in_the_enums(frontend_factory):
    """With several models (ORPHEUS_MODELS), a voice or model name the server accepts is one the
    document lists: schema-driven clients would refuse the French voices otherwise."""
    from orpheus_deploy.models import ModelEntry, frontend_models_env

    manifest = [ModelEntry(name="orpheus", object="en.gguf", default=True),
                ModelEntry(name="orpheus-fr", object="fr.gguf", language="fr",
                           voices=("pierre", "amelie"))]
    app = frontend_factory(ORPHEUS_MODELS=frontend_models_env(manifest))
    request = document(app)["components"]["schemas"]["SpeechRequest"]["properties"]
    listed = httpx.get(f"{app.base_url}/v1/audio/voices", headers=app.headers()).json()
    assert request["voice"]["anyOf"][0]["enum"] == listed["voices"]
    assert {"pierre", "amelie", "tara"} <= set(listed["voices"])
    assert request["voice"]["default"] == listed["default"]
    assert {"orpheus", "orpheus-fr", "tts-1"} <= set(request["model"]["enum"])
