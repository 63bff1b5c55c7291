"""Waiting for a change Google Cloud has accepted but does not enforce everywhere yet.

IAM bindings "typically propagate in 2 minutes, but could potentially take 7 minutes or longer"
(cloud.google.com/iam/docs/access-change-propagation), and an API just enabled may still answer
SERVICE_DISABLED for a few minutes. A step that uses such a change right after making it
retries while the failure is the one propagation explains, for a bounded time, saying what it
waits for; any other failure, or the same one after the budget, is raised as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from orpheus_deploy.gcp.policy import OperationPolicy

T = TypeVar("T")

# Said once per wait: why it may take a while.
IAM_DELAY_NOTE = "IAM changes typically take 2 minutes to apply, sometimes 7 or more"
_REPORT_EVERY_S = 10.0


def until_applied(attempt: Callable[[], T], *, waiting: Callable[[Exception], bool], what: str,
                  policy: OperationPolicy, budget_s: float | None = None,
                  report: Callable[[str], None] | None = None) -> T:
    """``attempt()`` until it succeeds, retrying while ``waiting(exc)`` says its failure is the
    propagation of ``what`` ("roles/run.invoker on orpheus-backend for orpheus-frontend@…")
    and at most ``budget_s`` (default: the policy's IAM propagation time) has passed.

    ``report`` hears a progress line at the first retry and then every ~10 s; the last failure
    is raised unchanged when the budget is spent or the failure is of another kind.
    """
    budget = policy.iam_propagation_s if budget_s is None else budget_s
    started = time.monotonic()
    delays = policy.poll_delays()
    reported_at: float | None = None
    while True:
        try:
            return attempt()
        except Exception as exc:
            delay = next(delays)
            elapsed = time.monotonic() - started
            if not waiting(exc) or elapsed + delay > budget:
                raise
            if report is not None and (reported_at is None
                                       or elapsed - reported_at >= _REPORT_EVERY_S):
                reported_at = elapsed
                report(f"Waiting for {what} to take effect: {elapsed:.0f}s of at most "
                       f"{budget:.0f}s")
            time.sleep(delay)
