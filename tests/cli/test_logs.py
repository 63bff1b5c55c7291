"""`orpheus logs` against the local cloud's Cloud Logging (entries made by the logging agent from
lines like the ones the two apps write)."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import grpc
import pytest

from tests.fakecloud.logagent import Revision, entry_from_line
from tests.fixtures.plugin_cloud import RunningCli

FRONTEND = Revision("test-project", "us-central1", "orpheus-frontend",
                    "orpheus-frontend-00002-xyz", "0a1b")
BACKEND = Revision("test-project", "us-central1", "orpheus-backend",
                   "orpheus-backend-00001-abc", "0c2d")
OTHER = Revision("test-project", "us-central1", "someone-elses-service", "x-00001-abc", "0e3f")


def _iso(seconds_ago: float) -> str:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _access(request_id: str, status: int, seconds_ago: float, **fields: Any) -> str:
    level = "INFO" if status < 500 else "ERROR"
    return json.dumps({"severity": level, "message": f"POST /v1/audio/speech {status}",
                       "time": _iso(seconds_ago), "logger": "orpheus.frontend.access",
                       "request_id": request_id, "method": "POST",
                       "path": "/v1/audio/speech", "status": status, "latency_ms": 812.4,
                       "ttfb_ms": 95.1, "response_bytes": 48044, "complete": True,
                       "voice": "tara", "format": "wav", "audio_seconds": 1.0,
                       "outcome": "complete", **fields})


@pytest.fixture
def cloud(fake_cloud: Any) -> Any:
    logging = fake_cloud.services["logging"]

    def write(source: Revision, line: str, stream: str = "stdout") -> None:
        logging.ingest(entry_from_line(line, stream, source, time.time_ns()))

    write(FRONTEND, json.dumps({"severity": "INFO", "message": "frontend ready",
                                "time": _iso(7200), "logger": "orpheus.frontend"}))
    write(BACKEND, "main: model loaded", "stderr")
    write(FRONTEND, _access("req-ok-1", 200, 30, key="ci"))
    write(FRONTEND, json.dumps({"severity": "WARNING", "message": "backend is starting, retry",
                                "time": _iso(20), "logger": "orpheus.frontend.backend",
                                "request_id": "req-bad-2"}))
    write(FRONTEND, _access("req-bad-2", 503, 19, key="default", outcome="failed",
                            error="backend unavailable"))
    write(OTHER, json.dumps({"severity": "ERROR", "message": "not ours", "time": _iso(5)}))
    fake_cloud.clear_log()
    return fake_cloud


def _lines(result: Any) -> list[str]:
    assert result.exit_code == 0, result.everything
    return result.stdout.splitlines()


def test_reads_both_services_in_time_order_one_line_each(cloud: Any, run_cli: Any) -> None:
    lines = _lines(run_cli("logs"))
    assert len(lines) == 4  # the entry of two hours ago is outside the default hour
    ok = lines[0]
    assert "frontend  INFO      POST /v1/audio/speech 200  req=req-ok-1 key=ci" in ok
    assert "audio_s=1" in ok and "ttfb_ms=95.1" in ok and "ms=812.4" in ok
    assert "outcome" not in ok and "logger" not in ok and "response_bytes" not in ok
    assert "WARNING   backend is starting, retry  req=req-bad-2" in lines[1]
    assert "ERROR     POST /v1/audio/speech 503" in lines[2]
    assert "outcome=failed error=backend unavailable" in lines[2]
    # A plain-text line has no time of its own: it is stamped when the agent read it (now).
    assert "backend   DEFAULT   main: model loaded" in lines[3]
    assert not any("not ours" in line for line in lines)
    # One listing call, newest first, filtered by the server.
    [call] = cloud.calls("ListLogEntries")
    assert call.request.order_by == "timestamp desc"
    query = call.request.filter
    assert 'resource.type="cloud_run_revision"' in query
    assert ('(resource.labels.service_name="orpheus-backend" OR '
            'resource.labels.service_name="orpheus-frontend")') in query


def test_filters_by_service_severity_request_and_time(cloud: Any, run_cli: Any) -> None:
    assert [line.split()[2] for line in _lines(run_cli("logs", "backend"))] == ["backend"]
    warnings = _lines(run_cli("logs", "frontend", "--severity", "warning"))
    assert [line.split()[3] for line in warnings] == ["WARNING", "ERROR"]
    request = _lines(run_cli("logs", "--request-id", "req-bad-2"))
    assert len(request) == 2 and all("req=req-bad-2" in line for line in request)
    assert len(_lines(run_cli("logs", "--since", "3h"))) == 5
    assert len(_lines(run_cli("logs", "--since", "25s"))) == 3
    newest = _lines(run_cli("logs", "frontend", "--limit", "1"))
    assert len(newest) == 1 and "503" in newest[0]
    revision = _lines(run_cli("logs", "--revision", "orpheus-backend-00001-abc"))
    assert len(revision) == 1 and "model loaded" in revision[0]


def test_json_prints_the_raw_entries_one_per_line(cloud: Any, run_cli: Any) -> None:
    lines = _lines(run_cli("--json", "logs", "frontend", "--request-id", "req-ok-1"))
    [entry] = [json.loads(line) for line in lines]
    assert entry["jsonPayload"]["request_id"] == "req-ok-1"
    assert entry["jsonPayload"]["key"] == "ci"
    assert entry["resource"]["labels"]["service_name"] == "orpheus-frontend"
    assert entry["severity"] == "INFO" and entry["logName"].endswith("%2Fstdout")


@pytest.mark.parametrize(("args", "needle"), [
    (("logs", "database"), "Unknown service 'database'"),
    (("logs", "--severity", "LOUD"), "Unknown severity 'LOUD'"),
    (("logs", "--request-id", 'x" OR severity>=DEBUG'), "--request-id must be"),
    (("logs", "--since", "yesterday"), "--since 'yesterday' is neither"),
    (("logs", "--revision", "Bad Name"), "is not a Cloud Run revision name"),
    (("logs", "--limit", "0"), "--limit must be at least 1"),
])
def test_bad_input_is_refused_before_any_call(cloud: Any, run_cli: Any, args: tuple[str, ...],
                                               needle: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2, result.everything
    assert needle in result.stderr
    assert cloud.calls("ListLogEntries") == []


def test_disabled_api_and_missing_permission_say_what_to_do(cloud: Any, run_cli: Any) -> None:
    cloud.enforce_apis = True
    result = run_cli("logs")
    assert result.exit_code == 5, result.everything
    assert "the Cloud Logging API (logging.googleapis.com) is disabled" in result.stderr
    assert "orpheus setup" in result.stderr
    cloud.enforce_apis = False
    cloud.deny("logging.logEntries.list")
    result = run_cli("logs")
    assert result.exit_code == 5, result.everything
    assert "logging.logEntries.list" in result.stderr
    assert "roles/logging.viewer" in result.stderr


def test_unavailable_logging_is_one_line(cloud: Any, run_cli: Any) -> None:
    cloud.fail_next("ListLogEntries", grpc.StatusCode.UNAVAILABLE, times=None)
    result = run_cli("logs")
    assert result.exit_code == 8, result.everything
    assert "Traceback" not in result.everything


def test_follow_prints_new_entries_until_ctrl_c(cloud: Any) -> None:
    logging = cloud.services["logging"]
    follow = RunningCli("logs", "frontend", "--follow", "--since", "10m")
    try:
        follow.wait_for("req=req-ok-1")  # the history first
        deadline = time.monotonic() + 60
        while logging.open_sessions == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logging.open_sessions == 1  # a TailLogEntries session, not polling
        logging.ingest(entry_from_line(_access("req-new-3", 200, 0, key="ci"), "stdout",
                                       FRONTEND, time.time_ns()))
        follow.wait_for("req=req-new-3")
        result = follow.interrupt()
    finally:
        follow.kill()
    assert result.exit_code == 0, result.everything
    assert "Traceback" not in result.stderr
    assert result.stdout.count("req=req-new-3") == 1
    deadline = time.monotonic() + 10
    while logging.open_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logging.open_sessions == 0  # the stream was closed, not abandoned
