"""Named API keys in the local cloud: `orpheus keys` changes the secret, and the deployed frontend
(its key file a secret volume that follows the latest version) picks the change up without a
redeploy, within ``api_key_refresh_s``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.local_cloud import LocalCloud

pytestmark = pytest.mark.llama_server

REFRESH_S = 1.0  # short for the test; the default is 30 s


def status(lc: LocalCloud, key: str) -> int:
    return httpx.get(f"{lc.frontend_url}/v1/models", headers={"X-API-Key": key},
                     timeout=30).status_code


def test_two_keys_work_and_a_revoked_one_stops_within_the_bound(deployed_cloud: LocalCloud,
                                                                 tmp_path: Path) -> None:
    lc = deployed_cloud
    refresh = {"ORPHEUS_API_KEY_REFRESH_S": str(REFRESH_S)}
    deployed = lc.cli("deploy-frontend", **refresh)
    assert deployed.exit_code == 0, deployed.everything
    runner = lc.runner
    assert runner is not None
    frontend = runner.instance("orpheus-frontend")
    outputs = [deployed]

    keys = {}
    for name in ("ci", "web"):
        path = tmp_path / f"{name}.key"
        outputs.append(lc.cli("keys", "create", name, "--key-file", str(path), **refresh))
        assert outputs[-1].exit_code == 0, outputs[-1].everything
        keys[name] = path.read_text().strip()
    assert keys == {n: k for n, k in lc.api_keys().items() if n in keys}
    # Both work on the instance that was running before they existed: no redeploy.
    for key in keys.values():
        deadline = time.monotonic() + 60 * REFRESH_S
        while status(lc, key) != 200 and time.monotonic() < deadline:
            time.sleep(REFRESH_S / 4)
        assert status(lc, key) == 200
    assert runner.instance("orpheus-frontend") is frontend

    outputs.append(lc.cli("keys", "revoke", "ci", **refresh))
    assert outputs[-1].exit_code == 0, outputs[-1].everything
    # Polled up to a generous multiple of the bound (a loaded machine is slow), not timed.
    deadline = time.monotonic() + 60 * REFRESH_S
    while status(lc, keys["ci"]) != 401 and time.monotonic() < deadline:
        time.sleep(REFRESH_S / 4)
    assert status(lc, keys["ci"]) == 401
    assert status(lc, keys["web"]) == 200 and status(lc, lc.api_key) == 200
    assert runner.instance("orpheus-frontend") is frontend

    # The access log names the keys; no output or log line holds one.
    outputs.append(lc.cli("logs", "frontend", "--since", "10m"))
    logged = outputs[-1].stdout
    assert "key=ci" in logged and "key=web" in logged
    listed = lc.cli("keys", "list")
    outputs.append(listed)
    assert "…" + keys["ci"][-4:] in listed.stdout
    instance_log = frontend.log.read_text()
    for key in (*keys.values(), lc.api_key):
        assert key not in instance_log
        assert all(key not in out.everything for out in outputs)
