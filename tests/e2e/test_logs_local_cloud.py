"""`orpheus logs` against a deployment in the local cloud: the lines come from what the running
frontend really wrote to stdout, read by the local Cloud Run's logging agent."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.plugin_cloud import RunningCli

pytestmark = pytest.mark.llama_server

SPEECH = {"model": "orpheus", "input": "Logs, please.", "voice": "tara", "response_format": "wav"}


def _speak(lc: LocalCloud, request_id: str) -> None:
    response = httpx.post(f"{lc.frontend_url}/v1/audio/speech", json=SPEECH, timeout=120,
                          headers={"X-API-Key": lc.api_key, "X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id


def _logs_until(lc: LocalCloud, needle: str, *args: str, timeout: float = 60) -> Any:
    """`orpheus logs ARGS` until a line has ``needle``: the access line is written when the
    response ends, and Cloud Logging shows an entry only once its agent has read it."""
    deadline = time.monotonic() + timeout
    while True:
        result = lc.cli("logs", *args)
        assert result.exit_code == 0, result.everything
        if needle in result.stdout or time.monotonic() > deadline:
            return result
        time.sleep(1.0)


def test_a_request_id_is_found_in_the_frontend_logs(deployed_cloud: LocalCloud) -> None:
    lc = deployed_cloud
    request_id = f"e2e-logs-{uuid.uuid4().hex[:8]}"
    _speak(lc, request_id)
    result = _logs_until(lc, "POST /v1/audio/speech 200", "frontend", "--request-id", request_id)
    [line] = [x for x in result.stdout.splitlines() if "POST /v1/audio/speech 200" in x]
    assert "frontend  INFO" in line
    assert f"req={request_id}" in line and "key=default" in line and "voice=tara" in line
    # Every line of that request, and only of that request.
    assert all(f"req={request_id}" in x for x in result.stdout.splitlines())
    # The whole frontend log has the start-up line and this request; the key is in none of it.
    everything = lc.cli("logs", "frontend", "--since", "1d")
    assert "frontend ready" in everything.stdout
    assert lc.api_key not in everything.everything + result.everything


def test_follow_shows_a_line_written_after_it_started(deployed_cloud: LocalCloud) -> None:
    lc = deployed_cloud
    logging = lc.cloud.services["logging"]
    follow = RunningCli("logs", "frontend", "--follow", "--since", "1m", env=lc.env,
                        cwd=lc.root / "cli" / "work")
    try:
        deadline = time.monotonic() + 60
        while logging.open_sessions == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert logging.open_sessions == 1
        request_id = f"e2e-follow-{uuid.uuid4().hex[:8]}"
        _speak(lc, request_id)
        line = follow.wait_for(f"req={request_id}")
        result = follow.interrupt()
    finally:
        follow.kill()
    assert result.exit_code == 0, result.everything
    assert "Traceback" not in result.stderr
    assert "frontend" in line
    assert lc.api_key not in result.everything
