"""Cloud Run's front end for one service: a stable local URL that authorizes each request and
streams it to the serving revision's instance.

- Invoker IAM: a service with ``invoker_iam_disabled`` (Cloud Run's recommended way to make a
  service public, "Allowing public (unauthenticated) access") or whose ``roles/run.invoker``
  binding includes ``allUsers`` is open; otherwise the request needs ``Authorization: Bearer
  <ID token>`` that the fake issuer signed for this service's URL, for an account holding the
  role. No token: 403; a bad token: 401; an account without the role: 403 (Cloud Run's
  statuses). The role counts only once the binding is older than the IAM propagation delay
  (core.IamPolicies), so a freshly granted caller gets 403 for a while, as on Cloud Run.
- Direct VPC egress connection delay (the Direct VPC egress page, Limitations: "connection
  establishment delays of a minute or more on instance startup"): a connection to an internal
  service that comes from an instance with VPC egress younger than ``vpc_egress_delay_s`` gets
  no answer: it stalls, as a connection that is still being established does, and is dropped
  after ``EGRESS_STALL_S`` (a minute or more) unless the caller gives up first, so a caller
  without a timeout of its own hangs here as it would on Cloud Run (the calling instance is
  found from the connection's local port). Google's advice is a startup probe that tests an
  egress connection.
- Internal ingress: only requests that come through a VPC of the project. Here that means the
  verified caller is the service account of a running Cloud Run service with Direct VPC egress of
  all traffic (a request from anywhere else, even with a valid token, is refused with 404, as
  Cloud Run answers blocked ingress).
- As Cloud Run does, the token's signature is replaced before the request reaches the container.
- Instances: one per service (max instances 1). A dead instance (crashed, killed) is replaced by a
  new one on the next request, which waits for its startup probe: a cold start.
- Streaming: bytes are forwarded as they arrive; if the instance's connection breaks mid-body,
  the response is cut too (no final chunk), which is what a client of Cloud Run sees.

Not modelled: more than one instance, the request timeout, and max concurrency per instance
(requests beyond the server's own slots queue in the server, not in the router).

Test controls (faults): ``chunk_delay_s`` slows every forwarded chunk; ``on_forwarded(chunk)`` is
called after each chunk is forwarded (tests count events in it to strike mid-stream).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tests.fakecloud.container import Container, Instance
from tests.fakecloud.idtokens import IdTokenIssuer, InvalidToken

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
INVOKER = "roles/run.invoker"
# How long a connection stalled by the VPC egress delay waits before it is dropped: "a minute or
# more" (Direct VPC egress, Limitations).
EGRESS_STALL_S = 75.0


class ServiceRouter:
    def __init__(self, service_name: str, cloud: Any, issuer: IdTokenIssuer,
                 vpc_callers: Callable[[], set[str]], startup_timeout_s: float,
                 egress_not_ready: Callable[[int], bool] = lambda _port: False) -> None:
        self.service_name = service_name
        self.cloud = cloud
        self.issuer = issuer
        self.vpc_callers = vpc_callers  # accounts whose traffic leaves through the VPC
        # Whether a connection from 127.0.0.1:<port> comes from an instance whose Direct VPC
        # egress does not work yet (asked only for internal services).
        self.egress_not_ready = egress_not_ready
        self.startup_timeout_s = startup_timeout_s
        self.internal = False
        self.invoker_iam_disabled = False
        self.refused_connections = 0  # stalled by the VPC egress connection delay
        self.container: Container | None = None
        self.instance: Instance | None = None
        self.retired: list[Instance] = []  # every instance ever stopped, for leak checks
        self.chunk_delay_s = 0.0
        self.on_forwarded: Callable[[bytes], None] | None = None
        self.active = 0  # responses being streamed now
        self.max_active = 0
        self.denied: list[int] = []  # statuses of refused requests
        self._start_lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ServiceRouter:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route
        from uvicorn.protocols.http.h11_impl import H11Protocol

        router = self

        class EgressGate(H11Protocol):
            """Stalls a connection from an instance whose VPC egress is not connected yet."""

            def connection_made(self, transport: Any) -> None:  # type: ignore[override]
                super().connection_made(transport)
                peer = transport.get_extra_info("peername")
                if router.internal and peer and router.egress_not_ready(int(peer[1])):
                    router.refused_connections += 1
                    transport.pause_reading()  # nothing the caller sends is ever answered
                    asyncio.get_running_loop().call_later(EGRESS_STALL_S, transport.abort)

        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, http=EgressGate)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"router-{self.service_name.rsplit('/', 1)[-1]}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"router for {self.service_name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(10)
            self._sock.close()
            self._server = None
        self.retire()

    def serve(self, container: Container, instance: Instance, internal: bool) -> None:
        """Send traffic to a new ready revision; the previous one's instance is stopped."""
        with self._start_lock:
            old = self.instance
            self.container, self.instance, self.internal = container, instance, internal
        if old is not None and old is not instance:
            old.stop()
            self.retired.append(old)

    def retire(self) -> None:
        with self._start_lock:
            old, self.instance = self.instance, None
        if old is not None:
            old.stop()
            self.retired.append(old)

    def instances(self) -> list[Instance]:
        current = [self.instance] if self.instance is not None else []
        return [*self.retired, *current]

    def _ensure_instance(self) -> Instance:
        """The serving instance, started anew (cold start) when the last one died."""
        with self._start_lock:
            if self.instance is not None and self.instance.alive():
                return self.instance
            if self.container is None:
                raise LookupError("no ready revision")
            if self.instance is not None:
                self.instance.stop()
                self.retired.append(self.instance)
                self.instance = None
            instance = self.container.start()
            instance.wait_ready(self.startup_timeout_s)  # RevisionFailed when it cannot start
            self.instance = instance
            return instance

    # -- authorization -----------------------------------------------------------------------
    def _authorize(self, headers: Any) -> tuple[int, str] | bool:
        """(status, reason) to refuse the request; else whether a token was verified."""
        members = set() if self.invoker_iam_disabled else \
            self.cloud.iam.effective_members(self.service_name, INVOKER)
        public = self.invoker_iam_disabled or "allUsers" in members
        if public and not self.internal:
            # A public service does not look at Authorization: it reaches the container as
            # sent (which is how an OpenAI SDK's `Bearer <API key>` gets to the frontend).
            return False
        auth = headers.get("authorization", "")
        caller = None
        if auth.lower().startswith("bearer "):
            try:
                caller = self.issuer.verify(auth[7:].strip(), audience=self.url)
            except InvalidToken as exc:
                return 401, f"The access token could not be verified: {exc}"
        if self.internal and caller not in self.vpc_callers():
            return 404, "This service only accepts traffic from the VPC (internal ingress)."
        if public:
            return caller is not None
        if caller is None:
            return 403, "Your client does not have permission to get URL (no ID token)."
        if f"serviceAccount:{caller}" not in members and f"user:{caller}" not in members:
            return 403, f"{caller} does not have {INVOKER} on {self.service_name}."
        return True

    # -- proxy -------------------------------------------------------------------------------
    async def _handle(self, request: Any) -> Any:
        from starlette.responses import PlainTextResponse, StreamingResponse

        verdict = self._authorize(request.headers)
        if isinstance(verdict, tuple):
            self.denied.append(verdict[0])
            return PlainTextResponse(verdict[1], status_code=verdict[0])
        try:
            instance = await asyncio.to_thread(self._ensure_instance)
        except Exception as exc:  # no revision, or the cold start failed
            return PlainTextResponse(f"Service Unavailable: {exc}", status_code=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        parts = headers.get("authorization", "")[7:].strip().split(".")
        if verdict and len(parts) == 3:
            headers["authorization"] = f"Bearer {parts[0]}.{parts[1]}.SIGNATURE_REMOVED_BY_GOOGLE"
        body = await request.body()
        client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5))
        url = f"{instance.url}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        try:
            upstream = await client.send(
                client.build_request(request.method, url, headers=headers, content=body),
                stream=True)
        except httpx.TransportError as exc:
            await client.aclose()
            return PlainTextResponse(f"Service Unavailable: the instance did not answer ({exc})",
                                     status_code=503)
        # Raw bytes are relayed, so content-encoding stays as the instance sent it.
        out_headers = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(self._relay(upstream, client), status_code=upstream.status_code,
                                 headers=out_headers)

    async def _relay(self, upstream: httpx.Response, client: httpx.AsyncClient
                     ) -> AsyncIterator[bytes]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            async for chunk in upstream.aiter_raw():
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield chunk
                if self.on_forwarded is not None:
                    self.on_forwarded(chunk)
        finally:
            self.active -= 1
            await upstream.aclose()
            await client.aclose()
