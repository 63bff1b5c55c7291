"""Issue 11: what Google Cloud does to a first deploy that the local cloud used to forgive.

Each test switches on one strictness of the fake cloud (IAM propagation delay, domain-restricted
sharing, a lost CreateBuild answer) or checks a cost setting, through the real CLI and client
libraries. The whole pipeline with every switch on at once runs in tests/e2e.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.iam.v1 import policy_pb2

from tests.cli.test_setup import iam_disabled_fault

PROJECT = "test-project"
REPO = f"projects/{PROJECT}/locations/us-central1/repositories/orpheus-repo"
FRONTEND = f"projects/{PROJECT}/locations/us-central1/services/orpheus-frontend"


def test_a_source_grant_still_propagating_is_waited_for_not_failed(cloud: Any,
                                                                     run_cli: Any) -> None:
    # The build's account gets its bindings seconds before CreateBuild; Cloud Build refuses a
    # source it cannot read yet (INVALID_ARGUMENT, nothing created). The build waits for the
    # grant, says what it waits for, and starts exactly one build.
    builds = cloud.services["cloudbuild"]
    builds.builder_needs_grants = True
    cloud.iam.propagation_s = 0.6
    assert run_cli("setup").exit_code == 0
    result = run_cli("build")
    assert result.exit_code == 0, result.everything
    refused = [c for c in cloud.calls("CreateBuild") if c.code == "INVALID_ARGUMENT"]
    assert refused, "the fake should have refused the source at least once"
    assert [c.code for c in cloud.calls("CreateBuild")][-1] == "OK"
    assert len(builds.builds) == 1
    assert (f"Waiting for roles/storage.admin on gs://orpheus-build-{PROJECT} for "
            f"{builds.default_service_account} to take effect") in result.stderr


def test_apis_the_preflight_enabled_are_given_time_to_propagate(cloud: Any, run_cli: Any,
                                                                model_file: Path,
                                                                tmp_path: Path) -> None:
    # deploy --all enables the APIs before `doctor`, so setup finds them already enabled; the
    # IAM API's front end may still answer SERVICE_DISABLED for a while, which setup waits out
    # as it does after enabling the APIs itself.
    cloud.enforce_apis = True  # a new project: every API but Service Usage is off
    iam_disabled_fault(cloud, times=2)
    key_file = tmp_path / "api.key"
    result = run_cli("--json", "deploy", "--all", "--model", str(model_file), "--no-test",
                     "--api-key-file", str(key_file))
    assert result.exit_code == 0, result.everything
    assert len(cloud.calls("CreateServiceAccount")) == 4
    assert set(cloud.services["iam"].accounts) == {
        f"orpheus-{kind}@{PROJECT}.iam.gserviceaccount.com" for kind in ("backend", "frontend")}
    payload = cloud.services["secretmanager"].payloads("orpheus-api-key")[-1].decode()
    assert key_file.read_text() == payload + "\n"


def test_a_lost_create_build_answer_never_starts_a_second_build(cloud: Any,
                                                                 run_cli: Any) -> None:
    # CreateBuild is not idempotent: the server started the build, the answer was lost. A
    # retried create would pay for a second CUDA build; the build is found by its tag instead.
    assert run_cli("setup").exit_code == 0
    cloud.fail_next("CreateBuild", grpc.StatusCode.UNAVAILABLE, lose_response=True)
    result = run_cli("--json", "build")
    assert result.exit_code == 0, result.everything
    assert len(cloud.calls("CreateBuild")) == 1
    [build] = cloud.services["cloudbuild"].builds.values()
    assert json.loads(result.stdout)["build_id"] == build.build.id
    tags = list(build.build.tags)
    assert len(tags) == len(set(tags)) and "orpheus" in tags  # name "orpheus" twice: deduped
    [submit] = [t for t in tags if t.startswith("orpheus-submit-")]
    assert cloud.calls("ListBuilds")[0].request.filter == f'tags="{submit}"'


def test_a_create_build_that_never_arrived_is_not_guessed(cloud: Any, run_cli: Any) -> None:
    assert run_cli("setup").exit_code == 0
    cloud.fail_next("CreateBuild", grpc.StatusCode.UNAVAILABLE)  # refused before acting
    result = run_cli("build")
    assert result.exit_code != 0
    assert "no build tagged orpheus-submit-" in result.stderr
    assert "no second build was started" in result.stderr
    assert len(cloud.calls("CreateBuild")) == 1 and not cloud.services["cloudbuild"].builds


def test_domain_restricted_sharing_refuses_all_users_but_not_the_public_frontend(
        cloud: Any, run_cli: Any, model_file: Path, frontend_uri_hook: dict[str, Any]) -> None:
    cloud.org_policies["iam.allowedPolicyMemberDomains"] = {"allowed_values": ["C0abc123"]}
    result = run_cli("--json", "deploy", "--all", "--model", str(model_file))
    assert result.exit_code == 0, result.everything
    assert json.loads(result.stdout)["smoke_test"]["ok"] is True
    assert cloud.services["run"].get("orpheus-frontend").invoker_iam_disabled is True

    # What the old allUsers binding meets under that policy, through the real client.
    from google.cloud import run_v2

    client = run_v2.ServicesClient(transport=run_v2.services.services.transports
                                   .ServicesGrpcTransport(
                                       channel=grpc.insecure_channel(cloud.endpoint)))
    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker",
                                                            members=["allUsers"])])
    with pytest.raises(exceptions.FailedPrecondition,
                       match="do not belong to a permitted customer"):
        client.set_iam_policy(request={"resource": FRONTEND, "policy": policy})


def test_an_org_that_requires_invoker_iam_is_explained(cloud: Any, run_cli: Any,
                                                       model_file: Path) -> None:
    # With run.managed.requireInvokerIam enforced too, a public Cloud Run service is impossible.
    cloud.org_policies["run.managed.requireInvokerIam"] = {"enforce": True}
    result = run_cli("deploy", "--all", "--no-test", "--model", str(model_file))
    assert result.exit_code != 0
    assert "run.managed.requireInvokerIam" in result.stderr
    assert "Traceback" not in result.everything


def test_images_and_build_files_do_not_pile_up_and_status_shows_storage(
        cloud: Any, run_cli: Any, model_file: Path) -> None:
    # A build bucket made by an older version: no lifecycle rule, no public access prevention.
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    client.create_bucket(f"orpheus-build-{PROJECT}", location="us-central1")
    assert run_cli("setup").exit_code == 0
    assert run_cli("upload-model", str(model_file)).exit_code == 0
    assert run_cli("build").exit_code == 0

    repo = cloud.services["artifactregistry"].repositories[REPO]
    policies = {k: v for k, v in repo.cleanup_policies.items()}
    assert repo.cleanup_policy_dry_run is False
    assert policies["keep-recent"].action.name == "KEEP"
    assert policies["keep-recent"].most_recent_versions.keep_count == 3
    assert policies["delete-untagged"].action.name == "DELETE"
    assert policies["delete-untagged"].condition.tag_state.name == "UNTAGGED"
    assert policies["delete-untagged"].condition.older_than.total_seconds() == 7 * 86400
    bucket = cloud.storage.bucket_metadata(f"orpheus-build-{PROJECT}")
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert bucket["lifecycle"]["rule"] == [{"action": {"type": "Delete"},
                                            "condition": {"age": 7}}]

    status = run_cli("--json", "status")
    assert status.exit_code == 0, status.everything
    storage_cost = json.loads(status.stdout)["storage_per_month"]
    image_gib = cloud.services["cloudbuild"].image_bytes / 2**30
    assert storage_cost["registry_gib"] == pytest.approx(2 * image_gib, abs=1e-3)
    assert storage_cost["model_bucket_bytes"] >= model_file.stat().st_size
    assert storage_cost["build_bucket_bytes"] > 0  # the source archive and the build log
    assert storage_cost["usd_per_month"] == pytest.approx((2 * image_gib - 0.5) * 0.10, abs=0.02)
    human = run_cli("status")
    assert "about $0.55/month" in human.stdout

    # A second setup finds the repository as desired: the policies are compared, not rewritten.
    cloud.clear_log()
    assert run_cli("setup").exit_code == 0
    assert not cloud.calls("UpdateRepository")


def test_bad_cleanup_policies_are_refused_by_the_fake_as_by_the_api(cloud: Any) -> None:
    from google.cloud import artifactregistry_v1 as ar

    client = ar.ArtifactRegistryClient(transport=ar.services.artifact_registry.transports
                                       .ArtifactRegistryGrpcTransport(
                                           channel=grpc.insecure_channel(cloud.endpoint)))
    bad = ar.Repository(format_="DOCKER", cleanup_policies={"keep": ar.CleanupPolicy(
        id="keep", action="DELETE",
        most_recent_versions=ar.CleanupPolicyMostRecentVersions(keep_count=3))})
    with pytest.raises(exceptions.InvalidArgument, match="KEEP"):
        client.create_repository(parent=f"projects/{PROJECT}/locations/us-central1",
                                 repository_id="bad", repository=bad)
