"""The local cloud's Cloud Logging: the agent's reading of container lines, the query language,
and the two read RPCs through the real google-cloud-logging client."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud.logging_v2.types import TailLogEntriesRequest

from orpheus_deploy.config import load_settings
from orpheus_deploy.gcp import Cloud, OperationPolicy
from orpheus_deploy.log_lines import entry_dict
from tests.fakecloud.logagent import Revision, entry_from_line
from tests.fakecloud.logfilter import FilterError, compile_filter

FRONTEND = Revision("test-project", "us-central1", "orpheus-frontend", "orpheus-frontend-00001-abc",
                    "00ab")
NOW_NS = 1_780_000_000_000_000_000


def test_json_line_special_fields_become_entry_fields() -> None:
    line = json.dumps({
        "severity": "WARNING", "message": "POST /v1/audio/speech 200",
        "time": "2026-11-30T10:00:01.123Z", "request_id": "abc", "key": "ci",
        "httpRequest": {"requestMethod": "POST", "status": 200},
        "logging.googleapis.com/trace": "projects/test-project/traces/0af7",
        "logging.googleapis.com/labels": {"tenant": "a"},
        "logging.googleapis.com/spanId": "000000000000004a",
    })
    data = entry_dict(entry_from_line(line, "stdout", FRONTEND, NOW_NS))
    assert data["logName"] == "projects/test-project/logs/run.googleapis.com%2Fstdout"
    assert data["resource"] == {"type": "cloud_run_revision", "labels": {
        "project_id": "test-project", "service_name": "orpheus-frontend",
        "revision_name": "orpheus-frontend-00001-abc", "location": "us-central1",
        "configuration_name": "orpheus-frontend"}}
    assert data["severity"] == "WARNING"
    assert data["timestamp"] == "2026-11-30T10:00:01.123Z"  # the line's own time
    assert data["httpRequest"] == {"requestMethod": "POST", "status": 200}
    assert data["trace"] == "projects/test-project/traces/0af7"
    assert data["spanId"] == "000000000000004a"
    assert data["labels"] == {"instanceId": "00ab", "tenant": "a"}
    # Special fields leave the payload; the rest (message included) is the jsonPayload.
    assert data["jsonPayload"] == {"message": "POST /v1/audio/speech 200", "request_id": "abc",
                                   "key": "ci"}


def test_plain_line_is_text_with_default_severity_and_the_read_time() -> None:
    data = entry_dict(entry_from_line("main: server is listening", "stderr", FRONTEND, NOW_NS))
    assert data["textPayload"] == "main: server is listening"
    assert data.get("severity", "DEFAULT") == "DEFAULT"
    assert data["logName"].endswith("run.googleapis.com%2Fstderr")
    assert data["timestamp"] == data["receiveTimestamp"]
    # A JSON value that is not an object is text too, as is a malformed special field.
    assert "textPayload" in entry_dict(entry_from_line("[1, 2]", "stdout", FRONTEND, NOW_NS))
    odd = entry_dict(entry_from_line('{"httpRequest": {"status": "many"}, "time": "soon"}',
                                     "stdout", FRONTEND, NOW_NS))
    assert odd["jsonPayload"] == {"httpRequest": {"status": "many"}}
    assert odd["timestamp"] == odd["receiveTimestamp"]


@pytest.mark.parametrize(("query", "matches"), [
    ('resource.type="cloud_run_revision"\nresource.labels.service_name="orpheus-frontend"', True),
    ('resource.labels.service_name="orpheus-backend"', False),
    ("severity>=WARNING", True),
    ("severity>=ERROR", False),
    ('timestamp>="2026-11-30T10:00:01Z"', True),
    ('timestamp>="2026-11-30T10:00:02Z"', False),
    ('jsonPayload.request_id="abc"', True),
    ('jsonPayload.request_id="ab"', False),
    ("jsonPayload.request_id:AB", True),  # "has": case-insensitive substring
    ('NOT jsonPayload.missing="x"', True),
    ('-jsonPayload.request_id="abc"', False),
    # OR binds tighter than AND in the Logging query language.
    ('severity=ERROR OR severity=WARNING AND jsonPayload.key="ci"', True),
    ('severity=ERROR OR (severity=WARNING AND jsonPayload.key="other")', False),
])
def test_query_language(query: str, matches: bool) -> None:
    entry = entry_dict(entry_from_line(json.dumps({
        "severity": "WARNING", "message": "m", "time": "2026-11-30T10:00:01.5Z",
        "request_id": "abc", "key": "ci"}), "stdout", FRONTEND, NOW_NS))
    assert compile_filter(query)(entry) is matches


@pytest.mark.parametrize("query", ['foo', 'a=~"x"', '(a="1"', "severity>=LOUD", 'a="1" OR',
                                   "x" * 20_001])
def test_what_the_fake_cannot_evaluate_is_refused(query: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(query)


@pytest.fixture
def cloud(fake_cloud: Any) -> Cloud:
    return Cloud(load_settings(), OperationPolicy.fast())


def _ingest(fake_cloud: Any, *lines: str, source: Revision = FRONTEND) -> None:
    logging = fake_cloud.services["logging"]
    for line in lines:
        logging.ingest(entry_from_line(line, "stdout", source, time.time_ns()))


def test_list_pages_orders_and_checks_its_arguments(fake_cloud: Any, cloud: Cloud) -> None:
    base = dt.datetime(2026, 11, 30, 10, tzinfo=dt.timezone.utc)
    _ingest(fake_cloud, *(json.dumps({"message": f"m{i}", "time": (
        base + dt.timedelta(seconds=i)).isoformat()}) for i in (3, 1, 2, 0, 4)))
    client = cloud.logging()
    request = {"resource_names": ["projects/test-project"], "order_by": "timestamp desc",
               "page_size": 2}
    pages = list(client.list_log_entries(request=request).pages)
    assert [len(p.entries) for p in pages] == [2, 2, 1]
    assert [e.json_payload["message"] for p in pages for e in p.entries] == [
        "m4", "m3", "m2", "m1", "m0"]
    with pytest.raises(exceptions.InvalidArgument, match="page_size"):
        list(client.list_log_entries(request={**request, "page_size": 1001}))
    with pytest.raises(exceptions.InvalidArgument, match="order_by"):
        list(client.list_log_entries(request={**request, "order_by": "severity"}))
    with pytest.raises(exceptions.InvalidArgument, match="resource_names"):
        list(client.list_log_entries(request={"filter": ""}))
    with pytest.raises(exceptions.PermissionDenied):
        list(client.list_log_entries(request={"resource_names": ["projects/someone-else"]}))
    fake_cloud.deny("logging.logEntries.list")
    with pytest.raises(exceptions.PermissionDenied, match=r"logging\.logEntries\.list"):
        list(client.list_log_entries(request=request))


def test_tail_streams_only_new_matching_entries(fake_cloud: Any, cloud: Cloud) -> None:
    _ingest(fake_cloud, json.dumps({"message": "before", "request_id": "r1"}))
    closed = threading.Event()

    def requests() -> Any:
        yield TailLogEntriesRequest(resource_names=["projects/test-project"],
                                    filter='jsonPayload.request_id="r1"',
                                    buffer_window=dt.timedelta(seconds=0.2))
        closed.wait()

    call = cloud.logging().transport.tail_log_entries(requests())
    got: list[str] = []

    def read() -> None:
        for response in call:
            got.extend(e.json_payload["message"] for e in response.entries)
            if "after" in got:
                return

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while fake_cloud.services["logging"].open_sessions == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    _ingest(fake_cloud, json.dumps({"message": "other", "request_id": "r2"}),
            json.dumps({"message": "after", "request_id": "r1"}))
    reader.join(10)
    closed.set()
    call.cancel()
    assert got == ["after"]
