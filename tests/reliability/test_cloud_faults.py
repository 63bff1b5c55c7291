"""Faults in the (local) cloud during a deploy of the running stack, and what must survive them.

Each test changes a setting so that `deploy --all` has real work (new revisions), breaks the
cloud in the middle of it, and checks the outcome people rely on: a clear error, the previous
revision still serving (`orpheus test --key` passes throughout), nothing lost (the API key's
secret versions, the model object), and a re-run that finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fakecloud.container import Instance
from tests.fakecloud.core import permission_denied

pytestmark = [pytest.mark.llama_server, pytest.mark.reliability]

FRONTEND_SA = "orpheus-frontend@test-project.iam.gserviceaccount.com"
ACCESSOR = "roles/secretmanager.secretAccessor"


@dataclass
class Kept:
    """What a failed deploy must not lose or replace."""

    secret_versions: list[bytes]
    model: dict[str, Any]
    frontend: Instance

    @classmethod
    def of(cls, lc: LocalCloud) -> Kept:
        [model_name] = [o["name"] for o in lc.cloud.storage.storage.get_file_list(
            "orpheus-models-test-project")[0] if o["name"].endswith(".gguf")]
        model = dict(lc.model_object(model_name) or {})
        assert model, "no model object"
        return cls(lc.secret_versions(), model, lc.runner.instance("orpheus-frontend"))

    def check(self, lc: LocalCloud) -> None:
        assert lc.secret_versions() == self.secret_versions
        model = lc.model_object(self.model["name"]) or {}
        assert (model.get("generation"), model.get("md5Hash")) == (
            self.model["generation"], self.model["md5Hash"])


def serves(lc: LocalCloud) -> None:
    result = lc.cli_json("test", "--key", lc.api_key)
    assert result["ok"] is True and result["audio_s"] > 0


def test_permission_denied_mid_deploy_keeps_serving_and_the_rerun_resumes(
        deployed_cloud: LocalCloud) -> None:
    lc, runner = deployed_cloud, deployed_cloud.runner
    assert runner is not None
    kept = Kept.of(lc)
    old_backend = runner.instance("orpheus-backend")
    change = {"ORPHEUS_N_PARALLEL": "2", "ORPHEUS_TEMPERATURE": "0.5"}  # both services change

    def deny_frontend(request: Any) -> None:
        if request.service.name.endswith("/orpheus-frontend"):
            raise permission_denied("run.services.update", request.service.name)

    lc.cloud.before("UpdateService", deny_frontend, times=1000)
    try:
        failed = lc.cli("deploy", "--all", **change)
    finally:
        lc.cloud.hooks.clear()
    assert failed.exit_code == 5, failed.everything
    assert "run.services.update" in failed.stderr
    assert "Traceback" not in failed.everything
    # Mid-deploy: the backend's new revision rolled out (and replaced its instance) before the
    # frontend step was refused; the frontend's previous revision still serves, with it.
    new_backend = runner.instance("orpheus-backend")
    assert new_backend is not old_backend and new_backend.container.env["N_PARALLEL"] == "2"
    assert old_backend.running_pids() == set()
    assert runner.instance("orpheus-frontend") is kept.frontend
    serves(lc)
    kept.check(lc)

    # Permission granted again: the re-run continues at the frontend and nothing else.
    lc.cloud.clear_log()
    resumed = lc.cli_json("deploy", "--all", **change)
    assert resumed["smoke_test"]["ok"] is True
    updated = [c.request.service.name.rsplit("/", 1)[-1]
               for c in lc.cloud.calls("UpdateService") if not c.request.validate_only]
    assert updated == ["orpheus-frontend"]
    new_frontend = runner.instance("orpheus-frontend")
    assert new_frontend is not kept.frontend
    assert new_frontend.container.env["ORPHEUS_TEMPERATURE"] == "0.5"
    assert kept.frontend.running_pids() == set()
    kept.check(lc)


def test_revision_that_cannot_start_leaves_the_previous_one_serving(
        deployed_cloud: LocalCloud) -> None:
    lc, runner = deployed_cloud, deployed_cloud.runner
    assert runner is not None
    kept = Kept.of(lc)
    # Someone removes the frontend's access to the key in the console: Cloud Run refuses to
    # start a new revision that reads the secret (the running one keeps its environment).
    secret = f"projects/{lc.cloud.project_number}/secrets/orpheus-api-key"
    policy = lc.cloud.iam.get(secret)
    for binding in policy.bindings:
        if binding.role == ACCESSOR and f"serviceAccount:{FRONTEND_SA}" in binding.members:
            binding.members.remove(f"serviceAccount:{FRONTEND_SA}")
    lc.cloud.iam.set(secret, policy)
    change = {"ORPHEUS_N_PARALLEL": "2", "ORPHEUS_TEMPERATURE": "0.4"}

    failed = lc.cli("deploy-frontend", **change)
    assert failed.exit_code != 0, failed.everything
    assert "Permission denied on secret" in failed.stderr
    assert runner.instance("orpheus-frontend") is kept.frontend and kept.frontend.alive()
    serves(lc)
    kept.check(lc)

    # `deploy --all` repairs the binding (setup is desired state) and rolls the revision out.
    repaired = lc.cli_json("deploy", "--all", **change)
    assert repaired["smoke_test"]["ok"] is True
    assert f"serviceAccount:{FRONTEND_SA}" in lc.cloud.iam.members(secret, ACCESSOR)
    assert runner.instance("orpheus-frontend").container.env["ORPHEUS_TEMPERATURE"] == "0.4"
    assert kept.frontend.running_pids() == set()
    kept.check(lc)


def test_operations_that_fail_transiently_are_retried(deployed_cloud: LocalCloud) -> None:
    lc, runner = deployed_cloud, deployed_cloud.runner
    assert runner is not None
    kept = Kept.of(lc)
    change = {"ORPHEUS_N_PARALLEL": "2", "ORPHEUS_TEMPERATURE": "0.3"}
    # The rollout's create-or-update and its operation polls fail once each, as Google's
    # front ends do now and then; the client libraries' retries must absorb them.
    lc.cloud.fail_next("UpdateService", grpc.StatusCode.UNAVAILABLE, times=1)
    lc.cloud.fail_next("GetOperation", grpc.StatusCode.UNAVAILABLE, times=2)
    lc.cloud.clear_log()
    done = lc.cli_json("deploy", "--all", **change)
    assert done["smoke_test"]["ok"] is True
    codes = [c.code for c in lc.cloud.calls("UpdateService")]
    assert codes.count("UNAVAILABLE") == 1 and codes[-1] == "OK"
    assert runner.instance("orpheus-frontend").container.env["ORPHEUS_TEMPERATURE"] == "0.3"
    kept.check(lc)
