"""The speech WebSocket (/v1/audio/speech/stream) against the real app and the scripted backend
at 100 tokens/s: text streamed in at a language model's pace, audio out per speakable unit,
several utterances per connection, backpressure, and a documented close code for every error."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from runtime.frontend.speech_socket import CLOSE_CODES
from tests.fixtures.fake_backend import Behavior
from tests.fixtures.socket_client import Send, converse, words
from tests.frontend.audio import SAMPLES_PER_FRAME, decoded_seconds, pcm_samples, wav_samples
from tests.frontend.logs import access_records

FRAMES = 10
CROSSFADE = 480  # 20 ms at 24 kHz, removed at each join between the units of an utterance
PACE = Behavior.stream(FRAMES, tokens_per_second=100)
START = Send({"type": "start", "voice": "tara", "response_format": "pcm"})
END = Send({"type": "end"})


def ws_url(app) -> str:
    return app.base_url.replace("http://", "ws://") + "/v1/audio/speech/stream"


def talk(app, script, **kw):
    return asyncio.run(converse(ws_url(app), script, headers=kw.pop("headers", app.headers()),
                                **kw))


def prompts(backend) -> list[str]:
    prefix, suffix = "<|audio|>tara: ", "<|eot_id|>"
    out = []
    for request in backend.completions:
        prompt = request.body["prompt"]
        assert prompt.startswith(prefix) and prompt.endswith(suffix)
        out.append(prompt[len(prefix):-len(suffix)])
    return out


def utterance_samples(units: int) -> int:
    return units * FRAMES * SAMPLES_PER_FRAME - (units - 1) * CROSSFADE


def test_words_at_a_language_models_pace_are_spoken_unit_by_unit(frontend, fake_backend):
    fake_backend.default = PACE
    first = "Hello there, my friend."
    rest = ("I have been thinking about what you told me yesterday, and I believe you were "
            "right about almost everything that matters.")
    # 20 words a second, with a pause to think after the ninth word.
    script = [START, *words(f"{first} {rest}", per_second=20, pause_after={9: 0.5}), END]
    result = talk(frontend, script)

    assert result.close_code == 1000, result.messages
    ready, done = result.messages
    assert ready == {"type": "ready", "format": "pcm", "sample_rate": 24000, "voice": "tara"}
    spoken = prompts(fake_backend)
    # The first sentence went to the backend alone, as soon as it was complete, and the rest
    # followed in units; nothing was lost or repeated.
    assert spoken[0] == first
    assert " ".join(spoken) == f"{first} {rest}"
    assert len(spoken) >= 2
    # First audio within the first unit plus the backend's first frames: long before the
    # client had finished writing the text (it still had the whole second sentence to send).
    last_word_sent = result.sent[-2][0]
    assert result.first_audio_at() < last_word_sent
    samples = pcm_samples(result.audio()).size
    assert samples == utterance_samples(len(spoken))
    assert done == {
        "type": "done", "utterance": 1, "audio_seconds": round(samples / 24000, 3),
        "time_to_first_audio_ms": done["time_to_first_audio_ms"],
        "characters": sum(len(unit) for unit in spoken), "segments": len(spoken),
    }
    assert 0 < done["time_to_first_audio_ms"] < (last_word_sent - result.started) * 1000


def test_flush_speaks_what_is_pending(frontend, fake_backend):
    fake_backend.default = PACE
    script = [START, Send({"type": "text", "text": "Hold on while I"}), Send({"type": "flush"}),
              Send({"type": "text", "text": " check."}, after_s=2.0), END]
    result = talk(frontend, script)
    assert prompts(fake_backend) == ["Hold on while I", "check."]
    # The flushed words were spoken before the rest of the sentence was even written.
    assert result.first_audio_at() < result.sent[3][0]
    assert result.done[0]["segments"] == 2


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
def test_a_conversation_is_its_utterances_one_after_another(frontend, fake_backend, fmt):
    texts = ["Good morning.", "The weather is fine today. Shall we walk?", "Goodbye."]
    script = [Send({"type": "start", "voice": "tara", "response_format": fmt})]
    for text in texts:
        script += [Send({"type": "text", "text": text}), END]
    result = talk(frontend, script)
    assert [d["utterance"] for d in result.done] == [1, 2, 3]
    utterances = result.utterances()
    assert b"".join(utterances) == result.audio()
    expected = [utterance_samples(done["segments"]) for done in result.done]
    for samples, done in zip(expected, result.done, strict=True):
        assert done["audio_seconds"] == round(samples / 24000, 3)
    # The first utterance is what one POST of its text returns (the backend is scripted) ...
    one_post = httpx.post(f"{frontend.base_url}/v1/audio/speech", headers=frontend.headers(),
                          json={"input": texts[0], "response_format": fmt}, timeout=30).content
    assert utterances[0] == one_post
    # ... and the conversation is one stream in the format (its header once, at the start)
    # that decodes to the utterances' audio end to end.
    whole = result.audio()
    if fmt == "pcm":
        assert [pcm_samples(u).size for u in utterances] == expected
        assert pcm_samples(whole).tolist() == [
            s for u in utterances for s in pcm_samples(u).tolist()]
    elif fmt == "wav":
        decoded = wav_samples(whole, streaming=True)
        assert decoded.size == sum(expected)
        assert decoded.tobytes() == utterances[0][44:] + b"".join(utterances[1:])
    else:
        each = [decoded_seconds(u) for u in utterances]  # each utterance decodes alone too
        assert all(abs(s - n / 24000) < 0.08 for s, n in zip(each, expected, strict=True))
        assert decoded_seconds(whole) == pytest.approx(sum(each), abs=1 / 24000)


def test_the_key_can_come_in_the_start_message(frontend):
    result = talk(frontend, [Send({"type": "start", "api_key": frontend.api_key}),
                             Send({"type": "text", "text": "Browser."}), END], headers={})
    assert result.close_code == 1000 and len(result.done) == 1


@pytest.mark.parametrize(
    ("headers", "start", "code"),
    [
        ({"X-API-Key": "sk-wrong"}, {}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-wrong"}, {}, "invalid_api_key"),
        ({}, {}, "missing_api_key"),
        ({}, {"api_key": "sk-wrong"}, "invalid_api_key"),
    ],
)
def test_a_bad_key_closes_with_4401(frontend, fake_backend, headers, start, code):
    result = talk(frontend, [Send({"type": "start", **start}),
                             Send({"type": "text", "text": "Nope."}), END], headers=headers)
    assert (result.close_code, result.errors[0]["code"]) == (4401, code)
    assert fake_backend.completions == []


def test_a_key_in_the_url_is_never_read(frontend, fake_backend):
    url = ws_url(frontend) + f"?api_key={frontend.api_key}&key={frontend.api_key}"
    result = asyncio.run(converse(url, [Send({"type": "start"}), END]))
    assert result.close_code == 4401
    assert fake_backend.completions == []


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (["not json"], None),
        ([{"voice": "tara"}], "type"),  # no type
        ([{"type": "text", "text": "Before the start."}], "type"),
        ([{"type": "start", "voice": "darth"}], "voice"),
        ([{"type": "start", "response_format": ""}], "response_format"),
        ([{"type": "start", "speed": 9}], "speed"),
        ([{"type": "start", "vioce": "tara"}], "vioce"),
        ([{"type": "start"}, {"type": "text", "text": 42}], "text"),
        ([{"type": "start"}, {"type": "shout"}], "type"),
        ([{"type": "start"}, {"type": "start"}], "type"),
    ],
)
def test_a_bad_message_closes_with_4400(frontend, fake_backend, messages, param):
    result = talk(frontend, [Send(m) for m in messages])
    assert result.close_code == 4400, result.messages
    (error,) = result.errors
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert result.close_reason and len(result.close_reason.encode()) <= 123
    assert fake_backend.completions == []


def test_a_binary_message_closes_with_4400(frontend):
    async def run() -> tuple[int | None, dict]:
        async with connect(ws_url(frontend), additional_headers=frontend.headers()) as ws:
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()  # ready
            await ws.send(b"\x00\x01")
            error = json.loads(await ws.recv())
            await ws.wait_closed()
            return ws.close_code, error

    code, error = asyncio.run(run())
    assert code == 4400 and error["type"] == "error"


def test_backend_death_mid_utterance_closes_with_4502(frontend, fake_backend):
    fake_backend.script(Behavior.die(after_frames=5))
    result = talk(frontend, [START, Send({"type": "text", "text": "Doomed sentence."}), END])
    assert result.close_code == 4502
    assert result.errors[0]["code"] == "backend_error"
    assert len(result.audio()) > 0  # what had been decoded was sent first
    assert result.done == []


def test_backend_unavailable_closes_with_4503(frontend_factory, fake_backend):
    fake_backend.default = Behavior.status_code(503)
    app = frontend_factory(ORPHEUS_API_TIMEOUT="1.5")
    result = talk(app, [START, Send({"type": "text", "text": "Anyone there?"}), END])
    assert result.close_code == 4503
    assert result.errors[0]["code"] == "backend_unavailable"


def test_the_platforms_time_limit_closes_with_4000(frontend_factory):
    # Cloud Run ends a WebSocket at the service's request timeout; the server closes itself
    # cleanly a few seconds before (here 5.5 s - 5 s margin = 1 s at least).
    app = frontend_factory(ORPHEUS_REQUEST_TIMEOUT="5.5")
    result = talk(app, [START, Send({"type": "text", "text": "Long"}, after_s=30)])
    assert result.close_code == 4000
    assert "reconnect" in result.errors[0]["message"]


def test_every_close_code_is_documented():
    readme = (__import__("pathlib").Path(__file__).parents[2] / "README.md").read_text()
    for code in CLOSE_CODES:
        assert f"| {code} |" in readme, code


def test_a_slow_reader_pauses_the_backend_instead_of_buffering(frontend, fake_backend):
    # 33 MB of PCM (more than the kernel buffers between the app and a client hold: 4 MB here),
    # and 500 MB of events from the backend.
    frames = 8000
    fake_backend.script(Behavior.stream(frames, tokens_per_event=7, event_padding=64 << 10))

    async def run() -> tuple[int, int, bytes, dict]:
        # A client that reads nothing: its socket's receive window stays small and shut.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # before connect()
        sock.connect(("127.0.0.1", int(frontend.base_url.rsplit(":", 1)[1])))
        async with connect(ws_url(frontend), sock=sock, additional_headers=frontend.headers(),
                           max_size=None, max_queue=1) as ws:
            await ws.send(json.dumps({"type": "start", "response_format": "pcm"}))
            await ws.recv()
            await ws.send(json.dumps({"type": "text", "text": "A very long answer."}))
            await ws.send(json.dumps({"type": "end"}))
            while not fake_backend.completions:
                await asyncio.sleep(0.05)
            stalled = await until_steady(lambda: fake_backend.completions[0].tokens_sent)
            stalled_again = await until_steady(lambda: fake_backend.completions[0].tokens_sent)
            audio = bytearray()
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    audio += message
                else:
                    return stalled, stalled_again, bytes(audio), json.loads(message)

    stalled, stalled_again, audio, done = asyncio.run(run())
    # The backend was held up by the reader: it stopped well before the end, and stayed put.
    assert stalled == stalled_again < frames * 7 * 3 // 4
    assert pcm_samples(audio).size == frames * SAMPLES_PER_FRAME  # then everything arrived
    assert done["type"] == "done"


async def until_steady(read, period_s: float = 1.0, limit_s: float = 60.0) -> int:
    """The value once it stopped changing for `period_s`."""
    deadline = time.monotonic() + limit_s
    last = read()
    while time.monotonic() < deadline:
        await asyncio.sleep(period_s)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("still changing")


def test_an_utterance_is_a_stream_of_its_key(frontend_factory, fake_backend):
    app = frontend_factory(API_KEY_SECRET="sk-ws-a,sk-ws-b", ORPHEUS_KEY_MAX_STREAMS="1")
    fake_backend.script(Behavior.stream(2000, tokens_per_second=200))

    async def run():
        speaking = [START, Send({"type": "text", "text": "A long speech."}), END]
        async with connect(ws_url(app), additional_headers={"X-API-Key": "sk-ws-a"}) as first:
            await first.send(json.dumps(START.message))
            await first.recv()
            for send in speaking[1:]:
                await first.send(json.dumps(send.message))
            assert isinstance(await first.recv(), bytes)  # key A's utterance is being spoken
            same_key = await converse(ws_url(app), speaking, headers={"X-API-Key": "sk-ws-a"})
            other_key = await converse(ws_url(app), speaking, headers={"X-API-Key": "sk-ws-b"})
        return same_key, other_key

    same_key, other_key = asyncio.run(run())
    assert same_key.close_code == 4429
    assert same_key.errors[0]["code"] == "concurrency_limit_exceeded"
    assert other_key.close_code == 1000 and len(other_key.done) == 1


def test_one_access_log_line_per_connection(frontend, caplog):
    caplog.set_level(logging.INFO, logger="orpheus.frontend.access")
    result = talk(frontend, [START, Send({"type": "text", "text": "Logged."}), END])
    (line,) = access_records(caplog)
    fields = line.__dict__
    assert (fields["method"], fields["status"], fields["close_code"]) == ("WEBSOCKET", 101, 1000)
    assert fields["key"] == "default"  # the key's name, never the key
    assert fields["utterances"] == 1
    assert fields["audio_seconds"] == result.done[0]["audio_seconds"]
    assert frontend.api_key not in caplog.text


def test_a_client_that_leaves_mid_utterance_frees_the_backend(frontend, fake_backend, caplog):
    fake_backend.script(Behavior.stream(2000, tokens_per_second=200))  # 70 s if nobody left
    caplog.set_level(logging.INFO, logger="orpheus.frontend.access")

    async def run() -> None:
        async with connect(ws_url(frontend), additional_headers=frontend.headers()) as ws:
            await ws.send(json.dumps({"type": "start", "response_format": "pcm"}))
            await ws.recv()
            await ws.send(json.dumps({"type": "text", "text": "A long speech."}))
            await ws.send(json.dumps({"type": "end"}))
            assert isinstance(await ws.recv(), bytes)
        # Leaving the block closes the connection mid-utterance.

    asyncio.run(run())
    (request,) = fake_backend.completions
    assert request.closed.wait(10), "the backend request stayed open after the client left"
    assert request.disconnected and request.tokens_sent < 2000 * 7
    (line,) = access_records(caplog)
    assert line.__dict__["outcome"] == "cancelled" and line.levelno == logging.INFO
    assert "Traceback" not in caplog.text
