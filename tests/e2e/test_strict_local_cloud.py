"""Issue 11 acceptance: `orpheus deploy --all` succeeds in one run on a fresh local cloud with
every strictness of Google Cloud switched on (tests/e2e/local_cloud.py ``be_strict``): APIs off
until enabled, IAM bindings that apply only after a delay, domain-restricted sharing, a build
account with no project role, a CreateBuild whose answer is lost, and Direct VPC egress that
cannot connect for a while on a new frontend instance. The frontend's deadline is set shorter
than that egress delay, so a frontend that took traffic before it could reach the backend fails
the smoke test. The key is searched for in every byte the CLI wrote, here and when the example
GitHub Actions workflow's own command line runs (with CI=true, as on GitHub).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.local_cloud import REGION, LocalCloud
from tests.fixtures.plugin_cloud import FAKE_PROJECT
from tests.fixtures.plugin_localcloud import _stop_and_check

pytestmark = pytest.mark.llama_server

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "github-actions" / "deploy.yml"


def workflow_command() -> list[str]:
    """The `orpheus ...` arguments of the example workflow's Deploy step, with its repository
    variables filled in for the local cloud."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["deploy"]["steps"]
    [script] = [s["run"] for s in steps if s.get("name") == "Deploy"]
    line = script.replace("\\\n", " ").split("|")[0]
    line = (line.replace("${{ vars.GCP_PROJECT }}", FAKE_PROJECT)
            .replace("${{ vars.GCP_REGION }}", REGION))
    words = shlex.split(line)
    assert words[0] == "orpheus"
    return words[1:]


def test_deploy_all_succeeds_in_one_run_on_a_strict_fresh_cloud(
        local_cloud_factory: Callable[..., LocalCloud], tiny_gguf_q8: Path) -> None:
    lc = local_cloud_factory(strict=True, ORPHEUS_API_TIMEOUT_S="8")
    try:
        first = lc.cli("--json", "deploy", "--all", "--model", str(tiny_gguf_q8), CI="true")
        assert first.exit_code == 0, first.everything
        out: dict[str, Any] = json.loads(first.stdout)
        assert out["smoke_test"]["ok"] is True, out["smoke_test"]
        key = lc.api_key
        assert key not in first.everything and key[:12] not in first.everything

        cloud, runner = lc.cloud, lc.runner
        assert runner is not None
        # One paid build although the first CreateBuild's answer was lost, and it was found
        # again rather than submitted twice.
        assert len(cloud.services["cloudbuild"].builds) == 1
        assert cloud.calls("ListBuilds")
        # Public without allUsers (refused by domain-restricted sharing).
        assert lc.service("orpheus-frontend").invoker_iam_disabled is True
        # The new frontend instance's first connections to the backend were cut (VPC egress
        # not ready), and it took traffic only after its /ready probe got through.
        backend_router = runner.router("orpheus-backend")
        assert backend_router.refused_connections > 0
        frontend = runner.instance("orpheus-frontend")
        assert frontend.container.probe_path == "/ready"
        # Both IAM waits were really met: Cloud Build refused the source while its account's
        # grant was younger than the propagation delay, and the backend answered 403 to the
        # frontend's account until its invoker binding applied.
        assert "INVALID_ARGUMENT" in [c.code for c in cloud.calls("CreateBuild")]
        assert 403 in backend_router.denied

        # The example workflow's own command line, on the same project, as CI runs it.
        again = lc.cli(*workflow_command(), CI="true")
        assert again.exit_code == 0, again.everything
        assert json.loads(again.stdout)["smoke_test"]["ok"] is True
        assert key not in again.everything and key[:12] not in again.everything
    finally:
        _stop_and_check(lc)
