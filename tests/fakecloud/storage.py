"""The real ``gcp-storage-emulator``, served in-process with a request log and fault injection.

The emulator's own storage and request router do all the work; this wrapper only puts a thin
HTTP handler in front that records each request into the FakeCloud log (service "storage",
method "VERB /path") and can fail chosen requests (e.g. resumable-upload chunks) with an HTTP
status, to test retries and resumed uploads.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from gcp_storage_emulator import settings as emulator_settings
from gcp_storage_emulator.handlers import buckets as emulator_buckets
from gcp_storage_emulator.server import PATCH, Router
from gcp_storage_emulator.server import RequestHandler as EmulatorHandler
from gcp_storage_emulator.storage import Storage

from tests.fakecloud.core import Call
from tests.fixtures.local_http import LocalHttpServer


@dataclass
class StorageRequest:
    verb: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    content_length: int
    body: Any = None  # parsed JSON body of metadata requests (not of uploaded bytes)

    @property
    def content_range(self) -> str | None:
        return self.headers.get("content-range")


@dataclass
class HttpFault:
    verb: str
    path_contains: str
    status: int
    times: int | None
    after: int  # let this many matching requests through first
    query_contains: str = ""
    message: str = "injected fault"
    seen: int = field(default=0)


class StorageEmulator:
    """``gcp-storage-emulator`` on 127.0.0.1:<free port>; ``url`` is for STORAGE_EMULATOR_HOST."""

    def __init__(self, cloud: Any = None, data_dir: Path | None = None):
        self.cloud = cloud
        self.storage = Storage(use_memory_fs=data_dir is None, data_dir=data_dir)
        self.faults: list[HttpFault] = []
        self.log: list[Call] = []
        self._lock = threading.Lock()
        self._http = LocalHttpServer("storage-emu", threaded=False)

    def start(self) -> StorageEmulator:
        # The emulator logs every 404 at ERROR level; a 404 is an answer here, not a failure.
        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
        self._http.start(partial(_Handler, self))
        return self

    def stop(self) -> None:
        self._http.stop()

    @property
    def url(self) -> str:
        return self._http.url

    # -- test controls -----------------------------------------------------------------------
    def fail(self, verb: str, path_contains: str, status: int = 503, times: int | None = 1,
             after: int = 0, query_contains: str = "", message: str = "injected fault") -> None:
        """Answer matching requests with ``status`` and a JSON error carrying ``message``
        (after letting ``after`` through)."""
        with self._lock:
            self.faults.append(HttpFault(verb.upper(), path_contains, status, times, after,
                                         query_contains, message))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def object_metadata(self, bucket: str, name: str) -> dict[str, Any] | None:
        return self.storage.objects.get(bucket, {}).get(name)

    def bucket_metadata(self, bucket: str) -> dict[str, Any] | None:
        return self.storage.buckets.get(bucket)

    def bucket_roles(self, bucket: str) -> dict[str, set[str]]:
        policy = self.storage.get_bucket_iam_policy(bucket) or {}
        out: dict[str, set[str]] = {}
        for binding in policy.get("bindings", []):
            out.setdefault(binding.get("role", ""), set()).update(binding.get("members", []))
        return out

    def effective_bucket_members(self, bucket: str, roles: set[str] | frozenset[str]
                                 ) -> set[str]:
        """Members holding one of ``roles`` on the bucket as enforcement sees them: a binding
        younger than the IAM propagation delay does not count yet (see core.IamPolicies)."""
        out: set[str] = set()
        for role, members in self.bucket_roles(bucket).items():
            if role in roles:
                out |= (self.cloud.iam.effective(f"buckets/{bucket}", role, members)
                        if self.cloud is not None else members)
        return out

    def _fault_for(self, request: StorageRequest) -> HttpFault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.verb == request.verb and fault.path_contains in request.path
                        and fault.query_contains in json.dumps(request.query)
                        and (fault.times is None or fault.times > 0)):
                    fault.seen += 1
                    if fault.seen <= fault.after:
                        return None
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, call: Call) -> None:
        with self._lock:
            self.log.append(call)
        if self.cloud is not None:
            self.cloud.record(call)


def _bucket_iam_path(path: str) -> str | None:
    prefix, suffix = f"{emulator_settings.API_ENDPOINT}/b/", "/iam"
    if path.startswith(prefix) and path.endswith(suffix) and path.count("/") == prefix.count(
            "/") + 1:
        return path[len(prefix):-len(suffix)]
    return None


class _Handler(EmulatorHandler):
    def __init__(self, emulator: StorageEmulator, *args: Any, **kwargs: Any):
        self.emulator = emulator
        super().__init__(emulator.storage, *args, **kwargs)

    def _dispatch(self, verb: str) -> None:
        parsed = urlparse(self.path)
        request = StorageRequest(
            verb=verb, path=parsed.path, query=parse_qs(parsed.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            content_length=int(self.headers.get("Content-Length") or 0),
        )
        if (request.content_length and request.content_length < 1 << 20
                and request.headers.get("content-type", "").startswith("application/json")):
            raw = self.rfile.read(request.content_length)
            self.rfile = io.BufferedReader(io.BytesIO(raw))  # type: ignore[assignment]
            try:
                request.body = json.loads(raw)
            except ValueError:
                request.body = None
        call = Call("storage", f"{verb} {parsed.path}", request)
        self._call = call
        self.emulator._record(call)
        fault = self.emulator._fault_for(request)
        if fault is not None:
            # Drain the body first so the client sees a clean HTTP error, not a reset.
            if request.content_length:
                self.rfile.read(request.content_length)
            call.code = str(fault.status)
            body = json.dumps({"error": {"code": fault.status,
                                         "message": fault.message}}).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if verb == "PUT" and self._empty_session_status(request):
            return
        if verb == "POST" and parsed.path == f"{emulator_settings.API_ENDPOINT}/b":
            self._insert_bucket(request)
            return
        iam_of = _bucket_iam_path(parsed.path) if verb == "PUT" else None
        if iam_of is not None:
            self._set_bucket_iam(iam_of, request)
            return
        Router(self).handle(verb)

    def _set_bucket_iam(self, bucket: str, request: StorageRequest) -> None:
        """setIamPolicy on a bucket, as the emulator does it, plus what Cloud Storage adds:
        domain-restricted sharing refuses public members, and the change is reported to the
        fake IAM so that it takes effect only after the propagation delay."""
        cloud = self.emulator.cloud
        body = request.body if isinstance(request.body, dict) else {}
        public = {m for b in body.get("bindings", []) for m in b.get("members", [])
                  if m in ("allUsers", "allAuthenticatedUsers")}
        if public and cloud is not None and cloud.domain_restricted_sharing:
            self._json(412, {"error": {"code": 412, "message": (
                "One or more users named in the policy do not belong to a permitted customer."),
                "errors": [{"reason": "conditionNotMet", "domain": "global"}]}})
            return
        before = self.emulator.bucket_roles(bucket)
        Router(self).handle("PUT")
        if cloud is not None:
            cloud.iam.note(f"buckets/{bucket}", before, self.emulator.bucket_roles(bucket))

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _empty_session_status(self, request: StorageRequest) -> bool:
        """GCS answers a status query on a session with no bytes yet with 308 and *no* Range
        header; the emulator says "bytes=0-0" (one byte), which would corrupt a resume."""
        upload_id = (request.query.get("upload_id") or [None])[0]
        content_range = request.content_range or ""
        if not upload_id or not content_range.startswith("bytes */"):
            return False
        storage = self.emulator.storage
        try:
            storage.get_resumable_file_obj(upload_id)
        except Exception:
            return False
        if storage.get_resumable_byte_count(upload_id) != 0 or content_range == "bytes */0":
            return False
        self.send_response(308)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _insert_bucket(self, request: StorageRequest) -> None:
        """The emulator's bucket insert ignores location and iamConfiguration; GCS honours
        them at creation, so apply them with the emulator's own patch logic."""
        body = request.body if isinstance(request.body, dict) else {}
        name = body.get("name")
        bucket = emulator_buckets.create_bucket(name, self.emulator.storage) if name else None
        status, payload = 200, bucket
        if not name:
            status, payload = 400, {"error": {"code": 400, "message": "Empty bucket name"}}
        elif not bucket:
            status, payload = 409, {"error": {"code": 409, "message":
                                              "Your previous request to create the named bucket "
                                              "succeeded and you already own it."}}
        else:
            fields = {k: v for k, v in body.items() if k in ("location", "iamConfiguration",
                                                               "labels", "storageClass",
                                                               "lifecycle")}
            if "location" in fields:
                fields["location"] = str(fields["location"]).upper()
                bucket["locationType"] = "region" if "-" in fields["location"] else "multi-region"
            emulator_buckets._patch_bucket(bucket, fields)
            bucket["metageneration"] = "1"
            self.emulator.storage.create_bucket(name, bucket)
        self._json(status, payload)

    def send_response(self, code: int, message: str | None = None) -> None:
        call = getattr(self, "_call", None)
        if call is not None and code >= 300:
            call.code = str(code)
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch(PATCH)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return
