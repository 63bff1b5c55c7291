"""Reading the frontend's access log in tests. The line is written when the app has finished the
request, which can be a moment after the client has read the last byte: wait for it."""

from __future__ import annotations

import logging
import time

import pytest

ACCESS = "orpheus.frontend.access"


def access_records(caplog: pytest.LogCaptureFixture, count: int = 1,
                   timeout_s: float = 10.0) -> list[logging.LogRecord]:
    """The access log's records, once there are at least `count` of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [r for r in caplog.records if r.name == ACCESS]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)
