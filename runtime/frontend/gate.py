"""`RequestGate`: what every /v1 request must pass before the app reads its body.

FastAPI reads and JSON-parses a request body before it runs route dependencies, so with the key
check only in a dependency an anonymous caller's body would be buffered and parsed (and a malformed
one answered with a parse error instead of a 401). This pure ASGI middleware therefore checks the
key from the headers first, then reads the body itself up to `Settings.max_body_bytes` (413 beyond
that, from the declared Content-Length when there is one, else as soon as the chunks pass it) and
hands the app the bytes it read. Nothing is read from a caller without a key.

It guards HTTP requests only (and /openapi.json besides /v1): the speech WebSocket checks the key
at its handshake itself (speech_socket.py), and the request head's size is bounded by the server
(serving.py), before any of this runs.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.frontend.auth import check_api_key
from runtime.frontend.errors import APIError, error_response

__all__ = ["RequestGate"]

GUARDED_PREFIX = "/v1"
# Outside /v1 but behind the key all the same: the API's own description.
GUARDED_PATHS = frozenset({"/openapi.json"})


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"request body is larger than {limit} bytes",
        code="request_too_large",
        headers={"Connection": "close"},
    )


async def _read_body(receive: Receive, headers: Headers, limit: int) -> Receive:
    """Read the whole body (at most `limit` bytes) and return a `receive` that replays it."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: let the app see that
            first: Message = message
            break
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _too_large(limit)
        chunks.append(body)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break

    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()  # after the body: the disconnect, when it comes

    return replay


class RequestGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        guarded = (path == GUARDED_PREFIX or path.startswith(GUARDED_PREFIX + "/")
                   or path in GUARDED_PATHS)
        if not guarded:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        settings = state.settings
        headers = Headers(scope=scope)
        try:
            # The key store re-reads a mounted key file when its copy is stale (key_store.py).
            key_name = check_api_key(headers, await state.api_keys.current())
            receive = await _read_body(receive, headers, settings.max_body_bytes)
        except APIError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key_name"] = key_name  # read by the access log
        await self.app(scope, receive, send)
