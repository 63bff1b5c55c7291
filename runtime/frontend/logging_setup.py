"""Structured JSON logs, one object per line, in the shape Cloud Logging parses from stdout.

Cloud Logging reads `severity` and `message` and keeps the remaining keys as `jsonPayload`; the
request id rides in a context variable so every line written while serving a request carries it,
including lines from the backend client and the decode pool (`SpeechService.call` runs pool work
inside a copy of the request's context).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "configure_logging",
    "install_request_id_stamp",
    "uvicorn_log_config",
]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else passed through `extra=` is a structured field.
# (uvicorn's `color_message` is its message with terminal colours: noise in a JSON log.)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def install_request_id_stamp() -> None:
    """Stamp the current request id on every record when it is created (idempotent).

    A record factory rather than a handler filter: the id must be read in the context that logs,
    and handlers (Cloud Logging's stdout, pytest's capture) may format it later or elsewhere.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_orpheus_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return record

    factory._orpheus_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger to stdout as JSON (idempotent; used by `python -m runtime.frontend`)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request line at INFO; our access log already covers that.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """Uvicorn's loggers propagate to the root JSON handler; its access log is replaced by ours,
    which also carries latency, time to first byte and audio seconds."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
