"""cloudbuild.yaml, the Build `orpheus build` submits from it, and the examples' workflow."""

from __future__ import annotations

from pathlib import Path

import yaml
from google.cloud.devtools import cloudbuild_v1

from orpheus_deploy.config import Settings
from orpheus_deploy.phases.build import (
    build_request,
    digests_of,
    load_build_config,
    step_log_tail,
)

REPO = Path(__file__).resolve().parents[2]


def test_cloudbuild_yaml_builds_both_images_in_parallel() -> None:
    build = load_build_config(REPO)
    steps = {s.id: s for s in build.steps}
    for kind in ("backend", "frontend"):
        step = steps[f"build-{kind}"]
        assert list(step.wait_for) == ["-"]  # starts at once: the two builds run in parallel
        assert f"--file=runtime/{kind}/Dockerfile" in step.args
        assert step.args[-1] == "."  # the repository root is the context
        assert (REPO / "runtime" / kind / "Dockerfile").is_file()
        assert list(steps[f"push-{kind}"].wait_for) == [f"build-{kind}"]
    assert len(build.images) == 2  # listed, so the result reports both digests
    assert build.options.machine_type == cloudbuild_v1.BuildOptions.MachineType.E2_HIGHCPU_32
    assert build.timeout.total_seconds() >= 3600  # a CUDA compile of llama.cpp
    # Usable by `gcloud builds submit` with a user-managed service account as well.
    assert build.options.logging == cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY


def test_build_request_points_at_our_source_and_logs_bucket() -> None:
    settings = Settings(project="my-proj-1", region="europe-west4", image_tag="v2")
    build = build_request(settings, load_build_config(REPO), "orpheus-build-my-proj-1",
                          "source/abc.tar.gz")
    assert build.source.storage_source.bucket == "orpheus-build-my-proj-1"
    assert build.source.storage_source.object_ == "source/abc.tar.gz"
    assert dict(build.substitutions) == {"_REGION": "europe-west4", "_REPO": "orpheus-repo",
                                         "_NAME": "orpheus", "_TAG": "v2"}
    assert build.logs_bucket == "gs://orpheus-build-my-proj-1/logs"
    assert build.options.logging == cloudbuild_v1.BuildOptions.LoggingMode.GCS_ONLY
    assert build.options.machine_type == cloudbuild_v1.BuildOptions.MachineType.E2_HIGHCPU_32


def test_digests_are_matched_by_repository_path() -> None:
    settings = Settings(project="my-proj-1")
    repo = "us-central1-docker.pkg.dev/my-proj-1/orpheus-repo"
    build = cloudbuild_v1.Build(id="b1", results=cloudbuild_v1.Results(images=[
        cloudbuild_v1.BuiltImage(name=f"{repo}/orpheus-frontend:latest", digest="sha256:f"),
        cloudbuild_v1.BuiltImage(name=f"{repo}/orpheus-backend:latest", digest="sha256:b"),
    ]))
    assert digests_of(settings, build) == {"backend": "sha256:b", "frontend": "sha256:f"}


def test_step_log_tail_keeps_only_that_step() -> None:
    lines = ['Step #0 - "build-backend": a', 'Step #1 - "build-frontend": x',
             'Step #0 - "build-backend": b', "ERROR: build step 0 failed"]
    assert step_log_tail(lines, 0) == ["a", "b"]
    assert step_log_tail(lines, 0, n=1) == ["b"]


def test_github_workflow_deploys_with_workload_identity() -> None:
    workflow = yaml.safe_load((REPO / "examples/github-actions/deploy.yml").read_text())
    job = workflow["jobs"]["deploy"]
    assert workflow["permissions"]["id-token"] == "write"
    auth = next(s for s in job["steps"] if str(s.get("uses", "")).startswith(
        "google-github-actions/auth"))
    assert "workload_identity_provider" in auth["with"]
    assert "credentials_json" not in auth["with"]  # keyless
    assert any("deploy --all" in str(s.get("run", "")) for s in job["steps"])
