"""What Cloud Run's logging agent does with a container's output: one LogEntry per line.

Cloud Run sends every line a container writes to stdout or stderr to Cloud Logging, in the logs
``run.googleapis.com/stdout`` and ``run.googleapis.com/stderr`` of the monitored resource
``cloud_run_revision`` (labels project_id, service_name, revision_name, location,
configuration_name), with the instance in the entry label ``instanceId``
(cloud.google.com/run/docs/logging, "Writing container logs"). A line that is a JSON object
becomes a structured entry: the special fields of Google's "Structured logging" page
(cloud.google.com/logging/docs/structured-logging, "Special JSON fields in messages") set the
LogEntry's own fields and leave the payload (``severity``, ``httpRequest``, ``time`` /
``timestamp`` / ``timestampSeconds`` + ``timestampNanos``, and the ``logging.googleapis.com/``
fields insertId, labels, operation, sourceLocation, spanId, trace, trace_sampled); everything
else, ``message`` included, is the ``jsonPayload``. Any other line is a ``textPayload`` with
severity DEFAULT. An entry without a time of its own gets the time the line was read.

``start_process`` runs a command with both streams piped through that agent: each line is still
appended to the instance's log file (what the tests and the runner's error messages read) and is
handed to ``sink(entry)`` as it arrives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from google.cloud.logging_v2.types import LogEntry
from google.logging.type import http_request_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from runtime.backend.processes import death_signal
from tests.fakecloud.logfilter import SEVERITY_RANK

_PREFIX = "logging.googleapis.com/"
# Special field -> LogEntry field, for the fields that are plain strings or booleans.
_SCALARS = {f"{_PREFIX}insertId": "insert_id", f"{_PREFIX}spanId": "span_id",
            f"{_PREFIX}trace": "trace", f"{_PREFIX}trace_sampled": "trace_sampled"}
_MESSAGES = {f"{_PREFIX}operation": "operation", f"{_PREFIX}sourceLocation": "source_location"}


@dataclass(frozen=True)
class Revision:
    """Where a line comes from: the monitored resource and the instance."""

    project: str
    location: str
    service: str
    revision: str
    instance_id: str

    @classmethod
    def of(cls, service_name: str, revision: str) -> Revision:
        """A new instance of a revision of ``projects/P/locations/L/services/S``."""
        parts = service_name.split("/")
        return cls(parts[1], parts[3], parts[5], revision, uuid.uuid4().hex * 2)

    def resource(self) -> dict[str, Any]:
        return {"type": "cloud_run_revision", "labels": {
            "project_id": self.project, "service_name": self.service,
            "revision_name": self.revision, "location": self.location,
            "configuration_name": self.service}}


def _timestamp(value: Any) -> timestamp_pb2.Timestamp | None:
    stamp = timestamp_pb2.Timestamp()
    try:
        if isinstance(value, str):
            stamp.FromDatetime(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        elif isinstance(value, dict):  # {"seconds": ..., "nanos": ...}
            stamp.seconds, stamp.nanos = int(value.get("seconds", 0)), int(value.get("nanos", 0))
        else:
            return None
    except (TypeError, ValueError):
        return None
    return stamp


def entry_from_line(line: str, stream: str, source: Revision, received_ns: int) -> LogEntry:
    """The LogEntry Cloud Run's agent makes of one line written to ``stream``."""
    received = timestamp_pb2.Timestamp()
    received.FromNanoseconds(received_ns)
    entry = LogEntry.pb(LogEntry())
    entry.log_name = f"projects/{source.project}/logs/run.googleapis.com%2F{stream}"
    entry.resource.type = "cloud_run_revision"
    entry.resource.labels.update(source.resource()["labels"])
    entry.labels["instanceId"] = source.instance_id
    entry.receive_timestamp.CopyFrom(received)
    try:
        payload = json.loads(line)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        entry.text_payload = line
        entry.timestamp.CopyFrom(received)
        return LogEntry.wrap(entry)

    when = None
    for key in ("time", "timestamp"):
        if key in payload:
            when = _timestamp(payload.pop(key)) or when
    if "timestampSeconds" in payload:
        when = _timestamp({"seconds": payload.pop("timestampSeconds"),
                           "nanos": payload.pop("timestampNanos", 0)}) or when
    entry.timestamp.CopyFrom(when or received)
    severity = str(payload.pop("severity", "DEFAULT")).upper()
    entry.severity = SEVERITY_RANK.get(severity, 0)  # type: ignore[assignment]
    if isinstance(payload.get("httpRequest"), dict):
        request = http_request_pb2.HttpRequest()
        with contextlib.suppress(json_format.ParseError):  # malformed: stays in the payload
            json_format.ParseDict(payload["httpRequest"], request, ignore_unknown_fields=True)
            entry.http_request.CopyFrom(request)
            del payload["httpRequest"]
    labels = payload.pop(f"{_PREFIX}labels", None)
    if isinstance(labels, dict):
        entry.labels.update({str(k): str(v) for k, v in labels.items()})
    for key, field in _SCALARS.items():
        if key in payload:
            value = payload.pop(key)
            setattr(entry, field, bool(value) if field == "trace_sampled" else str(value))
    for key, field in _MESSAGES.items():
        if isinstance(payload.get(key), dict):
            with contextlib.suppress(json_format.ParseError):
                json_format.ParseDict(payload.pop(key), getattr(entry, field),
                                      ignore_unknown_fields=True)
    body = struct_pb2.Struct()
    body.update(payload)
    entry.json_payload.CopyFrom(body)
    return LogEntry.wrap(entry)


def start_process(argv: Sequence[str], log_path: Path, source: Revision,
                  sink: Callable[[LogEntry], None] | None, env: Mapping[str, str],
                  cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` (its own session, killed with the test process) with stdout and stderr
    read line by line: appended to ``log_path`` and turned into entries for ``sink``."""
    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(env), cwd=cwd, start_new_session=True,
                               preexec_fn=death_signal(signal.SIGKILL))
    log = log_path.open("ab")
    lock = threading.Lock()

    def pump(pipe: IO[bytes], stream: str) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                with lock:
                    log.write(raw)
                    log.flush()
                if sink is not None:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    sink(entry_from_line(line, stream, source, time.time_ns()))

    pumps = [threading.Thread(target=pump, args=(pipe, name), daemon=True,
                              name=f"logagent-{source.service}-{name}")
             for pipe, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for thread in pumps:
        thread.start()

    def close_when_done() -> None:
        for thread in pumps:
            thread.join()
        log.close()

    threading.Thread(target=close_when_done, daemon=True).start()
    return process
