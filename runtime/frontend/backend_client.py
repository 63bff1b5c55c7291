"""Streaming client for the backend's OpenAI-style `POST /v1/completions` (llama.cpp's
`llama-server`, `llama_cpp.server`, LM Studio: anything that streams completions as SSE).

Retries: a cold Cloud Run GPU instance answers 503 (or 429 when every slot is busy, or 502 from
Cloud Run's front end while an instance starts), a backend that is still starting refuses
connections, and one that crashed closes them without an answer; those are retried with
exponential backoff and jitter (honouring `Retry-After`) until the caller's deadline. Any other
answer fails at once with the backend's own message, because retrying a 400 only delays the same
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from runtime.frontend.errors import (
    BackendError,
    BackendForbidden,
    BackendTimeout,
    BackendUnavailable,
)

__all__ = ["BACKEND_USAGE", "BackendClient", "GenerationParams", "IdTokenProvider", "TokenUsage"]

log = logging.getLogger("orpheus.frontend.backend")

_RETRY_STATUSES = frozenset({429, 502, 503})
# Orpheus' end-of-speech token, as a completions server renders it. Stopping on it server-side
# frees the slot at once instead of after max_tokens.
END_OF_SPEECH_TEXT = "<custom_token_2>"


@dataclass
class TokenUsage:
    """Token counts the backend reported (llama-server puts OpenAI's `usage` in its last event;
    llama_cpp.server does not), summed over the requests of one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reports: int = 0  # how many backend answers carried a usage object

    def add(self, usage: dict[str, Any]) -> None:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.reports += 1


# Where `stream_text` adds the usage it reads. A response that reports usage (the SSE stream's
# `speech.audio.done`) sets a fresh TokenUsage before it starts the speech producer, whose task
# inherits the context; everything else leaves it None.
BACKEND_USAGE: contextvars.ContextVar[TokenUsage | None] = contextvars.ContextVar(
    "backend_usage", default=None
)


class IdTokenProvider:
    """Google-signed ID tokens for the backend's audience, cached until shortly before expiry.

    `fetch_id_token_credentials` picks the right source (the metadata server on Cloud Run, a
    service-account key file elsewhere); fetching and refreshing are blocking HTTP calls, run
    in a worker thread. One refresh at a time: concurrent requests wait for the same refresh (a
    shared task), share its token or its failure, and a waiter that is cancelled (its client left)
    neither stops it nor lets a second one start while its thread still runs.
    """

    # ID tokens live an hour; refreshing 5 minutes early keeps an in-flight request from racing
    # the expiry (Cloud Run checks the token when the request arrives).
    REFRESH_MARGIN_S = 300.0

    def __init__(self, audience: str, clock: Callable[[], float] = time.time) -> None:
        self.audience = audience
        self._clock = clock
        self._credentials: Any = None
        self._refreshing: asyncio.Task[None] | None = None
        self.fetches = 0  # how many times a token was actually fetched (for tests and logs)

    def _fresh(self) -> bool:
        creds = self._credentials
        if creds is None or not creds.token or creds.expiry is None:
            return False
        # google-auth keeps `expiry` as a naive UTC datetime.
        expires_at = creds.expiry.replace(tzinfo=datetime.timezone.utc).timestamp()
        return expires_at - self._clock() > self.REFRESH_MARGIN_S

    def _refresh_blocking(self) -> None:
        import google.auth.transport.requests
        import google.oauth2.id_token

        request = google.auth.transport.requests.Request()
        if self._credentials is None:
            self._credentials = google.oauth2.id_token.fetch_id_token_credentials(
                self.audience, request=request
            )
        self._credentials.refresh(request)
        self.fetches += 1

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self._refresh_blocking)
        except Exception as exc:
            log.error("could not obtain an ID token for %s: %s", self.audience, exc)
            raise BackendUnavailable("the frontend could not authenticate to the backend") from exc
        finally:
            self._refreshing = None

    async def token(self) -> str:
        if not self._fresh():
            refreshing = self._refreshing
            if refreshing is None:
                refreshing = self._refreshing = asyncio.create_task(self._refresh())
                # Retrieved here so that a failure nobody waits for any more is not reported as
                # "never retrieved"; the waiters get it from the shield below.
                refreshing.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.shield(refreshing)
        return str(self._credentials.token)


@dataclass(frozen=True)
class GenerationParams:
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float

    def payload(self, prompt: str, max_tokens: int | None = None,
                model: str | None = None) -> dict[str, Any]:
        """The completions request; `max_tokens` (this segment's budget) is capped at the
        configured one, which is what a backend slot has room for."""
        return {
            # llama-server's router serves each request with the model named here.
            "model": model or self.model,
            "prompt": prompt,
            "max_tokens": min(max_tokens or self.max_tokens, self.max_tokens),
            "temperature": self.temperature,
            "top_p": self.top_p,
            # llama.cpp's name; llama_cpp.server and llama-server both read `repeat_penalty`.
            "repeat_penalty": self.repetition_penalty,
            "stop": [END_OF_SPEECH_TEXT],
            "stream": True,
        }


class BackendClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        params: GenerationParams,
        *,
        tokens: IdTokenProvider | None = None,
        stall_timeout: float = 120.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        self._http = http
        self.url = url
        self.params = params
        self._tokens = tokens
        self._stall_timeout = stall_timeout
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._tokens is not None:
            headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        return headers

    async def _open(self, prompt: str, deadline: float,
                    on_retry: Callable[[str | None], None] | None = None,
                    max_tokens: int | None = None, model: str | None = None) -> httpx.Response:
        """Send the request, retrying cold-start answers until `deadline` (loop time).

        ``on_retry`` hears why the backend is being retried (and None once it answers), so that
        a caller whose own deadline fires mid-retry can still say "unavailable" rather than
        "timed out".
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        reason = ""
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if reason:
                    # A retry's back-off outlived the deadline (a loaded machine oversleeps): the
                    # backend was refusing throughout, which is "unavailable", not "slow".
                    raise BackendUnavailable(f"{reason}; gave up after {attempt} attempts")
                raise BackendTimeout("the backend did not answer before the deadline")
            # Reads wait at most until the deadline: the request then ends through httpx's own
            # timeout, whose clean-up closes the connection. Cancelling a task blocked inside
            # httpx instead can leave the pooled connection ACTIVE and open (the backend slot
            # keeps generating, and the pool leaks a connection).
            read_timeout = min(self._stall_timeout, remaining)
            timeout = httpx.Timeout(
                connect=min(remaining, 10.0), read=read_timeout, write=10.0, pool=remaining
            )
            request = self._http.build_request(
                "POST",
                self.url,
                json=self.params.payload(prompt, max_tokens, model),
                headers=await self._headers(),
                timeout=timeout,
            )
            retry_after: float | None = None
            try:
                response = await self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                reason = f"cannot connect to the backend ({type(exc).__name__})"
            except httpx.ReadTimeout as exc:
                deadline_bound = remaining <= self._stall_timeout
                if attempt and deadline_bound:
                    # Still refusing when the deadline fell: unavailable, not slow.
                    raise BackendUnavailable(
                        f"{reason}; no answer before the deadline (ORPHEUS_API_TIMEOUT)"
                    ) from exc
                raise BackendTimeout(
                    f"the backend sent no answer for {read_timeout:g} s"
                    + (" (the request deadline, ORPHEUS_API_TIMEOUT)"
                       if deadline_bound else "")
                ) from exc
            except (httpx.RemoteProtocolError, httpx.NetworkError, httpx.WriteTimeout) as exc:
                # Closed before answering: an instance that crashed or is being replaced, or a
                # keep-alive connection the server closed as the request went out. Nothing was
                # generated for us, so this is retried like a refused connection.
                kind = type(exc).__name__
                reason = f"the backend closed the connection without answering ({kind})"
            else:
                if response.status_code == 200:
                    if on_retry is not None:
                        on_retry(None)
                    return response
                body = (await response.aread())[:300].decode("utf-8", "replace")
                await response.aclose()
                if response.status_code == 403:
                    raise BackendForbidden(
                        "the backend refused this frontend's service account (403): a "
                        "roles/run.invoker binding granted in the last minutes may not apply "
                        "yet (IAM changes take 2 to 7+ minutes); if this persists, grant the "
                        "frontend's service account roles/run.invoker on the backend"
                    )
                if response.status_code not in _RETRY_STATUSES:
                    raise BackendError(
                        f"the backend answered {response.status_code}: {body.strip() or 'no body'}"
                    )
                reason = f"the backend answered {response.status_code}"
                retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            backoff = min(self._max_backoff, self._initial_backoff * 2**attempt)
            backoff *= 0.8 + 0.4 * random.random()  # jitter: cold starts hit many requests at once
            if retry_after is not None:
                backoff = max(backoff, min(retry_after, self._max_backoff))
            remaining = deadline - loop.time()
            if backoff >= remaining:
                raise BackendUnavailable(f"{reason}; gave up after {attempt + 1} attempts")
            attempt += 1
            if on_retry is not None:
                on_retry(reason)
            log.warning("%s; retrying in %.2f s (attempt %d)", reason, backoff, attempt + 1)
            await asyncio.sleep(backoff)

    async def stream_text(self, prompt: str, deadline: float,
                          on_retry: Callable[[str | None], None] | None = None,
                          *, max_tokens: int | None = None,
                          on_finish: Callable[[str], None] | None = None,
                          model: str | None = None,
                          ) -> AsyncGenerator[str, None]:
        """Yield the generated text pieces as the backend streams them (``model``: the one to
        ask a router for; default: ``params.model``).

        `max_tokens` overrides the configured limit downwards (a segment's own budget);
        `on_finish` hears the completion's `finish_reason` (``"length"``: it hit `max_tokens`).
        Closing the generator, or cancelling the task that iterates it (a client that went away,
        a deadline), ends the backend request at once: the connection is closed, which makes
        llama.cpp stop generating for that slot, and nothing is left in the connection pool.

        The request runs in a task of its own (`_Exchange`) that is never cancelled while it is
        inside httpx: a cancellation that lands in httpcore's clean-up of a response (a shielded
        lock, an anyio scope that a native `Task.cancel()` goes through) leaves the connection
        marked ACTIVE and its socket open for good: the backend slot keeps generating for nobody
        and the pool keeps a dead connection. To stop, the exchange's socket is closed instead,
        and httpx ends the request through its ordinary error path.
        """
        exchange = _Exchange(self._texts(prompt, deadline, on_retry, max_tokens=max_tokens,
                                         on_finish=on_finish, model=model))
        try:
            while True:
                item = await exchange.next()
                if item is None:
                    return
                yield item
        finally:
            await exchange.stop()

    async def _texts(self, prompt: str, deadline: float,
                     on_retry: Callable[[str | None], None] | None, *,
                     max_tokens: int | None, on_finish: Callable[[str], None] | None,
                     model: str | None) -> AsyncGenerator[str | httpx.Response, None]:
        """The text pieces, preceded by the response once it has been opened (so that the
        exchange can close its socket)."""
        response = await self._open(prompt, deadline, on_retry, max_tokens, model)
        yield response
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # Some servers ignore `stream`; accept one JSON completion rather than fail.
                raw = await response.aread()
                body = _parse_json(raw.decode("utf-8", "replace"))
                if not isinstance(body, dict):
                    kind = response.headers.get("content-type") or "no content type"
                    raise BackendError(
                        f"the backend answered 200 with neither an event stream nor a JSON "
                        f"completion ({kind}): {raw[:100].decode('utf-8', 'replace')}"
                    )
                _report_finish(body, on_finish)
                _count_usage(body)
                text = _choice_text(body)
                if text:
                    yield text
                return
            event_name = ""
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data = line[5:].strip()
                elif line.startswith("error:"):
                    # Older llama-server builds report a failed slot as an `error: {...}` line.
                    failure = _parse_json(line[6:].strip())
                    raise BackendError(
                        f"the backend failed mid-stream: {_error_text({'error': failure})}"
                    )
                else:
                    if line.startswith("event:"):
                        event_name = line[6:].strip()
                    elif not line:
                        event_name = ""  # an event ends at a blank line
                    continue  # comments, keep-alives, `id:` and `retry:` fields
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise BackendError(
                        f"the backend sent an unreadable event: {data[:100]}"
                    ) from exc
                if event_name == "error":  # `event: error`, the error object as its data
                    raise BackendError(
                        f"the backend failed mid-stream: {_error_text({'error': event})}"
                    )
                if not isinstance(event, dict):
                    raise BackendError(f"the backend sent an unexpected event: {data[:100]}")
                if "error" in event:
                    raise BackendError(f"the backend failed mid-stream: {_error_text(event)}")
                _report_finish(event, on_finish)
                _count_usage(event)
                text = _choice_text(event)
                if text:
                    yield text
        except httpx.ReadTimeout as exc:
            raise BackendTimeout(f"the backend sent nothing for {self._stall_timeout:g} s") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise BackendError(f"the backend connection broke mid-stream ({exc})") from exc
        finally:
            await response.aclose()

    async def model_states(self, timeout: float = 2.0) -> dict[str, str] | None:
        """Each model's status as llama-server's router reports it (``GET /v1/models``:
        loaded, loading, unloaded, ...), or None when the backend does not say (never raises:
        callers only log it)."""
        url = urljoin(self.url, "models")
        try:
            response = await self._http.get(url, headers=await self._headers(), timeout=timeout)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, BackendUnavailable):
            return None
        states: dict[str, str] = {}
        for card in data.get("data", []) if isinstance(data, dict) else []:
            status = card.get("status") if isinstance(card, dict) else None
            if isinstance(status, dict) and isinstance(status.get("value"), str):
                states[str(card.get("id"))] = status["value"]
        return states


class _Exchange:
    """One backend request in its own task, handing its text pieces over one at a time.

    The caller's task never awaits httpx, so whatever cancels the caller cannot interrupt httpx
    half-way. `stop()` ends the request from outside without cancelling it inside httpx: while
    the response streams, its socket is closed (a pending read then fails and httpx cleans up as
    for any broken connection) and an exchange waiting to hand over a piece is released; only
    before the response exists (connecting, waiting for headers, backing off) is the task
    cancelled, once, which httpcore's own handlers cover. Either way the stop waits for the
    task to end, whatever happens to the caller meanwhile.
    """

    _STOP_WAIT_S = 10.0

    def __init__(self, texts: AsyncGenerator[str | httpx.Response, None]) -> None:
        self._texts = texts
        self._items: asyncio.Queue[str | BaseException | None] = asyncio.Queue(maxsize=1)
        self._response: httpx.Response | None = None
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="orpheus-backend-exchange")

    async def next(self) -> str | None:
        """The next text piece; None at the end; raises what the request raised."""
        item = await self._items.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self._texts) as texts:
                async for piece in texts:
                    if isinstance(piece, httpx.Response):
                        self._response = piece
                        continue
                    if self._stopping:
                        return
                    await self._items.put(piece)
                    if self._stopping:
                        return
        except Exception as exc:  # the caller raises it
            if not self._stopping:
                await self._items.put(exc)
            return
        await self._items.put(None)

    async def stop(self) -> None:
        task = self._task
        if task.done():
            return
        self._stopping = True
        response = self._response
        if response is None:
            task.cancel()  # not streaming yet: httpcore's handlers cover one cancellation
        else:
            stream = response.extensions.get("network_stream")
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.aclose())
        while not self._items.empty():  # release an exchange waiting to hand over a piece
            self._items.get_nowait()
        cancelled = False
        deadline = asyncio.get_running_loop().time() + self._STOP_WAIT_S
        while not task.done():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.error("the backend request did not end within %.0f s of being stopped",
                          self._STOP_WAIT_S)
                break
            try:
                await asyncio.wait({task}, timeout=remaining)
            except asyncio.CancelledError:
                cancelled = True  # the caller is being cancelled: finish stopping first
            while not self._items.empty():
                self._items.get_nowait()
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure after the stop is nobody's business
        if cancelled:
            raise asyncio.CancelledError


def _count_usage(event: dict[str, Any]) -> None:
    usage, counter = event.get("usage"), BACKEND_USAGE.get()
    if counter is not None and isinstance(usage, dict):
        counter.add(usage)


def _choice_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices:
        return str(event.get("content", ""))  # llama-server's native /completion shape
    first = choices[0] if isinstance(choices, list) else None
    return str(first.get("text") or "") if isinstance(first, dict) else ""


def _report_finish(event: dict[str, Any], on_finish: Callable[[str], None] | None) -> None:
    """Pass a completion's `finish_reason` on (OpenAI's field; llama.cpp's servers set it on the
    last event: "stop" or "length")."""
    choices = event.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    reason = first.get("finish_reason") if isinstance(first, dict) else None
    if reason is None and "stop_type" in event:  # llama-server's native /completion shape
        reason = "length" if event.get("stop_type") == "limit" else None
    if on_finish is not None and isinstance(reason, str) and reason:
        on_finish(reason)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _error_text(event: dict[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        return str(error.get("message", error))[:300]
    return str(error)[:300]


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: not worth parsing for a cold start
