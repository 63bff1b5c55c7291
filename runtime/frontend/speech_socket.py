"""WebSocket `/v1/audio/speech/stream`: text in as a language model writes it, audio out as soon
as a unit of it is speakable.

The conversation (README "Streaming text in" has the client's view):

    client                                          server
    (handshake, key in X-API-Key or Authorization)  checks the key
    {"type": "start", "voice", "response_format",   {"type": "ready", "format", "sample_rate",
     "speed", "model"[, "api_key"]}                  "voice"}
    {"type": "text", "text": "Hello th"}            ...
    {"type": "text", "text": "ere. How"}            binary messages: the audio of "Hello there."
    {"type": "flush"}                               (speaks "How" now, mid-sentence)
    {"type": "end"}                                 the rest of the audio, then {"type": "done",
                                                     "utterance", "audio_seconds",
                                                     "time_to_first_audio_ms", "characters",
                                                     "segments"}
    {"type": "text", ...}                           the next utterance ...

Text is cut into units by `TextStream` (runtime/codec/text_stream.py: sentence ends, or a clause
once a sentence is long or slow); each unit is one backend request through `SpeechService`, in
order, one at a time per connection; the units queued while one is spoken are packed into the
next, up to ORPHEUS_SEGMENT_CHARS. An utterance's audio is one file of the chosen format (its
units joined with the same crossfade as long input), sent as binary messages as it is decoded.

Limits: while an utterance is spoken it counts as one stream of its key, and starting one counts
as one request (limits.py); each unit waits for a backend slot like a POST does. Backpressure:
audio is sent no faster than the client reads (uvicorn's send waits for the socket), so a slow
reader slows the backend request down through the bounded queues behind it; a client that reads
nothing for ORPHEUS_API_TIMEOUT seconds is disconnected. Text waiting to be spoken is bounded
too: past ORPHEUS_MAX_INPUT_CHARS the server stops reading messages until the voice catches up.

Every error ends the connection with an `error` message in OpenAI's shape, then a close code
(`CLOSE_CODES`): 4000 + the HTTP status the same failure has on POST /v1/audio/speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from runtime.codec.protocol import SAMPLE_RATE
from runtime.codec.text_stream import TextStream
from runtime.frontend.auth import check_api_key, presented_key
from runtime.frontend.decode_pool import FIRST_AUDIO, STEADY
from runtime.frontend.errors import APIError, error_body
from runtime.frontend.joined_audio import JoinedAudio
from runtime.frontend.key_store import KeyStore
from runtime.frontend.limits import BackendSlots, KeyLimits, Lease
from runtime.frontend.schemas import SpeechRequest
from runtime.frontend.speech import SpeechService, SpeechStats

__all__ = ["CLOSE_CODES", "SOCKET_PATH", "speech_socket"]

log = logging.getLogger("orpheus.frontend.socket")

SOCKET_PATH = "/v1/audio/speech/stream"
START_TIMEOUT_S = 10.0  # the start message must come this soon after the handshake
TIME_LIMIT_MARGIN_S = 5.0  # close this long before the platform's request timeout cuts us off
MAX_QUEUED = 64  # units and end markers waiting to be spoken, beyond the text bound

CLOSE_TIME_LIMIT = 4000
CLOSE_CODES: dict[int, str] = {
    1000: "normal closure (the client closed)",
    1009: "a message larger than the request body limit",
    1012: "the instance is shutting down (a new deploy, or scale-in): reconnect",
    CLOSE_TIME_LIMIT: "the connection reached the platform's request timeout: reconnect",
    4400: "bad message: not JSON, unknown type or field, invalid option",
    4401: "missing or wrong API key",
    4408: "timeout: no start message, or the client stopped reading audio",
    4429: "over this key's limit of concurrent streams or requests per minute",
    4500: "internal error",
    4502: "the backend failed (died, answered without audio)",
    4503: "the backend is unavailable, or every slot is busy and the queue is full",
    4504: "the backend sent no audio in time",
}
_START_FIELDS = frozenset({"type", "model", "voice", "response_format", "speed", "api_key"})


class SocketError(Exception):
    """Ends the connection: an error message in OpenAI's shape, then the close code."""

    def __init__(self, code: int, error: APIError) -> None:
        super().__init__(error.message)
        self.code = code
        self.error = error

    @staticmethod
    def of(error: APIError) -> SocketError:
        code = 4000 + error.status if 4000 + error.status in CLOSE_CODES else 4500
        return SocketError(code, error)


def _samples(pcm: bytes) -> np.ndarray:
    """A unit's PCM response (s16le) as samples, without a copy."""
    return np.frombuffer(pcm, dtype="<i2")


def _bad(message: str, param: str | None = None) -> SocketError:
    return SocketError(4400, APIError(400, message, param=param, code="invalid_message"))


@dataclass
class SocketStats:
    """What the access log reports about one connection: a POST's speech fields, summed over
    its utterances, and when the first one was first heard."""

    speech: SpeechStats = field(default_factory=SpeechStats)
    utterances: int = 0
    first_audio_ms: float | None = None

    def add(self, unit: SpeechStats) -> None:
        total = self.speech
        total.frames += unit.frames
        total.invalid_tokens += unit.invalid_tokens
        total.dropped_tokens += unit.dropped_tokens
        total.truncated_segments += unit.truncated_segments
        if unit.model_was is not None and total.model_was is None:
            # The first unit that waited for its model to load: the switch a caller felt.
            total.model_was, total.model_load_ms = unit.model_was, unit.model_load_ms

    def fields(self) -> dict[str, Any]:
        return {**self.speech.fields(), "utterances": self.utterances,
                "first_audio_ms": self.first_audio_ms}


@dataclass
class _Utterance:
    number: int
    started: float  # loop time of its first text message (or of its end, if it had none)
    audio: JoinedAudio
    lease: Lease | None = None
    chars: int = 0
    segments: int = 0
    first_audio: float | None = None


class _End:
    """Marks the end of an utterance in the work queue."""


@dataclass
class _Work:
    """Text (units) and end markers from the reader to the speaker, in order, bounded."""

    bound: int
    items: deque[str | _End] = field(default_factory=deque)
    chars: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, item: str | _End) -> None:
        self.items.append(item)
        self.chars += len(item) if isinstance(item, str) else 0
        self.changed.set()

    def full(self, extra: int) -> bool:
        return self.chars + extra > self.bound or len(self.items) >= MAX_QUEUED

    async def take(self, max_chars: int) -> str | _End:
        """The next end marker, or the next unit with the units queued behind it (up to
        `max_chars`)."""
        while not self.items:
            self.changed.clear()
            await self.changed.wait()
        first = self.items.popleft()
        if isinstance(first, _End):
            self.changed.set()
            return first
        parts = [first]
        size = len(first)
        while self.items and isinstance(self.items[0], str):
            following = self.items[0]
            if size + 1 + len(following) > max_chars:
                break
            parts.append(following)
            size += 1 + len(following)
            self.items.popleft()
        self.chars -= sum(len(p) for p in parts)
        self.changed.set()
        return " ".join(parts)


async def speech_socket(websocket: WebSocket) -> None:
    await _SpeechSocket(websocket).run()


class _SpeechSocket:
    def __init__(self, websocket: WebSocket) -> None:
        state = websocket.app.state
        self.ws = websocket
        self.settings = state.settings
        self.keys: KeyStore = state.api_keys
        self.service: SpeechService = state.speech
        self.key_limits: KeyLimits = state.key_limits
        self.slots: BackendSlots = state.backend_slots
        self.loop = asyncio.get_running_loop()
        self.stats = SocketStats()
        websocket.scope.setdefault("state", {})["socket_stats"] = self.stats  # for the access log
        self.key_name: str | None = None
        self.options: SpeechRequest | None = None
        self.fmt, self.voice, self.speed = "", "", 1.0  # set by the start message
        self.text = TextStream(max_chars=self.settings.segment_chars)
        self.work = _Work(bound=max(self.settings.max_input_chars, 2 * self.settings.segment_chars))
        self.starts: deque[float] = deque()  # start times of the utterances the reader opened
        self.in_utterance = False
        self.utterance: _Utterance | None = None
        self._receiving: asyncio.Task[Any] | None = None

    # -- the connection ---------------------------------------------------------------------
    async def run(self) -> None:
        code, reason = 1000, ""
        outcome = self.stats.speech
        try:
            await self._session()
        except SocketError as exc:
            code, reason = exc.code, exc.error.message
            outcome.outcome, outcome.error = "failed", exc.error.message
            await self._send_error(exc.error)
        except _ClientGone:
            # Mid-utterance, the client left before it was spoken (as a POST's "cancelled").
            outcome.outcome = "cancelled" if self.utterance is not None else "complete"
        except asyncio.CancelledError:
            outcome.outcome = "cancelled"
            raise
        finally:
            if self._receiving is not None:
                self._receiving.cancel()
            if self.utterance is not None and self.utterance.lease is not None:
                self.utterance.lease.release()
        if self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                # A close reason is at most 123 bytes.
                await self.ws.close(code, reason.encode()[:123].decode("utf-8", "ignore"))

    async def _session(self) -> None:
        headers = self.ws.headers
        # The key is checked at the handshake when it came with it (a browser cannot send
        # headers: it puts the key in the start message). Never from the URL, which is logged.
        failure: APIError | None = None
        if presented_key(headers) is not None:
            try:
                self.key_name = check_api_key(headers, await self.keys.current())
            except APIError as exc:
                failure = exc
        self.ws.scope["state"]["api_key_name"] = self.key_name
        await self.ws.accept()
        if failure is not None:
            raise SocketError(4401, failure)
        await self._start(await self._first_message())
        reader = asyncio.create_task(self._read(), name="orpheus-socket-read")
        speaker = asyncio.create_task(self._speak(), name="orpheus-socket-speak")
        limit = self.settings.request_timeout
        timeout = None if limit is None else max(1.0, limit - TIME_LIMIT_MARGIN_S)
        try:
            done, _ = await asyncio.wait({reader, speaker}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, speaker):
                task.cancel()
            await asyncio.gather(reader, speaker, return_exceptions=True)
        if not done:
            raise SocketError(CLOSE_TIME_LIMIT, APIError(
                503, f"the connection reached its time limit ({limit:g} s, the platform's request "
                     "timeout); reconnect to continue", type="server_error", code="time_limit"))
        for task in done:
            task.result()  # the reader ends only when the client left; errors are raised here

    async def _first_message(self) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self._receive(), START_TIMEOUT_S)
        except TimeoutError:
            raise SocketError(4408, APIError(
                408, f"no start message within {START_TIMEOUT_S:g} s", code="timeout")) from None
        if message.get("type") != "start":
            raise _bad("the first message must be {\"type\": \"start\", ...}", "type")
        return message

    async def _start(self, message: dict[str, Any]) -> None:
        unknown = sorted(set(message) - _START_FIELDS)
        if unknown:
            raise _bad(f"unknown field {unknown[0]!r} in the start message", unknown[0])
        if self.key_name is None:
            key = message.get("api_key")
            try:
                self.key_name = check_api_key(
                    {"x-api-key": key} if isinstance(key, str) else {}, await self.keys.current())
            except APIError as exc:
                raise SocketError(4401, APIError(
                    401, exc.message + " (or as \"api_key\" in the start message)",
                    code=exc.code)) from None
            self.ws.scope["state"]["api_key_name"] = self.key_name
        options = {k: v for k, v in message.items() if k not in ("type", "api_key")}
        try:
            # Validated as a speech request would be; the text comes later.
            self.options = SpeechRequest(**options, input="-")
            job = self.service.prepare(self.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ()))
            raise _bad(f"invalid {param!r}: {first.get('msg')}", param) from None
        except APIError as exc:
            raise SocketError(4400, exc) from None
        self.fmt, self.voice, self.speed = job.fmt, job.voice, job.speed
        self.stats.speech.voice, self.stats.speech.fmt = job.voice, job.fmt
        await self._send_json({"type": "ready", "format": job.fmt, "sample_rate": SAMPLE_RATE,
                               "voice": job.voice})

    # -- reading text -----------------------------------------------------------------------
    async def _receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message as a JSON object; {} when `timeout` passed first."""
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self.ws.receive())
        done, _ = await asyncio.wait({self._receiving}, timeout=timeout)
        if not done:
            return {}
        message, self._receiving = self._receiving.result(), None
        if message["type"] == "websocket.disconnect":
            raise _ClientGone
        text = message.get("text")
        if text is None:
            raise _bad("send text messages holding JSON objects, not binary ones")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise _bad("a message is not valid JSON") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
            raise _bad("a message must be a JSON object with a \"type\"", "type")
        return parsed

    async def _read(self) -> None:
        while True:
            while self.work.full(self.text.pending):  # the voice is behind: stop reading
                self.work.changed.clear()
                await self.work.changed.wait()
            deadline = self.text.deadline()
            message = await self._receive(
                None if deadline is None else max(0.0, deadline - self.loop.time()))
            now = self.loop.time()
            kind = message.get("type")
            if kind is None:  # the time rule may have completed a clause
                self._queue(self.text.poll(now))
            elif kind == "text":
                text = message.get("text")
                if not isinstance(text, str) or set(message) != {"type", "text"}:
                    raise _bad("a text message is {\"type\": \"text\", \"text\": <string>}",
                               "text")
                if not self.in_utterance and text.strip():
                    self.in_utterance = True
                    self.starts.append(now)
                self._queue(self.text.feed(text, now))
            elif kind == "flush":
                self._queue(self.text.flush())
            elif kind == "end":
                self._queue(self.text.flush())
                if not self.in_utterance:
                    self.starts.append(now)
                self.in_utterance = False
                self.work.put(_End())
            elif kind == "start":
                raise _bad("the session has already started; open a new connection to change "
                           "the voice or format", "type")
            else:
                raise _bad(f"unknown message type {kind!r}; expected text, flush or end", "type")

    def _queue(self, units: list[str]) -> None:
        for unit in units:
            self.work.put(unit)

    # -- speaking ---------------------------------------------------------------------------
    async def _speak(self) -> None:
        while True:
            item = await self.work.take(self.settings.segment_chars)
            utterance = self.utterance or self._open_utterance()
            if isinstance(item, _End):
                await self._finish(utterance)
            else:
                await self._speak_unit(utterance, item)

    def _open_utterance(self) -> _Utterance:
        self.stats.utterances += 1
        first = self.stats.utterances == 1
        self.utterance = _Utterance(self.stats.utterances, self.starts.popleft(),
                                    JoinedAudio(self.fmt, self.speed, skip_header=not first))
        return self.utterance

    async def _speak_unit(self, utterance: _Utterance, text: str) -> None:
        assert self.options is not None and self.key_name is not None
        if utterance.lease is None:
            # The utterance becomes a stream of its key with its first unit (429 over a limit).
            try:
                utterance.lease = self.key_limits.admit(self.key_name)
            except APIError as exc:
                raise SocketError.of(exc) from None
        request = self.options.model_copy(update={"input": text, "response_format": "pcm",
                                                  "speed": 1.0, "stream": True})
        stats = SpeechStats()
        try:
            job = self.service.prepare(request)
            slot = await self.slots.acquire()
        except APIError as exc:
            raise SocketError.of(exc) from None
        try:
            stream = self.service.start(job, stats)
            try:
                await self._send_audio(utterance, await self._call(
                    utterance, utterance.audio.push, _samples(await stream.first())))
                async for pcm in stream.rest():
                    await self._send_audio(utterance, await self._call(
                        utterance, utterance.audio.push, _samples(pcm)))
            finally:
                await stream.aclose()
        except APIError as exc:
            raise SocketError.of(exc) from None
        finally:
            slot.release()
        utterance.chars += job.chars
        utterance.segments += stats.segments
        self.stats.add(stats)
        await self._send_audio(utterance, await self._call(utterance, utterance.audio.end_segment))

    async def _finish(self, utterance: _Utterance) -> None:
        await self._send_audio(utterance, await self._call(utterance, utterance.audio.finish))
        if utterance.lease is not None:
            utterance.lease.release()
        self.utterance = None
        first_ms = (None if utterance.first_audio is None
                    else round((utterance.first_audio - utterance.started) * 1000.0, 1))
        total = self.stats.speech
        total.chars += utterance.chars
        total.segments += utterance.segments
        total.samples += utterance.audio.samples
        if self.stats.first_audio_ms is None:
            self.stats.first_audio_ms = first_ms
        await self._send_json({
            "type": "done",
            "utterance": utterance.number,
            "audio_seconds": round(utterance.audio.samples / SAMPLE_RATE, 3),
            "time_to_first_audio_ms": first_ms,
            "characters": utterance.chars,
            "segments": utterance.segments,
        })

    async def _call(self, utterance: _Utterance, fn: Any, *args: Any) -> bytes:
        priority = FIRST_AUDIO if utterance.first_audio is None else STEADY
        data: bytes = await self.service.call(priority, fn, *args)
        return data

    # -- sending ----------------------------------------------------------------------------
    async def _send_audio(self, utterance: _Utterance, data: bytes) -> None:
        if not data:
            return
        await self._send({"type": "websocket.send", "bytes": data})
        if utterance.first_audio is None:
            utterance.first_audio = self.loop.time()

    async def _send_json(self, payload: dict[str, Any]) -> None:
        await self._send({"type": "websocket.send", "text": json.dumps(payload)})

    async def _send(self, message: dict[str, Any]) -> None:
        """Send, waiting while the client reads slowly, but not forever."""
        limit = self.settings.api_timeout
        try:
            await asyncio.wait_for(self.ws.send(message), limit)
        except WebSocketDisconnect:
            raise _ClientGone from None  # it left while we were speaking
        except TimeoutError:
            raise SocketError(4408, APIError(
                408, f"the client read no audio for {limit:g} s (ORPHEUS_API_TIMEOUT)",
                code="timeout")) from None

    async def _send_error(self, error: APIError) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        log.warning("speech socket closed: %s", error.message, extra={"status": error.status})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.send_text(json.dumps(
                {"type": "error", **error_body(error.message, error.type, error.param,
                                               error.code)})), 5.0)


class _ClientGone(Exception):
    """The client closed the connection."""

