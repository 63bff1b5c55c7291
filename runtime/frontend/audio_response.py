"""The ASGI response for speech: no status line until there is audio, then chunked bytes.

Why not Starlette's StreamingResponse: it commits to 200 before the first chunk exists, so a
backend that is down would yield a 200 with an empty body. Here:

* the request first waits for a backend slot (limits.py: a bounded queue, 503 when it is full or
  the wait runs out), and only then starts generating;
* before the first audio bytes, a failure becomes its OpenAI-shaped 502/503/504 JSON error;
* after them, a failure ends the response the way its framing says: raw audio ends *without* the
  terminating zero-length chunk, so the client sees a truncated transfer (not a short file it
  might take for complete); an event stream (sse.py) sends an `error` event and ends. Either way it
  is logged with the request id;
* a client that disconnects at any point, queued or streaming, cancels the producer and with it
  the backend request (waiting for the next write to fail would keep a GPU slot busy for nothing);
* with `stream=false` the whole body is collected first and sent with a Content-Length; a WAV then
  carries its exact sizes.

How audio is framed (raw bytes, or server-sent events) is the `Framing` the route picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runtime.codec.encoders import CONTENT_TYPES, wav_header
from runtime.codec.protocol import SAMPLE_RATE
from runtime.frontend.backend_client import BACKEND_USAGE, TokenUsage
from runtime.frontend.errors import APIError, error_response
from runtime.frontend.limits import Lease
from runtime.frontend.speech import SpeechStats, SpeechStream

__all__ = ["AudioStreamResponse", "Framing", "RawAudio", "whole_file"]

log = logging.getLogger("orpheus.frontend.response")

_WAV_HEADER_BYTES = 44


def whole_file(fmt: str, audio: bytes) -> bytes:
    """The complete file: a streamed WAV's "unknown" sizes replaced by the real ones."""
    if fmt == "wav" and len(audio) >= _WAV_HEADER_BYTES:
        return (wav_header(SAMPLE_RATE, data_size=len(audio) - _WAV_HEADER_BYTES)
                + audio[_WAV_HEADER_BYTES:])
    return audio


class Framing(Protocol):
    """How the encoded audio of one response travels in its body."""

    def content_type(self, fmt: str) -> str: ...

    def chunk(self, audio: bytes) -> bytes: ...

    def whole(self, fmt: str, audio: bytes, stats: SpeechStats, usage: TokenUsage) -> bytes: ...

    def end(self, stats: SpeechStats, usage: TokenUsage) -> bytes: ...

    def failure(self, exc: APIError) -> bytes | None:
        """What to send when the stream fails after it started; None: cut the transfer."""
        ...


class RawAudio:
    """`stream_format: "audio"`: the audio file itself."""

    def content_type(self, fmt: str) -> str:
        return CONTENT_TYPES[fmt]

    def chunk(self, audio: bytes) -> bytes:
        return audio

    def whole(self, fmt: str, audio: bytes, stats: SpeechStats, usage: TokenUsage) -> bytes:
        return whole_file(fmt, audio)

    def end(self, stats: SpeechStats, usage: TokenUsage) -> bytes:
        return b""

    def failure(self, exc: APIError) -> bytes | None:
        return None


class AudioStreamResponse(Response):
    # A Response subclass only so FastAPI passes it through untouched; none of Response's body
    # handling is used.
    def __init__(
        self,
        start: Callable[[], SpeechStream],
        fmt: str,
        stats: SpeechStats,
        *,
        buffered: bool,
        framing: Framing | None = None,
        slot: Callable[[], Awaitable[Lease]] | None = None,
        leases: Sequence[Lease] = (),
    ) -> None:
        self.background = None
        self.status_code = 200
        self._start = start
        self.stream: SpeechStream | None = None
        self.stats = stats
        self.fmt = fmt
        self.buffered = buffered
        self.framing: Framing = framing or RawAudio()
        self._slot = slot
        self._leases = list(leases)
        self.usage = TokenUsage()

    def _response_headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", self.framing.content_type(self.fmt).encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        # Proxies (and Cloud Run's front end) must not buffer a live stream.
        headers.append((b"cache-control", b"no-store"))
        headers.append((b"x-accel-buffering", b"no"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.create_task(self._respond(scope, receive, send), name="orpheus-respond")
        watcher = asyncio.create_task(_wait_for_disconnect(receive), name="orpheus-disconnect")
        try:
            done, _ = await asyncio.wait({body, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if body in done:
                body.result()
                return
            self.stats.outcome = "cancelled"
            log.info("client disconnected; cancelling the backend request")
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await body
        finally:
            watcher.cancel()
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.stream is not None:
                await self.stream.aclose()
            for lease in self._leases:
                lease.release()

    async def _open(self) -> SpeechStream:
        """Wait for a backend slot (bounded), then start generating."""
        if self._slot is not None:
            self._leases.append(await self._slot())
        # The producer task inherits this context: the backend client adds its usage there.
        BACKEND_USAGE.set(self.usage)
        self.stream = self._start()
        return self.stream

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        try:
            stream = await self._open()
            first = await stream.first()
            if self.buffered:
                parts = [first]
                parts += [chunk async for chunk in stream.rest()]
                body = self.framing.whole(self.fmt, b"".join(parts), stats, self.usage)
                await self._send_whole(body, send)
                stats.outcome = "complete"
                return
        except APIError as exc:
            stats.outcome, stats.error = "failed", exc.message
            log.warning("no audio: %s", exc.message, extra={"status": exc.status})
            await error_response(exc)(scope, receive, send)
            return

        await send(
            {"type": "http.response.start", "status": 200, "headers": self._response_headers(None)}
        )
        await send({"type": "http.response.body", "body": self.framing.chunk(first),
                    "more_body": True})
        try:
            async for chunk in stream.rest():
                await send({"type": "http.response.body", "body": self.framing.chunk(chunk),
                            "more_body": True})
        except APIError as exc:
            stats.outcome, stats.error = "aborted", exc.message
            log.error("audio stream aborted mid-way: %s", exc.message)
            last = self.framing.failure(exc)
            if last is not None:
                await send({"type": "http.response.body", "body": last, "more_body": False})
            # Otherwise returning without the final body message makes the server drop the
            # connection: the client's chunked read fails instead of ending cleanly on partial
            # audio.
            return
        await send({"type": "http.response.body", "body": self.framing.end(stats, self.usage),
                    "more_body": False})
        stats.outcome = "complete"

    async def _send_whole(self, data: bytes, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._response_headers(len(data)),
            }
        )
        await send({"type": "http.response.body", "body": data, "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
