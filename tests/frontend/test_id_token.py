"""Service-to-service auth: Google-signed ID tokens through the real google-auth library.

A service-account key file (generated here) whose `token_uri` points at a local token endpoint makes
google-auth run its real ID-token flow: it signs a JWT assertion with the key, posts it, and reads
the `id_token` it gets back. The endpoint checks the assertion's audience and counts fetches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from runtime.frontend.backend_client import IdTokenProvider
from tests.fixtures.local_http import LocalHttpServer


@dataclass
class TokenEndpoint:
    url: str
    signer: crypt.Signer
    audiences: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    fail: bool = False
    lifetime: int = 3600


@pytest.fixture
def token_endpoint(tmp_path, monkeypatch) -> Iterator[TokenEndpoint]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    signer = crypt.RSASigner.from_string(pem, key_id="test-key")
    state: dict[str, TokenEndpoint] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            endpoint = state["endpoint"]
            form = urllib.parse.parse_qs(
                self.rfile.read(int(self.headers["Content-Length"])).decode()
            )
            claims = jwt.decode(form["assertion"][0], verify=False)
            endpoint.audiences.append(claims["target_audience"])
            if endpoint.fail:
                body, status = b'{"error": "invalid_grant"}', 400
            else:
                now = int(time.time())
                token = jwt.encode(
                    endpoint.signer,
                    {
                        "aud": claims["target_audience"],
                        "iss": "https://accounts.google.com",
                        "sub": "frontend",
                        "iat": now,
                        "exp": now + endpoint.lifetime,
                    },
                ).decode()
                endpoint.issued.append(token)
                body, status = json.dumps({"id_token": token}).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = LocalHttpServer("token-endpoint")
    server.start(Handler)
    url = f"{server.url}/token"
    endpoint = TokenEndpoint(url=url, signer=signer)
    state["endpoint"] = endpoint
    key_file = Path(tmp_path) / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": "orpheus-frontend@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": url,
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    yield endpoint
    server.stop()


def test_token_is_cached_and_refreshed_before_expiry(token_endpoint):
    now = [time.time()]
    provider = IdTokenProvider("https://orpheus-backend-abc.a.run.app", clock=lambda: now[0])

    async def scenario() -> list[str]:
        first = await provider.token()
        again = await asyncio.gather(*(provider.token() for _ in range(5)))
        now[0] += 3600 - 400  # 400 s left: still outside the 300 s margin
        still = await provider.token()
        now[0] += 150  # 250 s left: refresh now, before Cloud Run would reject it
        fresh = await provider.token()
        return [first, *again, still, fresh]

    tokens = asyncio.run(scenario())
    assert token_endpoint.issued == [tokens[0], tokens[-1]]
    assert set(tokens[:-1]) == {tokens[0]}
    assert provider.fetches == 2
    assert token_endpoint.audiences == ["https://orpheus-backend-abc.a.run.app"] * 2


def test_token_fetch_runs_off_the_event_loop(token_endpoint):
    # While a fetch is in flight, the loop keeps running other tasks.
    provider = IdTokenProvider("https://backend.example")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def scenario() -> None:
        task = asyncio.create_task(ticker())
        await provider.token()
        task.cancel()

    asyncio.run(scenario())
    assert ticks > 1


def test_app_sends_the_id_token_for_the_backend_origin(
    token_endpoint, frontend_factory, fake_backend
):
    app = frontend_factory(ORPHEUS_BACKEND_AUTH="google-id-token")
    for _ in range(2):
        response = httpx.post(
            f"{app.base_url}/v1/audio/speech",
            headers=app.headers(),
            json={"input": "Signed.", "response_format": "pcm"},
        )
        assert response.status_code == 200
    assert token_endpoint.audiences == [fake_backend.origin]  # fetched once, then cached
    (token,) = token_endpoint.issued
    sent = [r.headers["authorization"] for r in fake_backend.completions]
    assert sent == [f"Bearer {token}"] * 2


def test_failed_token_fetch_is_503_and_logs_no_token(
    token_endpoint, frontend_factory, fake_backend, caplog
):
    caplog.set_level(logging.DEBUG)
    token_endpoint.fail = True
    app = frontend_factory(ORPHEUS_BACKEND_AUTH="google-id-token")
    response = httpx.post(
        f"{app.base_url}/v1/audio/speech",
        headers=app.headers(),
        json={"input": "Unsigned.", "response_format": "pcm"},
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert fake_backend.completions == []
    assert any("ID token" in r.getMessage() for r in caplog.records)
    assert app.api_key not in caplog.text


class _SlowRefresh:
    """Stands in for google-auth's blocking refresh: slow, counting overlaps, maybe failing."""

    def __init__(self, provider: IdTokenProvider, *, fail: bool = False) -> None:
        import datetime
        import threading
        from types import SimpleNamespace

        self.provider, self.fail = provider, fail
        self.calls = self.running = self.most_at_once = 0
        self._lock = threading.Lock()
        self._creds = SimpleNamespace(token=None, expiry=None)
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # naive, as google-auth
        self._expiry = now + datetime.timedelta(hours=1)

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.3)
        with self._lock:
            self.running -= 1
        if self.fail:
            raise RuntimeError("metadata server unreachable")
        self._creds.token, self._creds.expiry = f"token-{self.calls}", self._expiry
        self.provider._credentials = self._creds


def test_a_caller_that_goes_away_does_not_start_a_second_refresh():
    # A request cancelled (client gone) while it waits for the token must not release the refresh
    # to the next caller while the first fetch is still running in its thread.
    provider = IdTokenProvider("https://backend.example")
    refresh = _SlowRefresh(provider)
    provider._refresh_blocking = refresh  # type: ignore[method-assign]

    async def scenario() -> list[str]:
        first = asyncio.create_task(provider.token())
        await asyncio.sleep(0.05)
        first.cancel()
        return await asyncio.gather(*(provider.token() for _ in range(3)))

    tokens = asyncio.run(scenario())
    assert refresh.most_at_once == 1
    assert refresh.calls == 1 and tokens == ["token-1"] * 3


def test_a_failed_refresh_fails_its_waiters_together():
    # When the metadata server is down, the requests waiting on one refresh share its failure
    # instead of each retrying it in turn (N requests waiting N refresh times).
    provider = IdTokenProvider("https://backend.example")
    refresh = _SlowRefresh(provider, fail=True)
    provider._refresh_blocking = refresh  # type: ignore[method-assign]

    async def scenario() -> list[BaseException | str]:
        return await asyncio.gather(*(provider.token() for _ in range(5)), return_exceptions=True)

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert all(type(r).__name__ == "BackendUnavailable" for r in results), results
    assert refresh.calls == 1
    assert time.monotonic() - started < 1.0
