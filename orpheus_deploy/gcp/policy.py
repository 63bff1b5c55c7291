"""Polling and retry settings for Google Cloud calls, injectable so tests run in milliseconds.

Production uses the defaults. Tests either pass an ``OperationPolicy`` to ``Cloud(...)`` or set
the ``ORPHEUS_POLL_*`` / ``ORPHEUS_RETRY_*`` environment variables (read by :meth:`from_env`),
which also reach a CLI started as a subprocess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

_ENV = {
    "poll_initial_s": "ORPHEUS_POLL_INITIAL_S",
    "poll_max_s": "ORPHEUS_POLL_MAX_S",
    "operation_timeout_s": "ORPHEUS_OPERATION_TIMEOUT_S",
    "retry_initial_s": "ORPHEUS_RETRY_INITIAL_S",
    "retry_max_s": "ORPHEUS_RETRY_MAX_S",
    "retry_deadline_s": "ORPHEUS_RETRY_DEADLINE_S",
    "iam_propagation_s": "ORPHEUS_IAM_PROPAGATION_S",
}


@dataclass(frozen=True)
class OperationPolicy:
    poll_initial_s: float = 1.0
    poll_max_s: float = 10.0
    poll_multiplier: float = 1.5
    operation_timeout_s: float = 1800.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    retry_multiplier: float = 2.0
    retry_deadline_s: float = 120.0
    # How long to wait for an IAM change this tool made to take effect. Google: "typically
    # propagate in 2 minutes, but could potentially take 7 minutes or longer"
    # (cloud.google.com/iam/docs/access-change-propagation); 10 minutes covers the long tail.
    iam_propagation_s: float = 600.0

    @classmethod
    def from_env(cls) -> OperationPolicy:
        values: dict[str, Any] = {}
        for f in fields(cls):
            env = _ENV.get(f.name)
            if env and os.environ.get(env):
                values[f.name] = float(os.environ[env])
        return cls(**values)

    @classmethod
    def fast(cls) -> OperationPolicy:
        """For tests: poll and retry every few milliseconds."""
        return cls(poll_initial_s=0.005, poll_max_s=0.02, operation_timeout_s=30.0,
                   retry_initial_s=0.005, retry_max_s=0.02, retry_deadline_s=1.0,
                   iam_propagation_s=10.0)

    def retry(self) -> Any:
        """A ``google.api_core.retry.Retry`` for transient errors (UNAVAILABLE, 429 rate limits
        are not retried: quota errors must surface; DEADLINE_EXCEEDED and INTERNAL are)."""
        from google.api_core import exceptions, retry

        return retry.Retry(
            predicate=retry.if_exception_type(
                exceptions.ServiceUnavailable,
                exceptions.DeadlineExceeded,
                exceptions.InternalServerError,
                exceptions.BadGateway,
                exceptions.GatewayTimeout,
            ),
            initial=self.retry_initial_s,
            maximum=self.retry_max_s,
            multiplier=self.retry_multiplier,
            timeout=self.retry_deadline_s,
        )

    def storage_retry(self) -> Any:
        """google-cloud-storage's own retry predicate (connection resets, 5xx, 429), our timing."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_delay(
            initial=self.retry_initial_s, maximum=self.retry_max_s,
            multiplier=self.retry_multiplier,
        ).with_timeout(self.retry_deadline_s)

    def poll_delays(self):  # type: ignore[no-untyped-def]
        """Infinite generator of delays between operation polls (exponential, capped)."""
        delay = self.poll_initial_s
        while True:
            yield delay
            delay = min(delay * self.poll_multiplier, self.poll_max_s)
