"""Fair use under load: per-key limits, and a bounded queue in front of the backend's slots.

Per key (by its NAME, never the key itself), two limits, each off when set to 0:

* streams at once (`ORPHEUS_KEY_MAX_STREAMS`): a POST /v1/audio/speech being answered, or a
  WebSocket utterance being spoken, holds one;
* requests per minute (`ORPHEUS_KEY_REQUESTS_PER_MINUTE`): a token bucket that holds a minute's
  worth (so a burst up to the limit passes) and refills continuously.

Over either, the caller gets 429 with `Retry-After`, in OpenAI's error shape, and nothing else
happens. Other keys are not affected.

Backend slots (`ORPHEUS_BACKEND_SLOTS`, set by the deploy to N_PARALLEL x the backend's maximum
instances): at most that many backend generations run from this process at once. Beyond that a
request waits, first come first served, in a queue of at most `ORPHEUS_QUEUE_SIZE` requests for at
most `ORPHEUS_QUEUE_TIMEOUT` seconds, instead of piling onto a GPU that would only queue it
internally (and time out there, holding a connection). A full queue, or a wait that runs out, is
503 with `Retry-After`: never a hang.

Every counter lives in this process. Cloud Run runs several frontend instances, each with its own
counters, so a key can hold up to `instances x ORPHEUS_KEY_MAX_STREAMS` streams in all, and the
slot budget is per instance too; a global limit would need shared state (a database) on every
request. README "Limits" says how to size them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.frontend.errors import APIError

__all__ = ["BackendSlots", "KeyLimits", "Lease", "TooBusy", "TooManyRequests"]

# A stream ends within seconds, but nobody can say when: ask the caller to come back soon.
STREAM_RETRY_AFTER_S = 2


class TooManyRequests(APIError):
    """429 in OpenAI's shape (its SDKs raise RateLimitError and honour Retry-After)."""

    def __init__(self, message: str, retry_after: float, code: str) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, message, type="requests", code=code,
                         headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class TooBusy(APIError):
    """503: every backend slot is busy and the queue is full, or the wait ran out."""

    def __init__(self, message: str, code: str, retry_after: int) -> None:
        super().__init__(503, message, type="server_error", code=code,
                         headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class Lease:
    """Something held until `release()`; releasing twice is harmless."""

    def __init__(self, release: Callable[[], None] | None = None) -> None:
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyLimits:
    max_streams: int = 0  # 0: no limit
    requests_per_minute: int = 0  # 0: no limit
    clock: Callable[[], float] = time.monotonic
    _streams: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def streams(self, key: str) -> int:
        return self._streams.get(key, 0)

    def admit(self, key: str) -> Lease:
        """Count one request and one stream for `key`, or raise TooManyRequests (nothing
        counted). The stream is held until the lease is released."""
        held = self._streams.get(key, 0)
        if self.max_streams and held >= self.max_streams:
            raise TooManyRequests(
                f"too many concurrent streams for this API key: {held} of "
                f"{self.max_streams} (ORPHEUS_KEY_MAX_STREAMS); retry when one has finished",
                STREAM_RETRY_AFTER_S, "concurrency_limit_exceeded",
            )
        self._take_request(key)
        self._streams[key] = held + 1
        return Lease(lambda: self._end_stream(key))

    def _end_stream(self, key: str) -> None:
        left = self._streams.get(key, 0) - 1
        if left > 0:
            self._streams[key] = left
        else:
            self._streams.pop(key, None)

    def _take_request(self, key: str) -> None:
        limit = self.requests_per_minute
        if not limit:
            return
        now = self.clock()
        rate = limit / 60.0  # tokens per second
        bucket = self._buckets.setdefault(key, _Bucket(float(limit), now))
        bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise TooManyRequests(
                f"rate limit reached for this API key: {limit} requests per minute "
                "(ORPHEUS_KEY_REQUESTS_PER_MINUTE)",
                (1.0 - bucket.tokens) / rate, "rate_limit_exceeded",
            )
        bucket.tokens -= 1.0


class BackendSlots:
    """At most `slots` holders at once (0: no limit); a bounded FIFO queue with a bounded wait."""

    def __init__(self, slots: int, queue_size: int, queue_timeout: float) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def busy(self) -> int:
        return self.slots - self._free if self.slots else 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> Lease:
        if not self.slots:
            return Lease()
        if self._free and not self._waiters:
            self._free -= 1
            return Lease(self._release)
        if len(self._waiters) >= self.queue_size:
            raise TooBusy(
                f"the server is busy: all {self.slots} backend slots are in use and "
                f"{len(self._waiters)} requests are waiting (ORPHEUS_QUEUE_SIZE); retry later",
                "queue_full", retry_after=max(1, math.ceil(self.queue_timeout / 2)),
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.queue_timeout)
        except BaseException as exc:  # the wait ran out, or the caller left
            if granted.done() and not granted.cancelled():
                self._release()  # granted at the last moment: pass it on
            else:
                granted.cancel()
                self._waiters.remove(granted)
            if isinstance(exc, TimeoutError):
                raise TooBusy(
                    f"the server is busy: no backend slot came free within "
                    f"{self.queue_timeout:g} s (ORPHEUS_QUEUE_TIMEOUT); retry later",
                    "queue_timeout", retry_after=max(1, math.ceil(self.queue_timeout / 2)),
                ) from None
            raise
        return Lease(self._release)

    def _release(self) -> None:
        while self._waiters:
            granted = self._waiters.popleft()
            if not granted.done():
                granted.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1
