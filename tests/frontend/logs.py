"""Reading the frontend's access log in tests (records captured by pytest's caplog)."""

from __future__ import annotations

import logging
import time

import pytest

ACCESS_LOGGER = "orpheus.frontend.access"


def access_records(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[logging.LogRecord]:
    """The access-log records so far, waiting (up to 5 s) until there are `count`: the line is
    written when the app returns, just after the last byte of a complete response went out, so
    a client can see the end of the body before the line exists."""
    deadline = time.monotonic() + 5.0
    while True:
        records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.01)
