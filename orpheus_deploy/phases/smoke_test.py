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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_FAILURE, EXIT_NOT_FOUND, CloudError, OrpheusError

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

TEXT = "Hello from Orpheus on Cloud Run."
VOICE = "tara"
# A scaled-to-zero GPU backend may need minutes to load the model before the first token.
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class Check:
    name: str
    ok: bool
    status: int | None
    detail: str = ""

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
    from orpheus_deploy.gcp import translated

    name = f"{settings.names.secret_path}/versions/latest"
    with translated(f"read the API key from secret {settings.names.secret}", settings.project):
        payload = cloud.secrets().access_secret_version(name=name, retry=cloud.retry).payload.data
    # Several comma-separated keys are allowed during a rotation; any of them must work.
    keys = [k.strip() for k in payload.decode("utf-8").split(",") if k.strip()]
    if not keys:
        raise CloudError(f"Secret {settings.names.secret} is empty",
                         "run `orpheus setup --rotate-key`")
    return keys[0]


def run_smoke_test(url: str, key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                   text: str = TEXT, voice: str = VOICE) -> SmokeResult:
    import httpx

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
        result.checks.append(_speech(client, endpoint, body, key, result))
    return result


def _speech(client: Any, endpoint: str, body: dict[str, Any], key: str,
            result: SmokeResult) -> Check:
    import httpx

    start = time.perf_counter()
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
        return Check("right key", False, status, f"expected 200: {_error_text(data)}")
    try:
        wav = parse_wav(data)
    except ValueError as exc:
        return Check("right key", False, status, f"invalid audio: {exc}")
    result.audio_s = wav.seconds
    if wav.data_bytes == 0:
        return Check("right key", False, status, "the WAV holds no audio")
    return Check("right key", True, status,
                 f"{wav.seconds:.2f}s of {wav.sample_rate} Hz audio")


def _error_text(data: bytes) -> str:
    import json

    try:
        return str(json.loads(data)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return data[:200].decode("utf-8", errors="replace")


def _http_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200] or type(exc).__name__
