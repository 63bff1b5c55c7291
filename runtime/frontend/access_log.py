"""Per-request context and the access log: one JSON line per request with its id, status,
latency, time to first byte and, for speech, the audio it produced.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware, which buffers streamed bodies through a
memory stream and hides disconnects) so that it sees exactly when bytes leave.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.frontend.logging_setup import REQUEST_ID

__all__ = ["AccessLogMiddleware", "request_id_from_headers"]

log = logging.getLogger("orpheus.frontend.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_from_headers(headers: dict[bytes, bytes]) -> str:
    """The caller's X-Request-ID if it is sane, else Cloud Run's trace id, else a new one."""
    given = headers.get(b"x-request-id", b"").decode("latin-1").strip()
    if _SAFE_ID.match(given):
        return given
    trace = headers.get(b"x-cloud-trace-context", b"").decode("latin-1").split("/")[0].strip()
    if _SAFE_ID.match(trace):
        return trace
    return uuid.uuid4().hex


def _state_fields(scope: Scope, stats_name: str) -> dict[str, object]:
    """The caller's key NAME (never the key) and what the route reported, from the scope's
    state."""
    state = scope.get("state", {})
    fields: dict[str, object] = {}
    if state.get("api_key_name") is not None:
        fields["key"] = state["api_key_name"]
    stats = state.get(stats_name)
    if stats is not None:
        fields.update(stats.fields())
    return fields


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        request_id = request_id_from_headers(headers)
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 0
        first_byte: float | None = None
        body_bytes = 0
        complete = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_byte, body_bytes, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body and first_byte is None:
                    first_byte = time.perf_counter()
                body_bytes += len(body)
                if not message.get("more_body", False):
                    complete = True
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not status:
                # No response started: a crash (500) or a client that left first (499, as nginx).
                status = 500 if error is not None else 499
            fields: dict[str, object] = {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000.0, 1),
                "ttfb_ms": None if first_byte is None else round((first_byte - start) * 1000.0, 1),
                "response_bytes": body_bytes,
                "complete": complete,
            }
            fields.update(_state_fields(scope, "speech_stats"))
            # An event stream that failed mid-way ends cleanly (an error event), but it failed.
            aborted = fields.get("outcome") == "aborted"
            if error is not None or status >= 500 or aborted:
                level = logging.ERROR
            elif not complete:  # aborted mid-stream or the client left: worth a look, not a page
                level = logging.WARNING
            else:
                level = logging.INFO
            message = f"{scope.get('method')} {scope.get('path')} {status}"
            log.log(level, message, extra=fields, exc_info=error)
            REQUEST_ID.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One line per WebSocket connection, when it ends: 101 if it was accepted, its close
        code and reason, the key's name, and what was spoken (speech_socket.SocketStats)."""
        request_id = request_id_from_headers(dict(scope.get("headers", [])))
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 0
        closed: dict[str, object] = {}

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            elif message["type"] == "websocket.close":
                status = status or 403  # closed before it was accepted
                closed.setdefault("close_code", message.get("code", 1000))
                closed.setdefault("close_reason", message.get("reason") or "")
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                closed.setdefault("close_code", message.get("code", 1000))
                closed.setdefault("close_reason", "closed by the client")
            return message

        error: BaseException | None = None
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            fields: dict[str, object] = {
                "method": "WEBSOCKET",
                "path": scope.get("path"),
                "status": status or 500,
                "latency_ms": round((time.perf_counter() - start) * 1000.0, 1),
                **closed,
            }
            fields.update(_state_fields(scope, "socket_stats"))
            code = closed.get("close_code")
            failed = error is not None or (isinstance(code, int) and code >= 4500)
            level = logging.ERROR if failed else logging.INFO
            if not failed and isinstance(code, int) and code >= 4000:
                level = logging.WARNING
            log.log(level, f"WEBSOCKET {scope.get('path')} {code}", extra=fields, exc_info=error)
            REQUEST_ID.reset(token)
