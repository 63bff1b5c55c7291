"""`orpheus say`: one speech request to the frontend, its audio handed on as it arrives.

The request is the public API's (`POST /v1/audio/speech` with `stream: true`, the key in
`X-API-Key`); the audio goes to a ``write`` callable chunk by chunk, and ``on_progress`` hears the
time to first byte and the seconds of audio so far. Failures become one-line `OrpheusError`s that
say what to do: a wrong key, a backend still starting (the frontend's 503/504 after its own
retries), bad input, a server error, a stream cut mid-way. The key is never part of a message.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orpheus_deploy.errors import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    InputError,
    OrpheusError,
)
from orpheus_deploy.phases.smoke_test import DEFAULT_TIMEOUT_S, error_of, parse_wav

__all__ = ["DEFAULT_TIMEOUT_S", "FORMATS", "SAMPLE_RATE", "AudioMeter", "SayResult", "SpeechFailed",
           "SpeechRequest", "speak"]

FORMATS = ("wav", "pcm", "mp3", "opus", "flac", "aac")
SAMPLE_RATE = 24000  # wav and pcm from the frontend: s16le, mono (design section 3)


class SpeechFailed(OrpheusError):
    """The service did not produce the audio."""


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: str = "tara"
    fmt: str = "wav"
    speed: float = 1.0

    def body(self) -> dict[str, Any]:
        return {"model": "orpheus", "input": self.text, "voice": self.voice,
                "response_format": self.fmt, "speed": self.speed, "stream": True}


class AudioMeter:
    """Seconds of audio in a wav or pcm stream so far (None for compressed formats)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.bytes = 0
        self._head = b""
        self._header: int | None = 0 if fmt == "pcm" else None

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self.fmt == "wav" and self._header is None and len(self._head) < 4096:
            self._head += chunk
            with contextlib.suppress(ValueError):  # until the whole header has arrived
                self._header = parse_wav(self._head).data_offset

    @property
    def seconds(self) -> float | None:
        if self.fmt not in ("wav", "pcm"):
            return None
        samples = max(0, self.bytes - (self._header or 0)) // 2
        return samples / SAMPLE_RATE


@dataclass
class SayResult:
    url: str
    fmt: str
    voice: str
    request_id: str
    bytes: int = 0
    audio_s: float | None = None
    ttfb_s: float | None = None
    total_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {"url": self.url, "format": self.fmt, "voice": self.voice,
                "request_id": self.request_id, "bytes": self.bytes,
                "audio_s": rounded(self.audio_s), "ttfb_s": rounded(self.ttfb_s),
                "total_s": rounded(self.total_s)}


def speak(url: str, key: str, request: SpeechRequest, write: Callable[[bytes], None], *,
          timeout_s: float = DEFAULT_TIMEOUT_S,
          on_progress: Callable[[SayResult], None] | None = None,
          key_from_secret: bool = False) -> SayResult:
    """Stream the speech for ``request`` into ``write``; raise SpeechFailed/InputError."""
    import httpx

    url = url.rstrip("/")
    # Our own request id: the frontend logs it (access log) and we can name it even when the
    # connection fails before any answer.
    result = SayResult(url, request.fmt, request.voice, "say-" + secrets.token_hex(8))
    meter = AudioMeter(request.fmt)
    headers = {"X-API-Key": key, "X-Request-ID": result.request_id}
    start = time.perf_counter()
    timeout = httpx.Timeout(timeout_s, connect=30.0)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client, client.stream(
                "POST", f"{url}/v1/audio/speech", json=request.body(), headers=headers) as resp:
            result.request_id = resp.headers.get("x-request-id", result.request_id)
            if resp.status_code != 200:
                raise _refused(resp.status_code, resp.read(), result, key_from_secret)
            kind = resp.headers.get("content-type", "")
            if not kind.startswith("audio/"):
                raise SpeechFailed(f"{url} answered 200 with {kind or 'no content type'}, "
                                   "not audio", "check --url: it must be the frontend's URL")
            for chunk in resp.iter_bytes():
                if not chunk:
                    continue
                if result.ttfb_s is None:
                    result.ttfb_s = time.perf_counter() - start
                meter.feed(chunk)
                write(chunk)
                result.bytes, result.audio_s = meter.bytes, meter.seconds
                if on_progress is not None:
                    on_progress(result)
    except httpx.HTTPError as exc:
        raise _transport_failure(exc, result) from None
    result.total_s = time.perf_counter() - start
    if result.bytes == 0:  # the frontend never does this; a proxy in between might
        raise SpeechFailed(f"{url} answered 200 without audio", _request_hint(result))
    return result


def _request_hint(result: SayResult) -> str:
    return f"request id {result.request_id}: the frontend's log has the details"


def _refused(status: int, body: bytes, result: SayResult, key_from_secret: bool
             ) -> OrpheusError:
    message, _code = error_of(body)
    url = result.url
    if status == 401:
        # The running frontend re-reads the secret's keys every api_key_refresh_s: a key
        # revoked is refused from then on, one just created is accepted only from then on.
        hint = ("the key may have been revoked, or be newer than the frontend's last re-read "
                "of its keys (every api_key_refresh_s, 30 s by default): see `orpheus keys "
                "list`; `orpheus keys create NAME` makes a new one")
        if not key_from_secret:
            hint = ("pass a key that `orpheus setup` or `orpheus keys create` printed, or omit "
                    f"--key to read it from the secret; {hint}")
        return SpeechFailed(f"{url} refused the API key ({status}: {message})", hint, EXIT_AUTH)
    if status in (400, 413, 422):
        return InputError(f"{url} refused the request ({status}: {message})")
    if status == 404:
        return SpeechFailed(f"{url} has no speech API ({status}: {message})",
                            "check --url: it must be the frontend's URL", EXIT_NOT_FOUND)
    if status in (429, 503):
        return SpeechFailed(
            f"The speech backend is not ready ({status}: {message})",
            "the first request after an idle period waits for a GPU cold start (instance start "
            "and model load, a few minutes): run the same command again shortly",
            EXIT_UNAVAILABLE)
    if status == 504:
        return SpeechFailed(
            f"No audio arrived before the service's deadline ({status}: {message})",
            "the backend may still be starting (a cold start takes a few minutes): try again "
            "shortly", EXIT_UNAVAILABLE)
    return SpeechFailed(f"{url} failed ({status}: {message})", _request_hint(result),
                        EXIT_FAILURE)


def _transport_failure(exc: Exception, result: SayResult) -> OrpheusError:
    import httpx

    detail = " ".join(str(exc).split()) or type(exc).__name__
    if result.bytes:
        got = (f"{result.audio_s:.2f} s of audio" if result.audio_s is not None
               else f"{result.bytes} bytes")
        return SpeechFailed(f"The audio stream from {result.url} broke off after {got} "
                            f"({type(exc).__name__}: {detail})", _request_hint(result),
                            EXIT_UNAVAILABLE)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return SpeechFailed(f"Cannot reach {result.url} ({detail})",
                            "check --url; `orpheus status` shows the deployed frontend's URL",
                            EXIT_UNAVAILABLE)
    if isinstance(exc, httpx.TimeoutException):
        return SpeechFailed(f"No audio from {result.url} in time ({type(exc).__name__})",
                            "a GPU cold start can take minutes: raise --timeout or try again",
                            EXIT_UNAVAILABLE)
    return SpeechFailed(f"The request to {result.url} failed ({type(exc).__name__}: {detail})",
                        _request_hint(result), EXIT_UNAVAILABLE)
