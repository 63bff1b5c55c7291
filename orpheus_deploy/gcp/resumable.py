"""Cloud Storage resumable uploads, chunk by chunk, from a known offset.

google-cloud-storage can upload a whole file, but it cannot continue a session started by an
earlier process. This speaks the documented protocol directly (status query with
``Content-Range: bytes */SIZE``, 308 + ``Range`` for confirmed bytes) over the storage client's
own authorized HTTP session, so a session URL saved to disk can be resumed after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from orpheus_deploy.errors import EXIT_UNAVAILABLE, CloudError
from orpheus_deploy.gcp.policy import OperationPolicy

# Chunks must be multiples of 256 KiB (except the last one).
CHUNK_ALIGN = 256 * 1024
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class SessionExpired(Exception):
    """The session URL is no longer valid (404/410): start a new session."""


@dataclass
class UploadStatus:
    confirmed: int  # bytes the server has persisted
    done: bool
    resource: dict[str, Any] | None = None  # the object's metadata when done


def _confirmed_from(response: Any) -> int:
    header = response.headers.get("Range")
    if not header:
        return 0
    # "bytes=0-1234" -> 1235 bytes persisted
    return int(header.split("-", 1)[1]) + 1


class ResumableSession:
    def __init__(self, http: Any, url: str, size: int, policy: OperationPolicy):
        self.http = http
        self.url = url
        self.size = size
        self.policy = policy

    def _put(self, headers: dict[str, str], data: bytes = b"") -> UploadStatus:
        response = self.http.request("PUT", self.url, data=data, headers=headers, timeout=300)
        if response.status_code in (200, 201):
            return UploadStatus(self.size, True, response.json())
        if response.status_code == 308:
            return UploadStatus(_confirmed_from(response), False)
        if response.status_code in (404, 410):
            raise SessionExpired()
        from google.api_core import exceptions

        raise exceptions.from_http_response(response)

    def status(self) -> UploadStatus:
        return self._put({"Content-Range": f"bytes */{self.size}", "Content-Length": "0"})

    def send(self, stream: IO[bytes], start: int, chunk_size: int) -> UploadStatus:
        stream.seek(start)
        data = stream.read(chunk_size)
        end = start + len(data) - 1
        return self._put({"Content-Range": f"bytes {start}-{end}/{self.size}",
                          "Content-Type": "application/octet-stream"}, data)

    def upload(self, stream: IO[bytes], chunk_size: int,
               on_progress: Callable[[int], None]) -> dict[str, Any]:
        """Upload from whatever the server has already confirmed to the end; retry transient
        failures (5xx, 429, connection errors) with backoff until the policy's deadline passes
        without progress, then raise CloudError (the session stays resumable). Returns the
        object's metadata."""
        import requests
        from google.api_core import exceptions

        deadline = time.monotonic() + self.policy.retry_deadline_s
        delay = self.policy.retry_initial_s
        status: UploadStatus | None = None
        while True:
            try:
                if status is None:
                    # Ask the server what it has, rather than trusting what we sent.
                    status = self.status()
                    on_progress(status.confirmed)
                if status.done:
                    assert status.resource is not None
                    return status.resource
                sent = self.send(stream, status.confirmed, chunk_size)
                if sent.done or sent.confirmed > status.confirmed:
                    deadline = time.monotonic() + self.policy.retry_deadline_s
                    delay = self.policy.retry_initial_s
                status = sent
                on_progress(status.confirmed)
            except (requests.ConnectionError, requests.Timeout,
                    exceptions.GoogleAPICallError) as exc:
                code = getattr(exc, "code", None)
                if isinstance(exc, exceptions.GoogleAPICallError) and code not in _RETRY_STATUS:
                    raise
                if time.monotonic() + delay > deadline:
                    raise CloudError(
                        f"Upload interrupted: Cloud Storage kept failing ({_describe(exc)})",
                        "re-run the same command to resume where it stopped",
                        EXIT_UNAVAILABLE, kind="unavailable") from exc
                time.sleep(delay)
                delay = min(delay * self.policy.retry_multiplier, self.policy.retry_max_s)
                status = None


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if code:
        return f"HTTP {code}"
    return type(exc).__name__
