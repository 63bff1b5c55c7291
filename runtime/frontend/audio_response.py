"""The ASGI response for speech: no status line until there is audio, then chunked bytes.

Why not Starlette's StreamingResponse: it commits to 200 before the first chunk exists, so a
backend that is down would yield a 200 with an empty body. Here:

* before the first audio bytes, a failure becomes its OpenAI-shaped 502/503/504 JSON error;
* after them, a failure ends the response *without* the terminating zero-length chunk, so the client
  sees a truncated transfer (not a short file it might take for complete), and it is logged with the
  request id;
* a client that disconnects at any point cancels the producer and with it the backend request
  (waiting for the next write to fail would keep a GPU slot busy for nothing);
* with `stream=false` the whole file is collected first and sent with a Content-Length; a WAV then
  carries its exact sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runtime.codec.encoders import CONTENT_TYPES, wav_header
from runtime.codec.protocol import SAMPLE_RATE
from runtime.frontend.errors import APIError, error_response
from runtime.frontend.speech import SpeechStream

__all__ = ["AudioStreamResponse"]

log = logging.getLogger("orpheus.frontend.response")

_WAV_HEADER_BYTES = 44


class AudioStreamResponse(Response):
    # A Response subclass only so FastAPI passes it through untouched; none of Response's body
    # handling is used.
    def __init__(self, stream: SpeechStream, fmt: str, *, buffered: bool) -> None:
        self.background = None
        self.status_code = 200
        self.stream = stream
        self.fmt = fmt
        self.buffered = buffered

    def _response_headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", CONTENT_TYPES[self.fmt].encode())]
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
            self.stream.stats.outcome = "cancelled"
            log.info("client disconnected; cancelling the backend request")
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await body
        finally:
            watcher.cancel()
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.stream.aclose()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stream.stats
        try:
            first = await self.stream.first()
            if self.buffered:
                parts = [first]
                parts += [chunk async for chunk in self.stream.rest()]
                await self._send_whole(b"".join(parts), send)
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
        await send({"type": "http.response.body", "body": first, "more_body": True})
        try:
            async for chunk in self.stream.rest():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except APIError as exc:
            stats.outcome, stats.error = "aborted", exc.message
            # Returning without the final body message makes the server drop the connection: the
            # client's chunked read fails instead of ending cleanly on partial audio.
            log.error("audio stream aborted mid-way: %s", exc.message)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        stats.outcome = "complete"

    async def _send_whole(self, data: bytes, send: Send) -> None:
        if self.fmt == "wav" and len(data) >= _WAV_HEADER_BYTES:
            # The whole file is known: replace the streaming header's "unknown" sizes.
            data = (
                wav_header(SAMPLE_RATE, data_size=len(data) - _WAV_HEADER_BYTES)
                + data[_WAV_HEADER_BYTES:]
            )
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
