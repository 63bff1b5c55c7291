"""Acceptance of issue 5 through the `orpheus` CLI against the fake cloud."""

from __future__ import annotations

import contextlib
import http.server
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import run_v2

from orpheus_deploy.build_context import list_files
from tests.fixtures.local_http import serving

REPO = Path(__file__).resolve().parents[2]
PROJECT = "test-project"
SA = "{}@test-project.iam.gserviceaccount.com"


def deploy_all(run_cli: Any, model: Path | None, *extra: str) -> Any:
    args = ["--json", "deploy", "--all", *extra]
    if model is not None:
        args += ["--model", str(model)]
    return run_cli(*args)


def recorded_updates(cloud: Any, service: str) -> list[run_v2.Service]:
    return [c.request.service for c in cloud.calls("UpdateService")
            if c.request.service.name.endswith(f"/services/{service}")
            and not c.request.validate_only]


def invoker_members(cloud: Any, service: str) -> set[str]:
    return cloud.iam.members(f"projects/{PROJECT}/locations/us-central1/services/{service}",
                             "roles/run.invoker")


def test_deploy_all_end_to_end_then_nothing_to_do(cloud: Any, run_cli: Any, model_file: Path,
                                                 frontend_uri_hook: dict[str, Any]) -> None:
    first = deploy_all(run_cli, model_file)
    assert first.exit_code == 0, first.everything
    out = json.loads(first.stdout)
    assert out["smoke_test"]["ok"] is True
    checks = {c["name"]: c["status"] for c in out["smoke_test"]["checks"]}
    assert checks == {"no key": 401, "wrong key": 401, "right key": 200}
    assert out["smoke_test"]["audio_s"] > 0

    # The build: the uploaded archive is exactly what .gcloudignore lets through.
    [build] = cloud.services["cloudbuild"].builds.values()
    assert build.source_files == list_files(REPO)
    assert "cloudbuild.yaml" in build.source_files
    assert not any(f.startswith(("tests/", ".venv/", "orpheus_deploy/"))
                   for f in build.source_files)
    digests = {i.name.rsplit("/", 1)[-1].split(":")[0]: i.digest
               for i in build.build.results.images}

    # Backend spec, field by field, from the request the fake recorded.
    [backend] = recorded_updates(cloud, "orpheus-backend")
    t = backend.template
    [c] = t.containers
    assert c.image.endswith(f"/orpheus-backend@{digests['orpheus-backend']}")
    assert t.node_selector.accelerator == "nvidia-l4"
    assert dict(c.resources.limits) == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert c.resources.cpu_idle is False and c.resources.startup_cpu_boost is True
    assert t.gpu_zonal_redundancy_disabled is True
    assert backend.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (0, 1)
    assert t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    assert t.timeout.total_seconds() == 600
    assert [(v.name, v.gcs.bucket, v.gcs.read_only) for v in t.volumes] == [
        ("model-storage", f"orpheus-models-{PROJECT}", True)]
    assert [(m.name, m.mount_path) for m in c.volume_mounts] == [("model-storage", "/models")]
    env = {e.name: e.value for e in c.env}
    assert env["MODEL_PATH"] == f"/models/{model_file.name}"
    assert (env["N_GPU_LAYERS"], env["N_CTX"], env["N_PARALLEL"]) == ("999", "16384", "4")
    assert c.startup_probe.http_get.path == "/health"
    assert c.startup_probe.period_seconds * c.startup_probe.failure_threshold >= 600
    assert t.service_account == SA.format("orpheus-backend")
    assert t.revision == ""

    # Frontend spec.
    [frontend] = recorded_updates(cloud, "orpheus-frontend")
    t = frontend.template
    [c] = t.containers
    assert c.image.endswith(f"/orpheus-frontend@{digests['orpheus-frontend']}")
    assert frontend.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    assert dict(c.resources.limits) == {"cpu": "1", "memory": "1Gi"}
    assert t.service_account == SA.format("orpheus-frontend")
    env = {e.name: e for e in c.env}
    backend_uri = cloud.services["run"].get("orpheus-backend").uri
    assert env["ORPHEUS_API_URL"].value == f"{backend_uri}/v1/completions"
    assert env["ORPHEUS_BACKEND_AUTH"].value == "google-id-token"
    assert env["API_KEY_FILE"].value == "/secrets/orpheus/api-keys.json"
    [volume] = t.volumes
    assert volume.secret.secret == "orpheus-api-key"
    assert [(i.path, i.version) for i in volume.secret.items] == [("api-keys.json", "latest")]
    assert t.vpc_access.egress == run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
    assert [(n.network, n.subnetwork) for n in t.vpc_access.network_interfaces] == [
        ("default", "default")]
    assert cloud.compute.subnet("us-central1", "default").private_ip_google_access is True

    # IAM: only the frontend's account may invoke the backend; anyone the frontend, through
    # the disabled invoker check rather than an allUsers binding (refused under DRS).
    assert invoker_members(cloud, "orpheus-backend") == {
        f"serviceAccount:{SA.format('orpheus-frontend')}"}
    assert backend.invoker_iam_disabled is False and frontend.invoker_iam_disabled is True
    assert invoker_members(cloud, "orpheus-frontend") == set()

    # Second run: everything is already as desired, so not one mutating call.
    cloud.clear_log()
    second = deploy_all(run_cli, model_file)
    assert second.exit_code == 0, second.everything
    assert [repr(c) for c in cloud.mutating_calls()] == []
    assert json.loads(second.stdout)["smoke_test"]["ok"] is True

    # The end of the run says where to try it.
    frontend_uri = cloud.services["run"].get("orpheus-frontend").uri
    assert out["playground_url"] == f"{frontend_uri}/playground"
    human = run_cli("deploy", "--all", "--model", str(model_file))
    assert human.exit_code == 0, human.everything
    assert f"Try it: open {frontend_uri}/playground in a browser" in human.stderr


def test_failed_frontend_step_resumes_there(cloud: Any, run_cli: Any, model_file: Path,
                                            frontend_uri_hook: dict[str, Any]) -> None:
    cloud.services["run"].fail_revisions["orpheus-frontend"] = (
        "The user-provided container failed to start and listen on the port defined by "
        "PORT=5005 within the allocated timeout.")
    first = run_cli("deploy", "--all", "--model", str(model_file))
    assert first.exit_code != 0
    assert "container did not become ready" in first.stderr
    assert "failed to start and listen" in first.stderr
    assert "Traceback" not in first.everything

    del cloud.services["run"].fail_revisions["orpheus-frontend"]
    cloud.clear_log()
    second = deploy_all(run_cli, model_file)
    assert second.exit_code == 0, second.everything
    frontend = f"projects/{PROJECT}/locations/us-central1/services/orpheus-frontend"
    mutated = sorted((c.method, c.request.resource if c.method == "SetIamPolicy"
                      else c.request.service.name) for c in cloud.mutating_calls())
    # It continues at the frontend's roll-out (public through its disabled invoker check: no
    # binding to write); setup, upload, build and the backend are found as desired.
    assert mutated == [("UpdateService", frontend)]


def test_quota_and_invalid_spec_are_explained(cloud: Any, run_cli: Any, model_file: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cloud.services["run"].gpu_quota["no_zonal"] = 0
    # deploy --all finds it in its preflight (tests/deploy/test_doctor.py), before the build.
    result = run_cli("deploy", "--all", "--no-test", "--model", str(model_file))
    assert result.exit_code == 7, result.everything
    assert "request quota NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion" in result.stderr
    assert "console.cloud.google.com/iam-admin/quotas?project=test-project" in result.stderr
    # Cloud Run's own refusal, when a deploy step runs without the preflight.
    assert run_cli("setup").exit_code == 0
    assert run_cli("upload-model", str(model_file)).exit_code == 0
    assert run_cli("build").exit_code == 0
    result = run_cli("deploy-backend")
    assert result.exit_code == 7, result.everything
    assert "request nvidia-l4 quota (without zonal redundancy) in region us-central1" in \
        result.stderr
    assert "console.cloud.google.com/iam-admin/quotas?project=test-project" in result.stderr

    # The same shortage reported by the revision instead of the request.
    cloud.services["run"].gpu_quota["no_zonal"] = 1
    cloud.services["run"].fail_revisions["orpheus-backend"] = (
        "Quota exceeded for total allowable count of GPUs per project per region.")
    result = run_cli("deploy-backend")
    assert result.exit_code == 7, result.everything
    assert "request nvidia-l4 quota (without zonal redundancy)" in result.stderr
    del cloud.services["run"].fail_revisions["orpheus-backend"]

    monkeypatch.setenv("ORPHEUS_BACKEND_CPU", "2")
    result = run_cli("deploy-backend")
    assert result.exit_code != 0
    assert "Total cpu < 4 is not supported with GPU" in result.stderr
    assert "Traceback" not in result.everything


def test_cpu_or_memory_quota_is_explained_as_quota(cloud: Any, run_cli: Any,
                                                  model_file: Path) -> None:
    # Cloud Run's answer when the regional CPU allocation quota is short (its wording, from a
    # real deploy): it says "must", but the spec is fine and the fix is quota or fewer instances.
    assert deploy_all(run_cli, model_file, "--no-test").exit_code == 0
    cloud.fail_next(
        "UpdateService", grpc.StatusCode.INVALID_ARGUMENT,
        message="spec.template.metadata.annotations[autoscaling.knative.dev/maxScale]: Max "
                "instances must be set to 0 or fewer to set the requested total CPU. Consider "
                "running your workload in a region with greater capacity, or requesting an "
                "increase in quota for this region if you are seeing sustained usage near this "
                "limit, see https://cloud.google.com/run/quotas. Quota violated: "
                "CpuAllocPerProjectRegion requested: 60000 allowed: 20000")
    result = run_cli("deploy-frontend", env={"ORPHEUS_FRONTEND_CPU": "2"})
    assert result.exit_code == 7, result.everything
    assert "not enough Cloud Run quota in us-central1" in result.stderr
    assert "CpuAllocPerProjectRegion" in result.stderr
    assert "console.cloud.google.com/iam-admin/quotas?project=test-project" in result.stderr
    assert "rejected the spec" not in result.stderr


def test_a_service_account_cloud_run_does_not_know_yet_is_waited_for(
        cloud: Any, run_cli: Any, model_file: Path) -> None:
    # After `destroy` (which keeps the bucket, model and build state), `deploy --all` recreates
    # the service accounts and reaches deploy-backend seconds later; accounts are eventually
    # consistent, so Cloud Run may not know the new one yet.
    backend_sa = SA.format("orpheus-backend")
    cloud.fail_next("UpdateService", grpc.StatusCode.INVALID_ARGUMENT, times=2,
                    message=f"Service account {backend_sa} does not exist.")
    result = deploy_all(run_cli, model_file, "--no-test")
    assert result.exit_code == 0, result.everything
    assert cloud.services["run"].get("orpheus-backend").template.service_account == backend_sa


def test_failed_build_step_shows_its_log_tail(cloud: Any, run_cli: Any, model_file: Path) -> None:
    assert run_cli("setup").exit_code == 0
    cloud.services["cloudbuild"].fail_steps["build-backend"] = [
        "-- Detecting CUDA compiler", "nvcc fatal   : Unsupported gpu architecture 'compute_89'"]
    result = run_cli("build")
    assert result.exit_code != 0
    assert "at step 'build-backend'" in result.stderr
    assert "nvcc fatal   : Unsupported gpu architecture 'compute_89'" in result.stderr
    # Nothing was recorded, so the next build runs again instead of deploying stale digests.
    del cloud.services["cloudbuild"].fail_steps["build-backend"]
    ok = run_cli("--json", "build")
    assert ok.exit_code == 0, ok.everything
    assert json.loads(ok.stdout)["skipped"] is False
    again = run_cli("--json", "build")
    assert json.loads(again.stdout)["skipped"] is True
    assert len(cloud.services["cloudbuild"].builds) == 2


def test_build_grants_its_service_account_the_build_bucket_and_the_repository(
        cloud: Any, run_cli: Any) -> None:
    # A project created since 2024 builds as the Compute Engine default account, which has no
    # role at all where the organization disables the automatic Editor grant: it cannot read the
    # source, write the log to our logs bucket, or push the images unless `build` grants that.
    builds = cloud.services["cloudbuild"]
    builds.builder_needs_grants = True
    assert run_cli("setup").exit_code == 0
    result = run_cli("--json", "build")
    assert result.exit_code == 0, result.everything
    assert json.loads(result.stdout)["skipped"] is False

    member = f"serviceAccount:{builds.default_service_account}"
    policy = cloud.storage.storage.get_bucket_iam_policy(f"orpheus-build-{PROJECT}")
    assert {b["role"] for b in policy["bindings"] if member in b["members"]} == {
        "roles/storage.admin"}
    repo = f"projects/{PROJECT}/locations/us-central1/repositories/orpheus-repo"
    assert cloud.iam.members(repo, "roles/artifactregistry.writer") == {member}
    # Granted on those two resources only, never project-wide.
    assert not cloud.calls("SetIamPolicy", service="resourcemanager.v3.Projects")

    # A forced rebuild finds the bindings in place and writes no policy.
    cloud.clear_log()
    again = run_cli("--json", "build", "--force")
    assert again.exit_code == 0, again.everything
    assert not [c for c in cloud.mutating_calls() if "iam" in c.method.lower()]


def test_plan_on_a_fresh_project_lists_everything_to_create(cloud: Any, run_cli: Any) -> None:
    result = run_cli("--json", "plan")
    assert result.exit_code == 0, result.everything
    rows = {r["key"]: r["action"] for r in json.loads(result.stdout)["results"]}
    for key in ("run-service/orpheus-backend", "run-service/orpheus-frontend",
                "subnet-private-google-access/us-central1/default"):
        assert key in rows
    assert all(action in ("create", "update") for action in rows.values()), rows
    assert len(rows) >= 12
    assert cloud.mutating_calls() == []


def test_destroy_then_status_leaves_only_the_bucket(cloud: Any, run_cli: Any, model_file: Path,
                                                   frontend_uri_hook: dict[str, Any]) -> None:
    assert deploy_all(run_cli, model_file).exit_code == 0
    status = json.loads(run_cli("--json", "status").stdout)
    assert status["services"]["orpheus-backend"]["ready"] is True
    assert status["cost_per_hour"]["total_usd"] > 0.5
    # The limits the deployed frontend runs with, read back from its revision.
    assert status["limits"] == {
        "key_max_streams": 0, "key_requests_per_minute": 0, "backend_slots": 4,
        "queue_size": 16, "queue_timeout_s": 30, "request_timeout_s": 360,
        "source": "deployed", "per": "frontend instance"}
    shown = run_cli("status").stdout
    assert "Limits (deployed, per frontend instance): per API key no limit on streams" in shown
    assert "4 backend slots, then a queue of 16 waiting up to 30 s" in shown

    refused = run_cli("destroy")  # no --yes and no terminal: nothing is deleted
    assert refused.exit_code != 0
    assert cloud.services["run"].get("orpheus-frontend") is not None

    gone = run_cli("--yes", "destroy")
    assert gone.exit_code == 0, gone.everything
    status = json.loads(run_cli("--json", "status").stdout)
    assert status["existing"] == [f"bucket/orpheus-models-{PROJECT}"]
    assert cloud.storage.object_metadata(f"orpheus-models-{PROJECT}", model_file.name)
    assert status["images"] == {"backend": None, "frontend": None}
    assert status["limits"]["source"] == "configured"


def test_destroy_delete_model_empties_buckets_of_any_size(cloud: Any, run_cli: Any) -> None:
    # The storage client's bucket.delete(force=True) refuses a bucket of more than 256 objects;
    # both buckets are emptied object by object instead (one delete for both).
    from orpheus_deploy.config import load_settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.build import ensure_build_bucket

    assert run_cli("setup").exit_code == 0
    settings = load_settings()
    storage = Cloud(settings).storage()
    buckets = (settings.names.bucket, ensure_build_bucket(settings, Cloud(settings)))
    for name, count in zip(buckets, (257, 3), strict=True):
        for i in range(count):
            storage.bucket(name).blob(f"piece-{i:03d}").upload_from_string(b"x")
    gone = run_cli("--json", "--yes", "destroy", "--delete-model")
    assert gone.exit_code == 0, gone.everything
    actions = {r["key"]: r["action"] for r in json.loads(gone.stdout)["results"]}
    assert [actions[f"bucket/{name}"] for name in buckets] == ["delete", "delete"]
    assert [storage.lookup_bucket(name) for name in buckets] == [None, None]


def test_smoke_test_against_the_real_frontend_app(cloud: Any, run_cli: Any,
                                                 frontend_factory: Any) -> None:
    running = frontend_factory()
    ok = run_cli("--json", "test", "--url", running.base_url, "--key", running.api_key)
    assert ok.exit_code == 0, ok.everything
    bad = run_cli("--json", "test", "--url", running.base_url, "--key", "not-the-key-at-all")
    assert bad.exit_code == 1
    result = json.loads(bad.stdout)  # one JSON object, error included
    assert [c["ok"] for c in result["checks"]] == [True, True, False]
    assert result["error"]["message"].startswith("Smoke test of")
    assert "not-the-key-at-all" not in bad.everything


def test_no_credentials_deploy_all_is_a_dry_run(run_cli: Any, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run_cli("deploy", "--all")
    assert result.exit_code == 0, result.everything
    assert "DRY RUN" in result.stderr
    assert "not checked: no credentials" in result.stderr
    assert "application-default login" in result.stderr
    for other in (["status"], ["plan"], ["build"], ["deploy-backend"], ["--yes", "destroy"]):
        failed = run_cli("--project", "some-project", *other)
        assert failed.exit_code == 4, (other, failed.everything)
        assert "credentials" in failed.stderr


def test_status_code_for_a_missing_frontend(cloud: Any, run_cli: Any) -> None:
    result = run_cli("test")
    assert result.exit_code == 6
    assert "orpheus deploy --all" in result.stderr


def test_smoke_test_catches_a_frontend_that_lets_anyone_in(run_cli: Any) -> None:
    """A stub server that answers every request with audio: both 401 checks must fail."""
    with open_frontend_stub() as url:
        result = run_cli("--json", "test", "--url", url, "--key", "any-key-at-all-123")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [(c["name"], c["ok"], c["status"]) for c in out["checks"]] == [
        ("no key", False, 200), ("wrong key", False, 200), ("right key", True, 200)]
    assert out["audio_s"] == pytest.approx(0.5)


@contextlib.contextmanager
def open_frontend_stub() -> Iterator[str]:
    samples = 12000  # 0.5 s of 24 kHz mono s16le
    wav = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt "
           + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
           + b"data" + struct.pack("<I", 0xFFFFFFFF) + bytes(2 * samples))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(wav)))
            self.end_headers()
            self.wfile.write(wav)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url


def test_deploy_backend_before_upload_says_what_to_run(cloud: Any, run_cli: Any) -> None:
    assert run_cli("setup").exit_code == 0
    result = run_cli("deploy-backend")
    assert result.exit_code == 2
    assert "no model uploaded yet (orpheus upload-model PATH)" in result.stderr
    assert cloud.calls("UpdateService") == []


def test_a_console_edit_is_drift_that_deploy_repairs(cloud: Any, run_cli: Any,
                                                     model_file: Path) -> None:
    assert deploy_all(run_cli, model_file, "--no-test").exit_code == 0
    svc = cloud.services["run"].services[
        f"projects/{PROJECT}/locations/us-central1/services/orpheus-backend"]
    svc.template.scaling.max_instance_count = 5  # someone raised it in the console
    plan = json.loads(run_cli("--json", "plan").stdout)
    [row] = [r for r in plan["results"] if r["key"] == "run-service/orpheus-backend"]
    assert row["action"] == "update"
    assert row["changes"] == [{"field": "template.scaling", "before": [0, 5], "after": [0, 1]}]
    assert "validated by Cloud Run" in row["detail"]
    cloud.clear_log()
    assert run_cli("deploy-backend").exit_code == 0
    assert len(recorded_updates(cloud, "orpheus-backend")) == 1
    assert cloud.services["run"].get("orpheus-backend").template.scaling.max_instance_count == 1


def test_deploy_all_json_shows_the_failing_build_step(cloud: Any, run_cli: Any,
                                                      model_file: Path) -> None:
    cloud.services["cloudbuild"].fail_steps["build-frontend"] = ["onnx export: out of memory"]
    result = deploy_all(run_cli, model_file)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert "at step 'build-frontend'" in error["message"]
    assert "onnx export: out of memory" in result.stderr
    assert cloud.calls("UpdateService") == []  # nothing deployed from a failed build
