"""`orpheus logs`: the two services' logs, read from Cloud Logging.

Cloud Run writes what each container prints (and its own request log) to Cloud Logging under the
monitored resource ``cloud_run_revision``, labelled with the service and revision
(cloud.google.com/run/docs/logging). A query is a Logging-query-language filter on those labels,
the severity and the time (``build_filter``, pure); reading lists the newest entries first and
shows them oldest first; following opens a TailLogEntries stream, which sends entries as Cloud
Logging receives them (at most 10 open sessions per project, cloud.google.com/logging/quotas),
so nothing is polled.

The frontend's JSON lines carry ``request_id`` (the caller's X-Request-ID, else Cloud Run's trace
id), which is what ``--request-id`` filters on; the access log line also names the API key that
was used (its NAME, never the key).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import CloudError, InputError

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT",
              "EMERGENCY")
COMPONENTS = ("backend", "frontend")
VIEWER_ROLE = "roles/logging.viewer"
LOGGING_API = "logging.googleapis.com"
# What the frontend accepts as a request id (runtime/frontend/access_log.py), so that the value
# can be put in a filter as it is.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_REVISION = re.compile(r"^[a-z][-a-z0-9]{0,62}$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# The server holds tailed entries this long so that late ones can be put in order (the API's
# default; 0..60 s allowed).
TAIL_BUFFER_S = 2.0
# Reconnect a tail stream that Google ends (sessions do not last forever) after this long.
RECONNECT_DELAY_S = 1.0


@dataclass(frozen=True)
class LogQuery:
    services: tuple[str, ...]  # Cloud Run service names
    since: dt.datetime  # aware, UTC
    severity: str | None = None
    request_id: str | None = None
    revision: str | None = None
    limit: int = 500  # the newest entries read before following


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``1h``, ``30m``, ``2d``, ``1h30m``, ``90s``, or an RFC 3339 time (2026-11-30T10:00:00Z)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    value = text.strip()
    match = _DURATION.match(value)
    if value and match and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return now - dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r} is neither a duration nor a time",
                         "use e.g. 30m, 1h, 2d or 2026-11-30T10:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def make_query(settings: Settings, component: str, since: str, severity: str | None,
               request_id: str | None, revision: str | None, limit: int = 500) -> LogQuery:
    """Validate the options; bad input is an InputError before any call is made."""
    if limit < 1:
        raise InputError("--limit must be at least 1")
    names = settings.names
    by_component = {"backend": names.backend_service, "frontend": names.frontend_service}
    if component == "all":
        services = tuple(by_component[c] for c in COMPONENTS)
    elif component in by_component:
        services = (by_component[component],)
    else:
        raise InputError(f"Unknown service {component!r}", "use backend, frontend or all")
    level = None
    if severity is not None:
        level = severity.strip().upper()
        if level == "WARN":
            level = "WARNING"
        if level not in SEVERITIES:
            raise InputError(f"Unknown severity {severity!r}",
                             f"use one of {', '.join(SEVERITIES[1:])}")
    if request_id is not None and not _REQUEST_ID.match(request_id):
        raise InputError("--request-id must be 1-64 letters, digits, '.', '_' or '-'",
                         "copy it from the X-Request-ID response header")
    if revision is not None and not _REVISION.match(revision):
        raise InputError(f"{revision!r} is not a Cloud Run revision name",
                         "see `orpheus status` for the serving revision")
    return LogQuery(services, parse_since(since), level, request_id, revision, limit)


def build_filter(query: LogQuery) -> str:
    """The Logging query for ``query`` (one restriction per line: lines are ANDed)."""
    services = " OR ".join(f'resource.labels.service_name="{s}"' for s in query.services)
    lines = ['resource.type="cloud_run_revision"',
             f"({services})" if len(query.services) > 1 else services,
             f'timestamp>="{query.since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"']
    if query.revision:
        lines.append(f'resource.labels.revision_name="{query.revision}"')
    if query.severity:
        lines.append(f"severity>={query.severity}")
    if query.request_id:
        lines.append(f'jsonPayload.request_id="{query.request_id}"')
    return "\n".join(lines)


def _explain(err: CloudError, settings: Settings) -> CloudError:
    """The two failures a first `orpheus logs` meets, with the fix spelled out."""
    project = settings.project
    where = f" on project {project}" if project else ""
    if err.kind == "api_disabled":
        return CloudError(f"Cannot read logs: the Cloud Logging API ({LOGGING_API}) is disabled",
                          f"run `orpheus setup` (it enables {LOGGING_API}), or enable it in the "
                          "console", err.exit_code, kind=err.kind)
    if err.kind == "permission":
        return CloudError(err.message, f"grant your account {VIEWER_ROLE} (Logs Viewer){where}",
                          err.exit_code, kind=err.kind)
    return err


@contextmanager
def _reading(settings: Settings) -> Iterator[None]:
    """Library errors leave as CloudErrors with the logging-specific hints."""
    from orpheus_deploy.gcp.errors import translated

    try:
        with translated("read logs", settings.project):
            yield
    except CloudError as err:
        raise _explain(err, settings) from err


def read_entries(settings: Settings, cloud: Cloud, query: LogQuery) -> list[Any]:
    """The newest ``query.limit`` matching entries, oldest first."""
    request = {"resource_names": [f"projects/{cloud.project}"], "filter": build_filter(query),
               "order_by": "timestamp desc", "page_size": min(query.limit, 1000)}
    entries: list[Any] = []
    with _reading(settings):
        for entry in cloud.logging().list_log_entries(request=request, retry=cloud.retry):
            entries.append(entry)
            if len(entries) >= query.limit:
                break
    entries.reverse()
    return entries


def entry_key(entry: Any) -> tuple[str, str, int]:
    """What identifies an entry: Logging removes duplicates with the same log name, insert id and
    timestamp (LogEntry.insert_id)."""
    return entry.log_name, entry.insert_id, type(entry).pb(entry).timestamp.ToNanoseconds()


class Seen:
    """The keys of the last entries shown, to drop the ones a listing and a tail both return."""

    def __init__(self, size: int = 10_000) -> None:
        self._keys: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._size = size

    def add(self, entry: Any) -> bool:
        """False when the entry was already shown."""
        key = entry_key(entry)
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class Tail:
    """A TailLogEntries stream for ``query``: the entries Cloud Logging receives from ``open()``
    on, until ``close()`` (from any thread or a signal handler, e.g. on Ctrl-C).

    The stream is called through the client's transport: the generated method wraps streams in
    an iterator that waits for the first response before it returns, which for a quiet service
    means blocking until someone logs, with nothing to cancel. A stream that Google ends or
    drops is reopened after a second; entries the server reports as suppressed (rate limit, or
    not read fast enough) are passed to ``on_suppressed(reason, count)``.
    """

    def __init__(self, settings: Settings, cloud: Cloud, query: LogQuery,
                 on_suppressed: Callable[[str, int], None] | None = None) -> None:
        self.settings = settings
        self.cloud = cloud
        self.query = query
        self.on_suppressed = on_suppressed
        self._closed = threading.Event()
        self._session = threading.Event()  # set: the current session's request stream ends
        self._call: Any = None

    def _requests(self, session: threading.Event) -> Iterator[Any]:
        from google.cloud.logging_v2.types import TailLogEntriesRequest

        yield TailLogEntriesRequest(
            resource_names=[f"projects/{self.cloud.project}"],
            filter=build_filter(self.query),
            buffer_window=dt.timedelta(seconds=TAIL_BUFFER_S))
        session.wait()  # the session lasts as long as the request stream stays open

    def open(self) -> Tail:
        self._session = threading.Event()
        with _reading(self.settings):
            stub = self.cloud.logging().transport.tail_log_entries
            self._call = stub(self._requests(self._session))
        return self

    def close(self) -> None:
        self._closed.set()
        self._session.set()
        if self._call is not None:
            self._call.cancel()

    def __iter__(self) -> Iterator[Any]:
        import grpc
        from google.api_core import exceptions

        transient = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                     grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ABORTED,
                     grpc.StatusCode.INTERNAL)
        while not self._closed.is_set():
            if self._call is None:
                self.open()
            try:
                for response in self._call:  # TailLogEntriesResponse
                    for info in response.suppression_info:
                        if self.on_suppressed is not None and info.suppressed_count:
                            self.on_suppressed(info.reason.name, info.suppressed_count)
                    yield from response.entries
            except grpc.RpcError as exc:
                if self._closed.is_set() or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                if exc.code() not in transient:
                    with _reading(self.settings):
                        raise exceptions.from_grpc_error(exc) from exc
            self._session.set()
            self._call = None  # ended or dropped by the server: open a new session
            if not self._closed.wait(RECONNECT_DELAY_S):
                continue
