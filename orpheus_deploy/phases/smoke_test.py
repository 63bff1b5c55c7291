"""`orpheus test`: prove the deployed API end to end, the way a client sees it.

Three requests to ``POST /v1/audio/speech`` on the frontend URL: without a key (must be 401), with
a wrong key (must be 401), with the right key (must be 200 and a valid WAV with audio in it).
The right request is timed: time to first byte (includes a GPU cold start when scaled to zero),
total time, and seconds of audio produced. The key is never printed.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_FAILURE, EXIT_NOT_FOUND, CloudError, OrpheusError

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.gcp.policy import OperationPolicy

TEXT = "Hello from Orpheus on Cloud Run."
VOICE = "tara"
# A scaled-to-zero GPU backend may need minutes to load the model before the first token.
DEFAULT_TIMEOUT_S = 600.0


# The frontend's error code when the backend refuses its identity (403), as it does until a
# freshly granted roles/run.invoker applies (runtime/frontend/errors.py: BackendForbidden).
BACKEND_FORBIDDEN = "backend_forbidden"


@dataclass
class Check:
    name: str
    ok: bool
    status: int | None
    detail: str = ""
    code: str | None = None  # the frontend's error code, when it answered with an error

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status, "detail": self.detail}


@dataclass
class SmokeResult:
    url: str
    checks: list[Check] = field(default_factory=list)
    ttfb_s: float | None = None
    total_s: float | None = None
    audio_s: float | None = None
    audio_bytes: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "checks": [c.as_dict() for c in self.checks],
                "ttfb_s": _round(self.ttfb_s), "total_s": _round(self.total_s),
                "audio_s": _round(self.audio_s), "audio_bytes": self.audio_bytes}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class SmokeTestFailed(OrpheusError):
    exit_code = EXIT_FAILURE

    def __init__(self, result: SmokeResult):
        failed = [c for c in result.checks if not c.ok]
        super().__init__(
            f"Smoke test of {result.url} failed: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            "see `orpheus status` for the services' revisions, and their logs in the console")
        self.result = result


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    bits: int
    data_bytes: int
    data_offset: int = 44  # where the samples start (after the data chunk's header)

    @property
    def seconds(self) -> float:
        frame = self.channels * self.bits // 8
        return self.data_bytes / frame / self.sample_rate if frame and self.sample_rate else 0.0


def parse_wav(data: bytes) -> WavInfo:
    """A PCM WAV's format and the length of its audio. Tolerates the streaming form, whose RIFF
    and data sizes are placeholders (0 or 0xFFFFFFFF) because the length was unknown."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise ValueError("truncated fmt chunk")
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            available = len(data) - body
            n = available if size in (0, 0xFFFFFFFF) or size > available else size
            audio_format, channels, rate, _byte_rate, _align, bits = fmt
            if audio_format not in (1, 0xFFFE):
                raise ValueError(f"not PCM (format {audio_format})")
            return WavInfo(rate, channels, bits, n, body)
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def frontend_url(settings: Settings, cloud: Cloud) -> str:
    from orpheus_deploy.resources.cloudrun import FrontendService, service_status

    status = service_status(FrontendService(settings).read_service(cloud))
    if not status.exists or not status.uri:
        raise CloudError(f"The frontend {settings.names.frontend_service} is not deployed",
                         "run `orpheus deploy --all` first", EXIT_NOT_FOUND, kind="not_found")
    return status.uri


def api_key_from_secret(settings: Settings, cloud: Cloud) -> str:
    """A key that the service accepts: the "default" key, else the first named one."""
    from orpheus_deploy.resources.secret import ApiKeySecret

    keys, _ = ApiKeySecret(settings).read_keys(cloud)
    default = keys.get("default")
    chosen = default if default is not None and default.active else next(iter(keys.active), None)
    if chosen is None or chosen.key is None:
        raise CloudError(f"Secret {settings.names.secret} holds no active API key",
                         "create one: `orpheus keys create NAME`, or `orpheus setup --rotate-key`")
    return chosen.key


class _InvokerNotApplied(Exception):
    def __init__(self, check: Check) -> None:
        super().__init__(check.detail)
        self.check = check


def run_smoke_test(url: str, key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                   text: str = TEXT, voice: str = VOICE, patience: OperationPolicy | None = None,
                   report: Callable[[str], None] | None = None,
                   invoker: str = "the frontend's roles/run.invoker on the backend"
                   ) -> SmokeResult:
    """The three checks. With ``patience`` (a policy), a "right key" request that the backend
    refused because the frontend's invoker binding has not applied yet is repeated for up to
    the policy's IAM propagation time, reporting what it waits for (``invoker``)."""
    import httpx

    from orpheus_deploy.gcp.propagation import until_applied

    url = url.rstrip("/")
    endpoint = f"{url}/v1/audio/speech"
    body = {"model": "orpheus", "input": text, "voice": voice, "response_format": "wav",
            "stream": True}
    result = SmokeResult(url=url)
    wrong = "wrong-" + secrets.token_urlsafe(16)
    timeout = httpx.Timeout(timeout_s, connect=30.0)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for name, headers in (("no key", {}), ("wrong key", {"X-API-Key": wrong})):
            try:
                resp = client.post(endpoint, json=body, headers=headers)
                ok = resp.status_code == 401
                result.checks.append(Check(name, ok, resp.status_code,
                                           "rejected" if ok else "expected 401"))
            except httpx.HTTPError as exc:
                result.checks.append(Check(name, False, None, _http_error(exc)))

        def speech() -> Check:
            check = _speech(client, endpoint, body, key, result)
            if check.code == BACKEND_FORBIDDEN:
                raise _InvokerNotApplied(check)
            return check

        try:
            if patience is None:
                check = speech()
            else:
                check = until_applied(speech, waiting=lambda e: isinstance(e, _InvokerNotApplied),
                                      what=invoker, policy=patience, report=report)
        except _InvokerNotApplied as exc:
            check = exc.check
        result.checks.append(check)
    return result


def _speech(client: Any, endpoint: str, body: dict[str, Any], key: str,
            result: SmokeResult) -> Check:
    import httpx

    start = time.perf_counter()
    result.ttfb_s = None
    chunks: list[bytes] = []
    try:
        with client.stream("POST", endpoint, json=body, headers={"X-API-Key": key}) as resp:
            for chunk in resp.iter_bytes():
                if chunk and result.ttfb_s is None:
                    result.ttfb_s = time.perf_counter() - start
                chunks.append(chunk)
            status = resp.status_code
    except httpx.HTTPError as exc:
        return Check("right key", False, None, _http_error(exc))
    result.total_s = time.perf_counter() - start
    data = b"".join(chunks)
    result.audio_bytes = len(data)
    if status != 200:
        message, code = error_of(data)
        return Check("right key", False, status, f"expected 200: {message[:200]}", code)
    try:
        wav = parse_wav(data)
    except ValueError as exc:
        return Check("right key", False, status, f"invalid audio: {exc}")
    result.audio_s = wav.seconds
    if wav.data_bytes == 0:
        return Check("right key", False, status, "the WAV holds no audio")
    return Check("right key", True, status,
                 f"{wav.seconds:.2f}s of {wav.sample_rate} Hz audio")


def error_of(body: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI-shaped error body; else the start of whatever the
    body is (a proxy's or Cloud Run's own page) on one line, and no code."""
    import json

    try:
        error = json.loads(body)["error"]
        return str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):
        return " ".join(body[:200].decode("utf-8", "replace").split()) or "no message", None


def _http_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200] or type(exc).__name__
