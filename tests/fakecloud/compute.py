"""Fake Compute Engine REST API (subnetworks and region operations) for google-cloud-compute.

google-cloud-compute has only a REST transport, so this is an HTTP server rather than a gRPC
FakeService. Its URL routes are read from the client library's own REST transport tables
(``_Base<Method>._get_http_options()``), so a path cannot drift from what the client sends, and
bodies are (de)serialized with the library's own message classes.

Implemented: Subnetworks.Get, Subnetworks.SetPrivateIpGoogleAccess, Subnetworks.Patch,
RegionOperations.Get/Wait (operations are RUNNING until polled ``polls`` times). Requests are
recorded in the FakeCloud log as service "compute.<Resource>", method "<Method>" (Get* are reads).

    compute = FakeCompute(cloud, regions=["us-central1"]).start()   # seeds a "default" subnet
    env ORPHEUS_REST_ENDPOINT = compute.url
    compute.subnet("us-central1", "default").private_ip_google_access
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import threading
import uuid
from http import server
from typing import Any

from google.cloud import compute_v1

from tests.fakecloud.core import Call
from tests.fixtures.local_http import LocalHttpServer

_TRANSPORTS = {
    "Networks": "google.cloud.compute_v1.services.networks.transports.rest_base",
    "Subnetworks": "google.cloud.compute_v1.services.subnetworks.transports.rest_base",
    "RegionOperations": "google.cloud.compute_v1.services.region_operations.transports.rest_base",
}


def _routes() -> list[tuple[str, re.Pattern[str], str, str]]:
    """(http verb, path regex, resource, method) from the library's REST transport classes."""
    out = []
    for resource, module_name in _TRANSPORTS.items():
        module = importlib.import_module(module_name)
        base = next(obj for name, obj in inspect.getmembers(module, inspect.isclass)
                    if name.startswith("_Base") and name.endswith("RestTransport"))
        for name, cls in inspect.getmembers(base, inspect.isclass):
            if not name.startswith("_Base") or not hasattr(cls, "_get_http_options"):
                continue
            for option in cls._get_http_options():
                pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", option["uri"])
                out.append((option["method"].upper(), re.compile(f"^{pattern}$"), resource,
                            name.removeprefix("_Base")))
    return out


def _json(message: Any) -> bytes:
    return type(message).to_json(message, always_print_fields_with_no_presence=False).encode()


class FakeCompute:
    def __init__(self, cloud: Any, regions: list[str] | None = None, polls: int = 1):
        self.cloud = cloud
        self.polls = polls
        self.subnets: dict[tuple[str, str], compute_v1.Subnetwork] = {}
        self.networks: set[str] = {"default"}  # a new project's auto-mode network
        self.operations: dict[str, dict[str, Any]] = {}
        self.routes = _routes()
        self.lock = threading.RLock()
        self._http = LocalHttpServer("fake-compute")
        for region in regions or ["us-central1"]:
            self.add_subnet(region, "default")

    # -- test helpers ------------------------------------------------------------------------
    def add_subnet(self, region: str, name: str, network: str = "default",
                   private_ip_google_access: bool = False) -> None:
        project = self.cloud.project
        self.subnets[(region, name)] = compute_v1.Subnetwork(
            name=name, region=region, ip_cidr_range="10.128.0.0/20",
            network=f"https://www.googleapis.com/compute/v1/projects/{project}/global/networks/"
                    f"{network}",
            self_link=f"https://www.googleapis.com/compute/v1/projects/{project}/regions/"
                      f"{region}/subnetworks/{name}",
            private_ip_google_access=private_ip_google_access, fingerprint="fp0")

    def subnet(self, region: str, name: str) -> compute_v1.Subnetwork | None:
        return self.subnets.get((region, name))

    def start(self) -> FakeCompute:
        self._http.start(_make_handler(self))
        return self

    def stop(self) -> None:
        self._http.stop()

    @property
    def url(self) -> str:
        return self._http.url

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, verb: str, path: str, body: bytes) -> tuple[int, bytes]:
        for route_verb, pattern, resource, method in self.routes:
            match = pattern.match(path)
            if route_verb == verb and match:
                call = Call(f"compute.{resource}", method, {"path": path, "body": body})
                self.cloud.record(call)
                impl = getattr(self, f"_{resource}_{method}", None)
                if impl is None:
                    call.code = "UNIMPLEMENTED"
                    return _error(501, f"{resource}.{method} is not implemented by the fake")
                params = match.groupdict()
                if params.get("project") not in (self.cloud.project, self.cloud.project_number):
                    call.code = "PERMISSION_DENIED"
                    return _error(403, f"Required permission denied on project "
                                       f"{params.get('project')}")
                status, payload = impl(params, body)
                if status != 200:
                    call.code = str(status)
                return status, payload
        return _error(404, f"no route for {verb} {path}")

    def _Networks_Get(self, p: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            if p["network"] not in self.networks:
                return _error(404, f"The resource 'projects/{p['project']}/global/networks/"
                                   f"{p['network']}' was not found")
        project = self.cloud.project
        return 200, _json(compute_v1.Network(
            name=p["network"], auto_create_subnetworks=True,
            self_link=f"https://www.googleapis.com/compute/v1/projects/{project}/global/"
                      f"networks/{p['network']}"))

    def _Subnetworks_Get(self, p: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            sub = self.subnets.get((p["region"], p["subnetwork"]))
            if sub is None:
                return _error(404, f"The resource 'projects/{p['project']}/regions/{p['region']}"
                                   f"/subnetworks/{p['subnetwork']}' was not found")
            return 200, _json(sub)

    def _Subnetworks_SetPrivateIpGoogleAccess(self, p: dict[str, str], body: bytes
                                              ) -> tuple[int, bytes]:
        request = compute_v1.SubnetworksSetPrivateIpGoogleAccessRequest.from_json(
            body or b"{}", ignore_unknown_fields=False)
        with self.lock:
            sub = self.subnets.get((p["region"], p["subnetwork"]))
            if sub is None:
                return _error(404, f"The resource subnetworks/{p['subnetwork']} was not found")
            sub.private_ip_google_access = request.private_ip_google_access
            return 200, _json(self._operation(p, "setPrivateIpGoogleAccess", sub.self_link))

    def _Subnetworks_Patch(self, p: dict[str, str], body: bytes) -> tuple[int, bytes]:
        patch = compute_v1.Subnetwork.from_json(body or b"{}", ignore_unknown_fields=True)
        with self.lock:
            sub = self.subnets.get((p["region"], p["subnetwork"]))
            if sub is None:
                return _error(404, f"The resource subnetworks/{p['subnetwork']} was not found")
            if patch.fingerprint and patch.fingerprint != sub.fingerprint:
                return _error(412, "Supplied fingerprint does not match current fingerprint.")
            if "privateIpGoogleAccess" in json.loads(body or b"{}"):
                sub.private_ip_google_access = patch.private_ip_google_access
            sub.fingerprint = f"fp{uuid.uuid4().hex[:6]}"
            return 200, _json(self._operation(p, "patch", sub.self_link))

    def _operation(self, p: dict[str, str], kind: str, target: str) -> compute_v1.Operation:
        name = f"operation-{uuid.uuid4().hex[:12]}"
        status = compute_v1.Operation.Status.DONE if self.polls <= 0 else \
            compute_v1.Operation.Status.RUNNING
        op = compute_v1.Operation(name=name, operation_type=kind, status=status,
                                  target_link=target, region=p["region"], progress=0)
        self.operations[name] = {"op": op, "left": self.polls}
        return op

    def _RegionOperations_Get(self, p: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            entry = self.operations.get(p["operation"])
            if entry is None:
                return _error(404, f"operation {p['operation']} not found")
            entry["left"] -= 1
            if entry["left"] <= 0:
                entry["op"].status = compute_v1.Operation.Status.DONE
                entry["op"].progress = 100
            return 200, _json(entry["op"])

    _RegionOperations_Wait = _RegionOperations_Get


def _error(code: int, message: str) -> tuple[int, bytes]:
    return code, json.dumps({"error": {"code": code, "message": message,
                                       "errors": [{"message": message, "domain": "global",
                                                   "reason": "notFound" if code == 404
                                                   else "invalid"}]}}).encode()


def _make_handler(fake: FakeCompute) -> type[server.BaseHTTPRequestHandler]:
    class Handler(server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            status, payload = fake.handle(self.command, path, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
