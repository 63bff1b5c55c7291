"""Bad input gets a 400 in OpenAI's shape naming the field; `speed` is honoured, not ignored."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from tests.frontend.audio import SAMPLES_PER_FRAME, pcm_samples

GOOD = {"model": "orpheus", "input": "Hello.", "voice": "tara", "response_format": "pcm"}


def post(app, content=None, **changes):
    body = {**GOOD, **changes}
    body = {k: v for k, v in body.items() if v is not ...}
    if content is not None:
        return httpx.post(
            f"{app.base_url}/v1/audio/speech",
            headers={**app.headers(), "Content-Type": "application/json"},
            content=content,
        )
    return httpx.post(f"{app.base_url}/v1/audio/speech", headers=app.headers(), json=body)


def assert_400(response: httpx.Response, param: str | None, code: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    return error["message"]


@pytest.mark.parametrize(
    ("changes", "param", "code"),
    [
        ({"input": ""}, "input", "empty_input"),
        ({"input": "   \n\t "}, "input", "empty_input"),
        ({"input": ...}, "input", "missing_required_parameter"),
        ({"input": 42}, "input", "invalid_value"),
        ({"voice": "darth"}, "voice", "invalid_voice"),
        ({"response_format": "ogg-vorbis"}, "response_format", "unsupported_format"),
        # OpenAI answers an empty format with 400 too; only a missing one means the default.
        ({"response_format": ""}, "response_format", "unsupported_format"),
        ({"speed": 0.1}, "speed", "invalid_value"),
        ({"speed": 4.5}, "speed", "invalid_value"),
        ({"speed": "fast"}, "speed", "invalid_value"),
        ({"model": "dall-e-3"}, "model", "model_not_found"),
        ({"stream_format": "websocket"}, "stream_format", "unsupported_stream_format"),
        ({"instructions": "Speak like a pirate"}, "instructions", "unsupported_parameter"),
    ],
)
def test_bad_requests_are_400_and_never_reach_the_backend(
    frontend, fake_backend, changes, param, code
):
    assert_400(post(frontend, **changes), param, code)
    assert fake_backend.completions == []


def test_messages_say_what_is_allowed(frontend):
    assert "tara" in assert_400(post(frontend, voice="darth"), "voice", "invalid_voice")
    message = assert_400(
        post(frontend, response_format="ogg"), "response_format", "unsupported_format"
    )
    assert "wav" in message and "pcm" in message
    assert "4" in assert_400(post(frontend, speed=9), "speed", "invalid_value")


def test_oversized_input(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_MAX_INPUT_CHARS="50")
    message = assert_400(post(app, input="x" * 51), "input", "input_too_long")
    assert "51" in message and "50" in message
    assert post(app, input="y" * 50).status_code == 200


def test_default_limit_is_a_few_thousand_characters(frontend):
    assert_400(post(frontend, input="word " * 1000), "input", "input_too_long")


def test_malformed_json_is_400(frontend):
    assert_400(post(frontend, content=b"{not json"), None, "invalid_json")


def test_openai_sdk_raises_bad_request(frontend):
    with pytest.raises(openai.BadRequestError) as caught:
        frontend.openai(max_retries=0).audio.speech.create(
            model="orpheus", voice="nobody", input="Hi."
        )
    assert caught.value.body["param"] == "voice"


def test_voice_names_are_case_insensitive_and_extra_voices_work(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_EXTRA_VOICES="Anna, bob")
    assert post(app, voice="Tara").status_code == 200
    assert post(app, voice="anna").status_code == 200
    prompts = [r.body["prompt"] for r in fake_backend.completions]
    assert prompts == ["<|audio|>tara: Hello.<|eot_id|>", "<|audio|>anna: Hello.<|eot_id|>"]
    voices = httpx.get(f"{app.base_url}/v1/audio/voices", headers=app.headers()).json()["voices"]
    assert voices[-2:] == ["anna", "bob"]


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_speed_changes_the_duration(frontend, speed):
    response = post(frontend, speed=speed)
    assert response.status_code == 200
    natural = 10 * SAMPLES_PER_FRAME
    # The tempo filter ends at exactly natural / speed samples (its flush feeds silence through
    # atempo and cuts it off there): no tail lost, as was 1,660 samples at 0.25 and 580 at 0.5.
    assert pcm_samples(response.content).size == round(natural / speed)


def test_speed_one_is_sample_exact(frontend):
    assert pcm_samples(post(frontend, speed=1.0).content).size == 10 * SAMPLES_PER_FRAME


def test_unknown_route_has_openai_shape(frontend):
    response = httpx.get(f"{frontend.base_url}/v1/nothing", headers=frontend.headers())
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_oversized_body_is_413_before_it_is_read(frontend, fake_backend):
    # A declared length over the limit is refused from the headers alone...
    huge = b'{"input": "' + b"a" * (4 * 1024 * 1024) + b'", "voice": "tara"}'
    response = post(frontend, content=huge)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large"

    # ...and a chunked body (no Content-Length) is cut off as soon as it passes the limit.
    def chunks():
        for i in range(0, len(huge), 65536):
            yield huge[i : i + 65536]

    response = httpx.post(
        f"{frontend.base_url}/v1/audio/speech",
        headers={**frontend.headers(), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert fake_backend.completions == []


def test_body_limit_leaves_room_for_the_longest_input(frontend_factory):
    # The longest accepted input, every character escaped as a JSON surrogate pair (12 bytes).
    app = frontend_factory(ORPHEUS_MAX_INPUT_CHARS="200000")
    text = "\U0001f600" * 200_000
    body = json.dumps({**GOOD, "input": text}).encode()
    assert len(body) > 1024 * 1024
    response = post(app, content=body)
    # Not refused for its size (the model then rejects nothing: the fake backend speaks anyway).
    assert response.status_code != 413, response.text


def test_a_body_that_is_not_an_object_is_named_as_such(frontend):
    message = assert_400(post(frontend, content=b"[1, 2]"), None, "invalid_value")
    assert "None" not in message and "body" in message


def test_voice_object_of_the_openai_sdk(frontend, fake_backend):
    # The SDK's `voice` may be {"id": ...} (OpenAI's custom voices); the id names the voice.
    audio = frontend.openai(max_retries=0).audio.speech.create(
        model="orpheus", voice={"id": "Leo"}, input="Hi.", response_format="pcm"
    )
    assert pcm_samples(audio.content).size == 10 * SAMPLES_PER_FRAME
    assert fake_backend.completions[-1].body["prompt"] == "<|audio|>leo: Hi.<|eot_id|>"
    assert_400(post(frontend, voice={"id": "voice_1234"}), "voice", "invalid_voice")


def test_a_huge_header_is_refused_before_it_is_read(frontend):
    # 20 MB of header: the server must stop reading and hang up after its bound on the request
    # head (serving.MAX_HEADER_BYTES), long before the 401, instead of buffering it all.
    from runtime.frontend.serving import MAX_HEADER_BYTES

    host, port = frontend.base_url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 65536
        try:
            while sent < 20 << 20:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection (a timeout would fail the test instead)
    assert sent < 20 << 20
    # A large but reasonable header is still read, and answered with the usual 401.
    big = httpx.post(f"{frontend.base_url}/v1/audio/speech", json=GOOD,
                     headers={"Cookie": "c=" + "x" * (MAX_HEADER_BYTES // 2)})
    assert big.status_code == 401
