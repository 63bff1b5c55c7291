"""Waiting for long-running operations with visible progress and injectable polling."""

from __future__ import annotations

import time
from typing import Any

from orpheus_deploy.errors import EXIT_UNAVAILABLE, CloudError
from orpheus_deploy.gcp.errors import map_error
from orpheus_deploy.gcp.policy import OperationPolicy


def wait_for(operation: Any, label: str, policy: OperationPolicy | None = None,
             progress: Any = None) -> Any:
    """Poll a ``google.api_core.operation.Operation`` until done; return its result.

    ``progress`` is an optional callable ``(label, elapsed_s)`` (the UI passes a spinner update);
    errors become CloudError naming ``label``.
    """
    policy = policy or OperationPolicy.from_env()
    start = time.monotonic()
    delays = policy.poll_delays()
    try:
        while not operation.done(retry=policy.retry()):
            elapsed = time.monotonic() - start
            if elapsed > policy.operation_timeout_s:
                raise CloudError(f"Timed out after {elapsed:.0f}s waiting to {label}",
                                 "the operation may still finish; re-run the command later",
                                 EXIT_UNAVAILABLE, kind="unavailable")
            if progress is not None:
                progress(label, elapsed)
            time.sleep(next(delays))
        return operation.result(timeout=0)
    except CloudError:
        raise
    except Exception as exc:
        raise map_error(exc, label) from exc
