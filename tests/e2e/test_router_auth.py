"""The local Cloud Run front end on its own: who gets through to a container, and how.

A small echo server (a real process, started like a revision's container) sits behind a
``ServiceRouter``; ID tokens come from the fake issuer through google-auth's real service-account
flow, as the frontend gets them. No llama-server needed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import pytest
from google.iam.v1 import policy_pb2
from google.oauth2 import service_account

from tests.fakecloud.container import Container
from tests.fakecloud.core import FakeCloud
from tests.fakecloud.idtokens import IdTokenIssuer
from tests.fakecloud.router import ServiceRouter

SERVICE = "projects/test-project/locations/us-central1/services/echo"
CALLER = "orpheus-frontend@test-project.iam.gserviceaccount.com"
STRANGER = "someone-else@test-project.iam.gserviceaccount.com"

ECHO = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Echo).serve_forever()
"""


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.cloud = FakeCloud()
        self.vpc: set[str] = set()
        self.issuer = IdTokenIssuer(tmp / "keys").start()
        self.router = ServiceRouter(SERVICE, self.cloud, self.issuer, lambda: self.vpc,
                                    startup_timeout_s=30).start()
        (tmp / "echo.py").write_text(ECHO)
        self.container = Container(SERVICE, "echo-00001", [sys.executable, "echo.py"], tmp,
                                   {"PATH": "/usr/bin:/bin"}, None, tmp)
        instance = self.container.start()
        instance.wait_ready(30)
        self.router.serve(self.container, instance, internal=False)

    def invokers(self, *members: str) -> None:
        policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker",
                                                                members=list(members))])
        self.cloud.iam.set(SERVICE, policy)

    def token(self, account: str, audience: str | None = None) -> str:
        key_file = self.issuer.key_file(account, "test-project")
        creds = service_account.IDTokenCredentials.from_service_account_file(
            str(key_file), target_audience=audience or self.router.url)
        creds.refresh(google.auth.transport.requests.Request())
        return str(creds.token)

    def get(self, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.router.url}/anything", headers=headers, timeout=30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.router.stop()
        running.issuer.stop()
        assert all(i.running_pids() == set() for i in running.router.instances())


def echoed(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return json.loads(response.text)["authorization"]


def test_iam_decides_and_the_signature_never_reaches_the_container(stack: Stack) -> None:
    stack.invokers(f"serviceAccount:{CALLER}")
    assert stack.get().status_code == 403  # no token
    assert stack.get("not.a.token").status_code == 401
    assert stack.get(stack.token(CALLER, audience="http://elsewhere")).status_code == 401
    assert stack.get(stack.token(STRANGER)).status_code == 403  # valid, but not an invoker
    token = stack.token(CALLER)
    head, payload, _ = token.split(".")
    assert echoed(stack.get(token)) == f"Bearer {head}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"
    assert stack.router.denied == [403, 401, 401, 403]


def test_public_service_passes_authorization_through_untouched(stack: Stack) -> None:
    stack.invokers("allUsers")
    assert echoed(stack.get()) is None
    # An OpenAI SDK's API key travels as a bearer token: the container must see it as sent.
    assert echoed(stack.get("sk-the-api-key")) == "Bearer sk-the-api-key"


def test_internal_ingress_admits_only_vpc_callers(stack: Stack) -> None:
    stack.invokers(f"serviceAccount:{CALLER}")
    stack.router.internal = True
    token = stack.token(CALLER)
    assert stack.get(token).status_code == 404  # the caller's traffic does not use the VPC
    stack.vpc.add(CALLER)
    assert stack.get(token).status_code == 200
    assert stack.get().status_code == 404


def test_a_dead_instance_is_replaced_on_the_next_request(stack: Stack) -> None:
    stack.invokers("allUsers")
    first = stack.router.instance
    assert first is not None
    first.process.kill()
    first.process.wait()
    assert stack.get().status_code == 200
    assert stack.router.instance is not first and stack.container.starts == 2


def test_token_endpoint_refuses_accounts_that_do_not_exist(tmp_path: Path) -> None:
    issuer = IdTokenIssuer(tmp_path, account_exists=lambda email: email == CALLER).start()
    try:
        key_file = issuer.key_file(STRANGER, "test-project")
        creds = service_account.IDTokenCredentials.from_service_account_file(
            str(key_file), target_audience="http://127.0.0.1:1")
        with pytest.raises(google.auth.exceptions.RefreshError, match="does not exist"):
            creds.refresh(google.auth.transport.requests.Request())
    finally:
        issuer.stop()
