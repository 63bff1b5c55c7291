"""A failing backend never yields a 200 with empty audio; failures after audio are visible."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.fake_backend import Behavior
from tests.fixtures.plugin_llama import free_port
from tests.frontend.audio import SAMPLES_PER_FRAME, pcm_samples
from tests.frontend.logs import access_records

BODY = {"model": "orpheus", "input": "Hello.", "voice": "tara", "response_format": "wav"}


def post(app, **extra):
    return httpx.post(
        f"{app.base_url}/v1/audio/speech",
        headers=app.headers(),
        json={**BODY, **extra},
        timeout=30,
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and error["code"] == code
    return error


def unused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/completions"  # nothing listens once the socket closes



def read_until_cut(base_url: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    """Stream a speech request that starts with 200 and audio, and return what arrived before
    the body was cut off (a truncated chunked transfer, never a clean end)."""
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{base_url}/v1/audio/speech", headers=headers, json=body) as response,
    ):
        assert response.status_code == 200  # audio had started
        for chunk in response.iter_bytes():
            received += chunk
    return bytes(received)

def test_backend_down_is_503_after_retries(frontend_factory, caplog):
    caplog.set_level(logging.WARNING)
    app = frontend_factory(ORPHEUS_API_URL=unused_url(), ORPHEUS_API_TIMEOUT="1.5")
    error = assert_error(post(app), 503, "backend_unavailable")
    assert "cannot connect" in error["message"]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 2  # it did retry with backoff before giving up


def test_backend_down_surfaces_in_the_openai_sdk(frontend_factory):
    app = frontend_factory(ORPHEUS_API_URL=unused_url(), ORPHEUS_API_TIMEOUT="1")
    with pytest.raises(openai.InternalServerError) as caught:
        app.openai(max_retries=0).audio.speech.create(model="orpheus", voice="tara", input="Hi")
    assert caught.value.status_code == 503


def test_503_then_up_is_retried(frontend, fake_backend):
    fake_backend.script(Behavior.status_code(503), Behavior.status_code(429, retry_after="0"))
    response = post(frontend, response_format="pcm")
    assert response.status_code == 200
    assert pcm_samples(response.content).size == 10 * SAMPLES_PER_FRAME
    assert [r.behavior.kind for r in fake_backend.completions] == ["status", "status", "stream"]


def test_503_until_the_deadline_is_503(frontend_factory, fake_backend):
    fake_backend.default = Behavior.status_code(503)
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    assert_error(post(app), 503, "backend_unavailable")
    assert len(fake_backend.completions) >= 2


def test_deadline_during_a_retry_is_still_503(frontend_factory, fake_backend):
    """Each 503 takes 0.6 s, so the 1 s deadline falls while the second attempt is in flight:
    the backend was unavailable throughout, which is a 503, not a 504."""
    fake_backend.default = Behavior.status_code(503, answer_after=0.6)
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    error = assert_error(post(app), 503, "backend_unavailable")
    assert "503" in error["message"]
    assert len(fake_backend.completions) == 2


def test_backend_rejection_is_502_without_retry(frontend, fake_backend):
    fake_backend.script(Behavior.status_code(400, body='{"error": {"message": "bad prompt"}}'))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "400" in error["message"] and "bad prompt" in error["message"]
    assert len(fake_backend.completions) == 1


def test_backend_refusing_our_identity_is_a_retryable_503_with_its_own_code(frontend,
                                                                           fake_backend):
    # Cloud Run's invoker check answers 403 until a fresh roles/run.invoker binding applies
    # (minutes): the caller gets a 503 to retry, and `orpheus deploy`'s smoke test waits on
    # this code. Not retried here, so a binding that is really missing fails fast.
    fake_backend.script(Behavior.status_code(403, body="Your client does not have permission"))
    response = post(frontend)
    error = assert_error(response, 503, "backend_forbidden")
    assert "roles/run.invoker" in error["message"]
    assert int(response.headers["retry-after"]) >= 10
    assert len(fake_backend.completions) == 1


def test_ready_waits_for_the_backends_host_and_never_wakes_it(frontend_factory):
    # The startup probe: 503 while nothing answers at the backend's host (Direct VPC egress
    # not connected yet), 200 once anything answers there, even a refusal; no token is sent.
    port = free_port()
    app = frontend_factory(ORPHEUS_API_URL=f"http://127.0.0.1:{port}/v1/completions")
    waiting = httpx.get(f"{app.base_url}/ready", timeout=10)
    assert waiting.status_code == 503 and "cannot reach" in waiting.json()["detail"]
    seen: list[dict[str, str]] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ready = httpx.get(f"{app.base_url}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert seen == [{"path": "/health", "auth": ""}]
        assert httpx.get(f"{app.base_url}/ready", timeout=10).status_code == 200
        assert len(seen) == 1  # connected once is enough: it is a startup check
    finally:
        server.shutdown()
        server.server_close()


def test_hang_before_headers_is_504(frontend_factory, fake_backend):
    fake_backend.default = Behavior.hang()
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    error = assert_error(post(app), 504, "backend_timeout")
    assert "ORPHEUS_API_TIMEOUT" in error["message"]
    # The hung backend request was abandoned, not left open.
    (request,) = fake_backend.completions
    assert request.closed.wait(5) and request.disconnected


def test_hang_after_headers_is_504(frontend_factory, fake_backend):
    fake_backend.default = Behavior.hang(headers=True)
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    assert_error(post(app), 504, "backend_timeout")


def test_death_before_any_audio_is_502(frontend, fake_backend):
    fake_backend.script(Behavior.die(after_frames=0))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "mid-stream" in error["message"]


def test_no_audio_tokens_is_502_not_empty_audio(frontend, fake_backend):
    fake_backend.script(Behavior.stream(0, preamble="Sorry, I am a chat model."))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "no audio" in error["message"]


def test_death_mid_stream_truncates_the_response_and_is_logged(frontend, fake_backend, caplog):
    caplog.set_level(logging.INFO)
    fake_backend.script(Behavior.die(after_frames=6))
    received = read_until_cut(frontend.base_url,
                              {**frontend.headers(), "X-Request-ID": "req-dies-42"},
                              {**BODY, "response_format": "pcm"})
    # Every frame that arrived is decoded and sent before the cut (the decoder's look-ahead and
    # the join's held tail are flushed), not dropped with the connection.
    assert pcm_samples(received).size == 6 * SAMPLES_PER_FRAME
    aborted = [r for r in caplog.records if "aborted" in r.getMessage()]
    assert aborted and aborted[0].levelno == logging.ERROR
    assert "req-dies-42" in json.dumps(_fields(aborted[0]))
    access = [r for r in caplog.records if r.name == "orpheus.frontend.access"]
    assert access[-1].__dict__["outcome"] == "aborted"
    assert access[-1].__dict__["complete"] is False


def test_death_mid_stream_raises_in_the_openai_sdk(frontend, fake_backend):
    fake_backend.script(Behavior.die(after_frames=6))
    client = frontend.openai(max_retries=0)
    # The SDK brings its own HTTP stack (httpx2 in openai 3.x): match the error by what it says.
    with (
        pytest.raises(Exception, match="incomplete chunked read") as caught,
        client.audio.speech.with_streaming_response.create(
            model="orpheus", voice="tara", input="Dies.", response_format="wav"
        ) as response,
    ):
        response.read()
    assert type(caught.value).__name__ == "RemoteProtocolError"


def test_client_disconnect_cancels_the_backend_request(frontend, fake_backend):
    # 2000 frames at 200 tokens/s would take 70 s; the client reads one chunk and leaves.
    fake_backend.script(Behavior.stream(2000, tokens_per_second=200))
    with httpx.stream(
        "POST",
        f"{frontend.base_url}/v1/audio/speech",
        headers=frontend.headers(),
        json={**BODY, "response_format": "pcm"},
    ) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    (request,) = fake_backend.completions
    assert request.closed.wait(10), "the backend request stayed open after the client left"
    assert request.disconnected and not request.finished
    assert request.tokens_sent < 2000 * 7


def test_client_disconnect_before_audio_cancels_too(frontend_factory, fake_backend):
    fake_backend.default = Behavior.hang(headers=True)
    app = frontend_factory(ORPHEUS_API_TIMEOUT="60")
    # The client gives up after 0.5 s without a byte; the app must notice and drop the backend.
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=0.5)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post(f"{app.base_url}/v1/audio/speech", headers=app.headers(), json=BODY)
    (request,) = fake_backend.completions
    assert request.closed.wait(10) and request.disconnected


def _fields(record: logging.LogRecord) -> dict:
    from runtime.frontend.logging_setup import JsonFormatter

    return json.loads(JsonFormatter().format(record))


def test_error_event_before_audio_is_502_with_the_backend_message(frontend, fake_backend):
    fake_backend.script(Behavior.error_event(after_frames=0))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "slot crashed" in error["message"]


def test_error_event_mid_stream_truncates(frontend, fake_backend):
    fake_backend.script(Behavior.error_event(after_frames=8))
    received = read_until_cut(
        frontend.base_url, frontend.headers(), {**BODY, "response_format": "pcm"}
    )
    assert pcm_samples(received).size == 8 * SAMPLES_PER_FRAME  # flushed, then cut


def test_server_ignoring_stream_flag_still_works(frontend, fake_backend):
    fake_backend.script(Behavior.json(frames=6))
    response = post(frontend, response_format="pcm")
    assert response.status_code == 200
    assert pcm_samples(response.content).size == 6 * SAMPLES_PER_FRAME


def test_connection_dropped_before_the_answer_is_retried(frontend, fake_backend):
    # A backend that closes the connection without answering (an instance that crashed, a stale
    # keep-alive connection) is retried like one that refuses connections...
    fake_backend.script(Behavior.drop())
    response = post(frontend, response_format="pcm")
    assert response.status_code == 200, response.text
    assert pcm_samples(response.content).size == 10 * SAMPLES_PER_FRAME
    assert [r.behavior.kind for r in fake_backend.completions] == ["drop", "stream"]


def test_connection_dropped_until_the_deadline_is_503(frontend_factory, fake_backend):
    # ...and one that keeps doing it is a 503 in OpenAI's shape, not a 500 "internal error".
    fake_backend.default = Behavior.drop()
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    error = assert_error(post(app), 503, "backend_unavailable")
    assert "connection" in error["message"]
    assert len(fake_backend.completions) >= 2


def test_second_segment_hanging_before_headers_is_a_timeout(frontend_factory, fake_backend, caplog):
    # Long input: the first segment's audio is out, the second request gets no answer at all.
    caplog.set_level(logging.INFO)
    fake_backend.script(Behavior.stream(6), Behavior.hang())
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="40", ORPHEUS_API_TIMEOUT="1")
    text = "This is the first sentence here. And this is the second one, also long."
    read_until_cut(app.base_url, app.headers(), {**BODY, "input": text, "response_format": "pcm"})
    # The stream ends visibly, reported as the backend timing out, not as an internal failure.
    assert not [r for r in caplog.records if "pipeline failed" in r.getMessage()]
    access = [r for r in caplog.records if r.name == "orpheus.frontend.access"]
    assert access[-1].__dict__["outcome"] == "aborted"
    assert "sent no answer" in access[-1].__dict__["error"]


@pytest.mark.parametrize("style", ["line", "event"])
def test_error_in_other_sse_framings_is_seen(frontend, fake_backend, style):
    # Older llama-server builds send `error: {...}`; other SSE servers `event: error` + data.
    # Before audio: a 502 with the backend's message, not "no audio tokens".
    fake_backend.script(Behavior.error_event(after_frames=0, error_style=style))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "slot crashed" in error["message"]
    # After audio: the stream is cut visibly, not ended as if the speech were complete.
    fake_backend.script(Behavior.error_event(after_frames=8, error_style=style))
    read_until_cut(frontend.base_url, frontend.headers(), {**BODY, "response_format": "pcm"})


@pytest.mark.parametrize("body", ["<html><body>Welcome</body></html>", "[1, 2]", '"text"'])
def test_a_200_that_is_not_a_completion_is_502(frontend, fake_backend, body):
    # ORPHEUS_API_URL pointing at some other web page answers 200 with no event stream: the client
    # must hear the backend is wrong (502), not get a 500 "internal server error".
    fake_backend.script(Behavior.status_code(200, body=body))
    error = assert_error(post(frontend), 502, "backend_error")
    assert "completion" in error["message"]


def test_deadline_passed_while_backing_off_is_still_503(fake_backend):
    """A loaded machine can oversleep a back-off past the deadline; the backend was refusing the
    whole time, so the answer is 'unavailable', not 'timed out'. The retry hook blocks the event
    loop past the deadline, which is what an oversleep looks like to the client."""
    import asyncio
    import time

    from runtime.frontend.backend_client import BackendClient, BackendUnavailable, GenerationParams

    fake_backend.default = Behavior.status_code(503)
    params = GenerationParams("orpheus", 100, 0.6, 0.9, 1.1)

    async def run() -> None:
        async with httpx.AsyncClient() as http:
            client = BackendClient(http, fake_backend.url, params, initial_backoff=0.05)
            deadline = asyncio.get_running_loop().time() + 0.5

            def oversleep(reason: str | None) -> None:
                if reason:
                    time.sleep(0.6)

            with pytest.raises(BackendUnavailable, match="503"):
                await client._open("prompt", deadline, on_retry=oversleep)

    asyncio.run(run())
    assert len(fake_backend.completions) == 1


TWO_SENTENCES = "This is the first sentence here. And this is the second one, also long."
CROSSFADE = 480  # 20 ms at 24 kHz, one per join


@pytest.mark.parametrize(
    "silent",
    [
        Behavior.stream(0, end_of_speech=True),  # end of speech at once
        Behavior.stream(0, preamble="<custom_token_99999><custom_token_5>Sorry."),  # no audio
        Behavior.stream(0),  # nothing at all
    ],
    ids=["end-of-speech", "invalid-tokens", "empty"],
)
def test_a_sentence_without_audio_cuts_the_stream_instead_of_vanishing(
    frontend_factory, fake_backend, caplog, silent
):
    caplog.set_level(logging.INFO)
    fake_backend.script(Behavior.stream(6), silent)
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="40")
    body = {**BODY, "input": TWO_SENTENCES, "response_format": "pcm"}
    received = read_until_cut(app.base_url, app.headers(), body)
    # The first sentence is all there (its held-back tail flushed too); then the transfer is cut,
    # never ended as if the answer were complete.
    assert pcm_samples(received).size == 6 * SAMPLES_PER_FRAME
    access = access_records(caplog)[-1]
    assert access.__dict__["outcome"] == "aborted" and access.__dict__["complete"] is False
    assert "no audio" in access.__dict__["error"] and "segment 2 of 2" in access.__dict__["error"]


def test_a_first_sentence_without_audio_is_a_502_not_the_second_alone(
    frontend_factory, fake_backend, caplog
):
    caplog.set_level(logging.INFO)
    fake_backend.script(Behavior.stream(0, end_of_speech=True), Behavior.stream(6))
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="40")
    error = assert_error(post(app, input=TWO_SENTENCES), 502, "backend_error")
    assert "segment 1 of 2" in error["message"]
    assert len(fake_backend.completions) == 1  # the second sentence was not even asked for
    assert access_records(caplog)[-1].__dict__["outcome"] == "failed"


def test_death_in_the_second_sentence_sends_what_arrived_then_cuts(frontend_factory, fake_backend):
    fake_backend.script(Behavior.stream(6), Behavior.die(after_frames=3))
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="40")
    body = {**BODY, "input": TWO_SENTENCES, "response_format": "pcm"}
    received = read_until_cut(app.base_url, app.headers(), body)
    assert pcm_samples(received).size == (6 + 3) * SAMPLES_PER_FRAME - CROSSFADE
