"""API keys: missing, wrong, both header styles, rotation; and no key ever reaches a log."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

OLD = "sk-old-0123456789abcdef"
NEW = "sk-new-fedcba9876543210"


def speech(app, headers, body=None):
    return httpx.post(
        f"{app.base_url}/v1/audio/speech",
        headers=headers,
        json=body or {"input": "Hi.", "voice": "tara", "response_format": "pcm"},
    )


def assert_401(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.fixture
def rotating(frontend_factory):
    # Secret Manager values often end with a newline; spaces around commas are tolerated.
    return frontend_factory(API_KEY_SECRET=f" {OLD} , {NEW}\n")


def test_missing_key_is_401_on_every_v1_route(frontend):
    assert_401(speech(frontend, {}), "missing_api_key")
    for path in ("/v1/models", "/v1/audio/voices"):
        assert_401(httpx.get(frontend.base_url + path), "missing_api_key")


def test_wrong_key_is_401(frontend):
    assert_401(speech(frontend, {"X-API-Key": frontend.api_key + "x"}), "invalid_api_key")
    assert_401(speech(frontend, {"Authorization": "Bearer nope"}), "invalid_api_key")
    assert_401(speech(frontend, {"Authorization": f"Basic {frontend.api_key}"}), "missing_api_key")


def test_auth_is_checked_before_the_body(frontend):
    # An anonymous caller gets 401, not a validation error describing the schema.
    response = speech(frontend, {}, body={"voice": 5})
    assert_401(response, "missing_api_key")


def test_both_header_styles_work(frontend):
    assert speech(frontend, {"X-API-Key": frontend.api_key}).status_code == 200
    assert speech(frontend, {"Authorization": f"Bearer {frontend.api_key}"}).status_code == 200


def test_rotation_old_and_new_keys_both_valid(rotating):
    for key in (OLD, NEW):
        assert speech(rotating, {"X-API-Key": key}).status_code == 200
        audio = openai.OpenAI(base_url=f"{rotating.base_url}/v1", api_key=key).audio.speech.create(
            model="orpheus", voice="tara", input="Rotated.", response_format="pcm"
        )
        assert len(audio.content) > 0
    assert_401(speech(rotating, {"X-API-Key": f"{OLD},{NEW}"}), "invalid_api_key")
    assert_401(speech(rotating, {"X-API-Key": OLD[:-1]}), "invalid_api_key")


def test_openai_sdk_surfaces_the_401(frontend):
    client = openai.OpenAI(base_url=f"{frontend.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.audio.speech.create(model="orpheus", voice="tara", input="Hi.")
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"


def test_health_needs_no_key(frontend):
    assert httpx.get(f"{frontend.base_url}/health").status_code == 200


def test_health_is_the_only_open_route(frontend):
    # The API description is behind the key like the API; there are no /docs or /redoc pages
    # (their browser page could not send the key to fetch the description).
    assert_401(httpx.get(f"{frontend.base_url}/openapi.json"), "missing_api_key")
    described = httpx.get(f"{frontend.base_url}/openapi.json", headers=frontend.headers())
    assert described.status_code == 200 and "/v1/audio/speech" in described.json()["paths"]
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = httpx.get(f"{frontend.base_url}{path}", headers=frontend.headers())
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_no_key_in_any_log(rotating, caplog):
    caplog.set_level(logging.DEBUG)
    speech(rotating, {"X-API-Key": OLD})
    speech(rotating, {"Authorization": f"Bearer {NEW}"})
    speech(rotating, {"X-API-Key": "sk-attacker-guess-123456"})
    speech(rotating, {"X-API-Key": NEW}, body={"input": "", "voice": "tara"})
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "POST /v1/audio/speech 401" in logged  # the failures were logged...
    assert "POST /v1/audio/speech 200" in logged
    for secret in (OLD, NEW, "sk-attacker-guess-123456"):
        assert secret not in logged  # ...without any key, right or wrong
    # What the access log records of a caller is the key's name.
    names = [r.__dict__.get("key") for r in caplog.records if r.name == "orpheus.frontend.access"]
    assert names == ["default", "key-2", None, "key-2"]


def test_anonymous_malformed_json_is_401_not_a_parse_error(frontend):
    # The key is checked before the body is read or parsed: an anonymous caller never reaches the
    # JSON parser (FastAPI parses the body before it runs route dependencies).
    response = httpx.post(
        f"{frontend.base_url}/v1/audio/speech",
        headers={"Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_401(response, "missing_api_key")


def test_anonymous_body_is_never_read(frontend):
    # A client announces a 100 MB body and sends none of it: the 401 must come at once, without
    # waiting for (and buffering) the body of a caller who has no key.
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(frontend.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000000\r\n\r\n{"input": "'
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
