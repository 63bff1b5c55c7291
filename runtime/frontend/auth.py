"""API key check for every route but /health.

Keys come from the app's KeyStore (key_store.py): named keys from API_KEY_FILE, re-read while the
app runs, or fixed ones from API_KEY_SECRET. The presented key is compared with every accepted key
in constant time, without stopping at the first match, so the response time says nothing about
which key or how much of it matched. Keys are never logged: not on success, not on failure. What
the rest of the app knows of a caller is the matched key's NAME ("default" for a single key),
which the gate stores in the request state as `api_key_name` for the access log and per-key
limits.

The check runs twice: in `RequestGate` (gate.py), an ASGI middleware, before the body of a /v1
request is read (FastAPI reads and parses the body before it runs route dependencies, so a
dependency alone would buffer and parse an anonymous caller's body), and as the routes' dependency,
which documents the 401 in the OpenAPI schema and guards any route mounted outside the gate.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from runtime.frontend.errors import APIError
from runtime.frontend.key_store import NamedKeys

__all__ = ["check_api_key", "matching_key_name", "presented_key", "require_api_key"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`X-API-Key`, or `Authorization: Bearer <key>` (what the OpenAI SDKs send)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def matching_key_name(candidate: str, keys: NamedKeys) -> str | None:
    """The name of the configured key equal to `candidate`, or None; constant time in the keys."""
    given = candidate.encode()
    found: str | None = None
    for name, key in keys:
        # Every key is compared whatever the outcome of the previous ones.
        if hmac.compare_digest(given, key) and found is None:
            found = name
    return found


def check_api_key(headers: Mapping[str, str], keys: NamedKeys) -> str:
    """The presented key's name; a 401 APIError in OpenAI's shape unless a configured key was
    presented."""
    candidate = presented_key(headers)
    if candidate is None:
        raise APIError(
            401,
            "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    name = matching_key_name(candidate, keys)
    if name is None:
        raise APIError(
            401,
            "incorrect API key provided",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return name


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 in OpenAI's shape unless a configured key was presented."""
    keys = await request.app.state.api_keys.current()
    request.state.api_key_name = check_api_key(request.headers, keys)
