"""Google-signed ID tokens, faked with real JWTs: the issuer behind service-to-service auth.

On Cloud Run a container gets its service account's identity from the metadata server. Here a
running container gets a service-account key file instead (``GOOGLE_APPLICATION_CREDENTIALS``)
whose ``token_uri`` is this issuer's local token endpoint, so the real google-auth library runs its
real ID-token flow: it signs a JWT assertion with the account's key and posts it; the endpoint
checks that assertion against the key it handed out (and that the account exists in the fake IAM)
and answers an ID token signed with the issuer's own RSA key ("Google's" key). ``verify`` is what
Cloud Run's front end does with an incoming ``Authorization: Bearer`` token: signature, issuer,
expiry and audience; it returns the caller's email.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from tests.fixtures.local_http import LocalHttpServer

ISSUER = "https://accounts.google.com"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
_ISSUER_KEY_ID = "fake-google-1"


class InvalidToken(Exception):
    """The bearer token is not one this issuer signed for that audience (or it expired)."""


def _new_key() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


class IdTokenIssuer:
    """Token endpoint on 127.0.0.1 plus the verifier; ``account_exists`` is the fake IAM's check."""

    def __init__(self, key_dir: Path, account_exists: Callable[[str], bool] = lambda _: True,
                 lifetime_s: int = 3600) -> None:
        self.key_dir = key_dir
        self.account_exists = account_exists
        self.lifetime_s = lifetime_s
        private, self._public = _new_key()
        self._signer = crypt.RSASigner.from_string(private, key_id=_ISSUER_KEY_ID)
        self._account_keys: dict[str, str] = {}  # email -> public PEM of its key file
        self.issued: list[dict[str, Any]] = []  # claims of every token handed out
        self._lock = threading.Lock()
        self._http = LocalHttpServer("id-token-issuer")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> IdTokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                status, body = issuer._exchange(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self._http.start(Handler)
        return self

    def stop(self) -> None:
        self._http.stop()

    @property
    def token_uri(self) -> str:
        return f"{self._http.url}/token"

    # -- what a container gets ---------------------------------------------------------------
    def key_file(self, email: str, project: str) -> Path:
        """A service-account key file for ``email`` (one key per account, made on first use)."""
        path = self.key_dir / f"{email}.json"
        with self._lock:
            if email not in self._account_keys:
                private, public = _new_key()
                self._account_keys[email] = public
                self.key_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({
                    "type": "service_account", "project_id": project,
                    "private_key_id": f"key-{len(self._account_keys)}", "private_key": private,
                    "client_email": email, "client_id": str(len(self._account_keys)),
                    "token_uri": self.token_uri,
                }))
                path.chmod(0o600)
        return path

    def _exchange(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The JWT-bearer grant: an assertion signed by an account's key -> an ID token."""
        assertion = (form.get("assertion") or [""])[0]
        try:
            unverified = jwt.decode(assertion, verify=False)
            email = str(unverified["iss"])
            with self._lock:
                public = self._account_keys.get(email)
            if public is None:
                raise ValueError(f"unknown key for {email}")
            # google-auth always addresses the assertion to Google's endpoint, whatever token_uri.
            claims = jwt.decode(assertion, certs=public,
                                audience=[self.token_uri, GOOGLE_TOKEN_ENDPOINT])
            audience = str(claims["target_audience"])
        except (ValueError, KeyError) as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if not self.account_exists(email):
            return 400, {"error": "invalid_grant",
                         "error_description": f"service account {email} does not exist"}
        now = int(time.time())
        token_claims = {"iss": ISSUER, "aud": audience, "sub": email, "email": email,
                        "email_verified": True, "azp": email, "iat": now,
                        "exp": now + self.lifetime_s}
        token = jwt.encode(self._signer, token_claims).decode()
        with self._lock:
            self.issued.append(token_claims)
        return 200, {"id_token": token}

    # -- what Cloud Run's front end checks ---------------------------------------------------
    def verify(self, token: str, audience: str) -> str:
        """The verified caller's email; ``InvalidToken`` for anything else."""
        try:
            claims = jwt.decode(token, certs={_ISSUER_KEY_ID: self._public}, audience=audience)
        except (ValueError, KeyError) as exc:
            raise InvalidToken(str(exc)) from exc
        if claims.get("iss") != ISSUER or not claims.get("email_verified"):
            raise InvalidToken("not an ID token of this issuer")
        return str(claims["email"])
