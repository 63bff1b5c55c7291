"""`stream_format: "sse"` through the official OpenAI SDK: OpenAI's speech events, whose audio is
byte for byte the file `stream_format: "audio"` returns, and failures before and after the first
event."""

from __future__ import annotations

import base64
import json
import logging

import httpx
import openai
import pytest

from runtime.frontend.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechStreamError
from tests.fixtures.fake_backend import Behavior
from tests.frontend.audio import SAMPLES_PER_FRAME, decoded_seconds, pcm_samples, wav_samples
from tests.frontend.logs import access_records

FRAMES = 10
TEXT = "Server-sent speech."


def sse_events(lines) -> list[dict]:
    """The JSON of each `data:` line of an event stream (OpenAI's speech events carry no
    `event:` line; each ends at a blank line)."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
        else:
            assert line == "", f"unexpected line {line!r}"
    return events


def check_types(events: list[dict]) -> None:
    """Every event is one of OpenAI's two speech event types, exactly (no extra keys)."""
    *deltas, done = events
    assert deltas, "no audio"
    for event in deltas:
        assert set(event) == {"type", "audio"}
        SpeechAudioDelta.model_validate(event, strict=True)
    assert set(done) == {"type", "usage"}
    assert set(done["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    SpeechAudioDone.model_validate(done, strict=True)


def audio_of(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["audio"]) for e in events
                    if e["type"] == "speech.audio.delta")


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_openai_sdk_streams_speech_events(frontend, fmt):
    client = frontend.openai()
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="tara", input=TEXT, response_format=fmt,
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers.get("transfer-encoding") == "chunked"
        events = sse_events(response.iter_lines())
    check_types(events)
    audio = audio_of(events)
    # The same bytes as the plain audio stream of the same request (the backend is scripted).
    plain = client.audio.speech.create(model="orpheus", voice="tara", input=TEXT,
                                       response_format=fmt).content
    assert audio == plain
    if fmt == "pcm":
        assert pcm_samples(audio).size == FRAMES * SAMPLES_PER_FRAME
    else:
        assert abs(decoded_seconds(audio) - FRAMES * SAMPLES_PER_FRAME / 24000) < 0.08


def test_usage_counts_the_backends_tokens(frontend, fake_backend):
    events = sse_events(stream_lines(frontend, {"response_format": "pcm"}))
    (request,) = fake_backend.completions
    prompt = len(request.body["prompt"].split())  # what the scripted backend reports
    assert events[-1]["usage"] == {"input_tokens": prompt, "output_tokens": FRAMES * 7,
                                   "total_tokens": prompt + FRAMES * 7}


def test_usage_without_a_report_counts_the_audio_tokens(frontend, fake_backend):
    fake_backend.script(Behavior.stream(FRAMES, usage=False))  # as llama_cpp.server
    events = sse_events(stream_lines(frontend, {"response_format": "pcm"}))
    assert events[-1]["usage"] == {"input_tokens": 0, "output_tokens": FRAMES * 7,
                                   "total_tokens": FRAMES * 7}


def stream_lines(app, changes: dict) -> list[str]:
    body = {"input": TEXT, "voice": "tara", "stream_format": "sse", **changes}
    with httpx.stream("POST", f"{app.base_url}/v1/audio/speech", headers=app.headers(),
                      json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return list(response.iter_lines())


def test_not_streamed_is_the_same_events_with_a_length(frontend):
    response = httpx.post(f"{frontend.base_url}/v1/audio/speech", headers=frontend.headers(),
                          json={"input": TEXT, "response_format": "wav", "stream_format": "sse",
                                "stream": False}, timeout=30)
    assert response.headers["content-length"] == str(len(response.content))
    events = sse_events(response.text.split("\n")[:-1])
    check_types(events)
    # The whole file is known: the WAV carries its exact sizes.
    assert wav_samples(audio_of(events), streaming=False).size == FRAMES * SAMPLES_PER_FRAME


def test_failure_before_the_first_event_is_the_usual_json_error(frontend, fake_backend):
    fake_backend.script(Behavior.status_code(400, body='{"error": {"message": "bad prompt"}}'))
    with pytest.raises(openai.InternalServerError) as caught:
        frontend.openai(max_retries=0).audio.speech.create(
            model="orpheus", voice="tara", input=TEXT, stream_format="sse")
    assert caught.value.status_code == 502
    assert "bad prompt" in caught.value.message


def test_failure_after_the_first_event_is_an_error_event_and_a_clean_end(
        frontend, fake_backend, caplog):
    fake_backend.script(Behavior.die(after_frames=6))
    caplog.set_level(logging.INFO, logger="orpheus.frontend.access")
    lines = stream_lines(frontend, {"response_format": "pcm"})  # no transport error
    events = sse_events(lines)
    *deltas, error = events
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    assert error["type"] == "error"  # and no speech.audio.done
    SpeechStreamError.model_validate(error)
    assert error["error"]["code"] == "backend_error"
    assert "broke mid-stream" in error["error"]["message"]
    (access,) = access_records(caplog)
    assert access.outcome == "aborted" and access.levelno == logging.ERROR
