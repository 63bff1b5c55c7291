"""Every error the frontend returns, in OpenAI's shape, from one place.

`{"error": {"message", "type", "param", "code"}}` is what the OpenAI SDKs parse into their
`APIStatusError` subclasses, so clients see our message rather than a generic failure.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "APIError",
    "BackendError",
    "BackendForbidden",
    "BackendTimeout",
    "BackendUnavailable",
    "error_body",
    "error_response",
    "install_error_handlers",
]


class APIError(Exception):
    """An error with the status and OpenAI fields the client should see."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


class BackendUnavailable(APIError):
    """The backend could not be reached or kept answering 429/503 until the deadline."""

    def __init__(self, message: str, retry_after: int = 5,
                 code: str = "backend_unavailable") -> None:
        super().__init__(
            503,
            message,
            type="server_error",
            code=code,
            headers={"Retry-After": str(retry_after)},
        )


class BackendForbidden(BackendUnavailable):
    """The backend refused this frontend's identity (403 from Cloud Run's invoker IAM check).

    Right after a deploy this is IAM propagation: a new roles/run.invoker binding typically
    applies within 2 minutes, sometimes 7 or more (Google's "Access change propagation"), so it
    is a 503 with Retry-After, under its own code, which `orpheus deploy`'s smoke test waits out.
    Not retried here: a binding that is really missing would hold every request to the deadline.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=30, code="backend_forbidden")


class BackendTimeout(APIError):
    """No audio before ORPHEUS_API_TIMEOUT (or the stream stalled for that long)."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message, type="server_error", code="backend_timeout")


class BackendError(APIError):
    """The backend answered, but not with a usable token stream."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message, type="server_error", code="backend_error")


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.type, exc.param, exc.code),
        status_code=exc.status,
        headers=exc.headers,
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str | None]:
    """The first problem as one sentence, the field it concerns, and a machine-readable code."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None, None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return "request body is not valid JSON", None, "invalid_json"
    if kind == "missing":
        return f"'{param}' is required", param, "missing_required_parameter"
    # Pydantic's message states the rule ("Input should be less than or equal to 4"); the input
    # value itself is left out because a user's text can be long.
    where = f"'{param}'" if param else "request body"
    return f"invalid {where}: {first.get('msg', 'invalid value')}", param, "invalid_value"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400 for a malformed request; FastAPI's default 422 body is not its shape.
        message, param, code = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param, code), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(
            error_body(str(exc.detail), kind, None, None),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged by the access middleware with the request id; the client gets no internals.
        return JSONResponse(error_body("internal server error", "server_error", None, None), 500)
