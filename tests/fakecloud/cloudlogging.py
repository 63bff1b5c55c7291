"""Fake Cloud Logging v2 (LoggingServiceV2): ListLogEntries and the TailLogEntries stream, over
the entries that the running Cloud Run instances really wrote (tests/fakecloud/logagent.py).

Rules enforced, from the API reference (cloud.google.com/logging/docs/reference/v2/rest/v2/
entries/list and .../entries/tail) and the quotas page (cloud.google.com/logging/quotas):

- ``resource_names`` is required and must name this project (``projects/PROJECT``);
- the filter is the Logging query language (tests/fakecloud/logfilter.py), at most 20,000
  characters; what the fake cannot evaluate is INVALID_ARGUMENT, never "matches everything";
- ``order_by`` is ``timestamp asc`` (the default) or ``timestamp desc``; ``page_size`` defaults
  to 50 and may not exceed 1000; a page token continues a listing;
- both need ``logging.logEntries.list`` (roles/logging.viewer has it);
- a tail session streams only entries received after it opened, holds each for the request's
  ``buffer_window`` (default 2 s, at most 60 s) so late entries can be put in order, and at
  most 10 sessions may be open per project ("Number of open live-tailing sessions").

Not modelled: Cloud Run's own request log (``run.googleapis.com/requests``, one entry per request
with ``httpRequest``) and system log (``varlog/system``); WriteLogEntries; log buckets and views.

Test helpers: ``ingest(entry)`` (what the agent calls), ``entries()``, ``open_sessions``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.cloud.logging_v2.types import (
    ListLogEntriesResponse,
    LogEntry,
    TailLogEntriesResponse,
)
from google.protobuf import json_format

from tests.fakecloud.core import FakeError, FakeService, invalid, rpc
from tests.fakecloud.logfilter import FilterError, Predicate, compile_filter

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_TAIL_SESSIONS = 10
DEFAULT_BUFFER_WINDOW_S = 2.0
MAX_BUFFER_WINDOW_S = 60.0


def as_json(entry: LogEntry) -> dict[str, Any]:
    """The entry as the filter sees it: the API's JSON form (camelCase, severity by name)."""
    return json_format.MessageToDict(LogEntry.pb(entry))


class LoggingFake(FakeService):
    client = ("google.cloud.logging_v2.services.logging_service_v2", "LoggingServiceV2Client")
    key = "logging"
    api = "logging.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self._entries: list[tuple[int, LogEntry, dict[str, Any]]] = []  # (sequence, entry, json)
        self._arrived = threading.Condition(self.lock)
        self._sessions = 0
        self._insert_ids = 0

    # -- what the logging agent calls --------------------------------------------------------
    def ingest(self, entry: LogEntry) -> None:
        with self._arrived:
            self._insert_ids += 1
            if not entry.insert_id:
                entry.insert_id = f"{self._insert_ids:012x}"
            self._entries.append((self._insert_ids, entry, as_json(entry)))
            self._arrived.notify_all()

    def entries(self) -> list[LogEntry]:
        with self.lock:
            return [entry for _, entry, _ in self._entries]

    @property
    def open_sessions(self) -> int:
        """TailLogEntries streams open now."""
        with self.lock:
            return self._sessions

    # -- request checks ----------------------------------------------------------------------
    def _predicate(self, resource_names: Any, text: str) -> Predicate:
        if not resource_names:
            raise invalid("resource_names is required: name a parent such as projects/PROJECT.")
        for name in resource_names:
            if not name.startswith("projects/") or name.count("/") != 1:
                raise invalid(f"Invalid resource name {name!r}: expected projects/PROJECT.")
            self.check_project(name)
        try:
            return compile_filter(text)
        except FilterError as exc:
            raise invalid(str(exc)) from None

    # -- RPCs ----------------------------------------------------------------------------------
    @rpc("logging.logEntries.list")
    def list_log_entries(self, request: Any, context: Any) -> Any:
        matches = self._predicate(request.resource_names, request.filter)
        order = (request.order_by or "timestamp asc").strip().lower()
        if order not in ("timestamp asc", "timestamp desc"):
            raise invalid(f"Invalid order_by {request.order_by!r}: use \"timestamp asc\" or "
                          "\"timestamp desc\".")
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise invalid(f"page_size must be between 0 and {MAX_PAGE_SIZE}.")
        size = request.page_size or DEFAULT_PAGE_SIZE
        try:
            start = int(request.page_token or 0)
        except ValueError:
            raise invalid("Invalid page_token.") from None
        with self.lock:
            found = [(entry, body) for _, entry, body in self._entries if matches(body)]
        found.sort(key=lambda pair: (LogEntry.pb(pair[0]).timestamp.ToNanoseconds(),
                                     pair[0].insert_id),
                   reverse=order.endswith("desc"))
        page = [entry for entry, _ in found[start:start + size]]
        more = start + size < len(found)
        return ListLogEntriesResponse(entries=page,
                                      next_page_token=str(start + size) if more else "")

    @rpc("logging.logEntries.list")
    def tail_log_entries(self, requests: Iterator[Any], context: grpc.ServicerContext
                         ) -> Iterator[Any]:
        first = next(requests)
        matches = self._predicate(first.resource_names, first.filter)
        window = (first.buffer_window.total_seconds() if "buffer_window" in first
                  else DEFAULT_BUFFER_WINDOW_S)
        if not 0 <= window <= MAX_BUFFER_WINDOW_S:
            raise invalid("buffer_window must be between 0 and 60000 milliseconds.")
        with self.lock:
            if self._sessions >= MAX_TAIL_SESSIONS:
                raise FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "Quota exceeded: too many open live-tailing sessions "
                                f"(at most {MAX_TAIL_SESSIONS} per project).")
            self._sessions += 1
            seen = self._insert_ids  # only what arrives from now on
        held: list[tuple[float, LogEntry]] = []
        try:
            while context.is_active():
                with self._arrived:
                    fresh = [(entry, body) for seq, entry, body in self._entries if seq > seen]
                    if fresh:
                        seen = self._insert_ids
                    else:
                        self._arrived.wait(0.1)
                now = time.monotonic()
                held.extend((now + window, entry) for entry, body in fresh if matches(body))
                due = [entry for ready, entry in held if ready <= now]
                if due:
                    held = [(ready, entry) for ready, entry in held if ready > now]
                    due.sort(key=lambda e: LogEntry.pb(e).timestamp.ToNanoseconds())
                    yield TailLogEntriesResponse(entries=due)
                elif held:
                    time.sleep(min(0.05, max(0.0, held[0][0] - now)))
        finally:
            with self.lock:
                self._sessions -= 1


SERVICES = [LoggingFake]
