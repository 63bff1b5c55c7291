"""`orpheus doctor` and the preflight step of `deploy --all`, against the fake cloud: every check
passes on a good project; each failure injected alone gives a failing line with its fix, and
`deploy --all` stops before the model upload and the image build."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROJECT = "test-project"


def doctor_json(run_cli: Any) -> tuple[int, dict[str, Any]]:
    result = run_cli("--json", "doctor")
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_every_check_passes_on_a_good_project(cloud: Any, run_cli: Any) -> None:
    assert run_cli("setup").exit_code == 0  # enables the APIs doctor reads
    code, report = doctor_json(run_cli)
    assert code == 0, report
    assert report["ok"] is True
    checks = by_name(report)
    assert {c["status"] for c in checks.values()} == {"pass"}
    assert {"credentials", "project", "billing", "GPU region", "GPU quota", "permissions",
            "network", "org policy: public frontend", "org policy: locations",
            "org policy: run.allowedIngress", "org policy: run.allowedVPCEgress"} <= set(checks)
    human = run_cli("doctor")
    assert human.exit_code == 0 and "Every check passed" in human.stderr


def _billing_off(cloud: Any) -> None:
    cloud.billing_enabled = False


def _no_gpu_quota(cloud: Any) -> None:
    cloud.services["run"].gpu_quota["no_zonal"] = 0


def _missing_permission(cloud: Any) -> None:
    cloud.denied.add("cloudbuild.builds.create")


def _no_subnet(cloud: Any) -> None:
    del cloud.compute.subnets[("us-central1", "default")]


def _drs_and_invoker_iam_required(cloud: Any) -> None:
    # Domain-restricted sharing alone passes (the frontend needs no allUsers); with the managed
    # constraint that forbids disabling the invoker check too, no public service is possible.
    cloud.org_policies["iam.allowedPolicyMemberDomains"] = {"allowed_values": ["C0abc123"]}
    cloud.org_policies["run.managed.requireInvokerIam"] = {"enforce": True}


@pytest.mark.parametrize("inject, check, says, fix, code", [
    (_billing_off, "billing", "billing is not enabled", "billing/linkedaccount", 5),
    (_no_gpu_quota, "GPU quota", "quota without zonal redundancy in us-central1 is 0",
     "request quota NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion", 7),
    (_missing_permission, "permissions", "build: cloudbuild.builds.create",
     "roles/cloudbuild.builds.editor", 5),
    (_no_subnet, "network", "subnet default does not exist in us-central1",
     "create a subnet of network default", 6),
    (_drs_and_invoker_iam_required, "org policy: public frontend",
     "run.managed.requireInvokerIam is enforced",
     "exempt this project from constraints/run.managed.requireInvokerIam", 1),
])
def test_each_failure_is_one_line_with_its_fix_and_deploy_stops_before_upload_and_build(
        cloud: Any, run_cli: Any, model_file: Path, inject: Callable[[Any], None], check: str,
        says: str, fix: str, code: int) -> None:
    assert run_cli("setup").exit_code == 0
    inject(cloud)
    status, report = doctor_json(run_cli)
    assert status == code and report["ok"] is False
    failing = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failing] == [check]
    assert says in failing[0]["detail"] and fix in failing[0]["fix"]

    cloud.clear_log()
    result = run_cli("deploy", "--all", "--model", str(model_file))
    assert result.exit_code == code, result.everything
    assert f"Preflight check failed: {check}" in result.stderr and fix in result.stderr
    assert "Traceback" not in result.everything
    # Stopped before the slow and billable steps: no upload, no build, no service.
    assert not [c for c in cloud.calls() if c.method.startswith(("POST /upload",
                                                                   "PUT /upload"))]
    assert not cloud.calls("CreateBuild") and not cloud.calls("UpdateService")


def test_domain_restricted_sharing_alone_passes(cloud: Any, run_cli: Any) -> None:
    assert run_cli("setup").exit_code == 0
    cloud.org_policies["iam.allowedPolicyMemberDomains"] = {"allowed_values": ["C0abc123"]}
    code, report = doctor_json(run_cli)
    assert code == 0
    assert "invoker_iam_disabled" in by_name(report)["org policy: public frontend"]["detail"]


def test_what_cannot_be_read_is_could_not_check_not_a_failure(cloud: Any, run_cli: Any) -> None:
    # A fresh project: the APIs doctor reads are off until setup enables them.
    cloud.enforce_apis = True
    code, report = doctor_json(run_cli)
    assert code == 0, report
    checks = by_name(report)
    assert checks["billing"]["status"] == "unknown"
    assert "cloudbilling.googleapis.com API is disabled" in checks["billing"]["detail"]
    assert "orpheus setup" in checks["billing"]["fix"]
    # A policy you may not read is "could not check" too.
    cloud.enforce_apis = False
    cloud.deny("orgpolicy.policy.get")
    code, report = doctor_json(run_cli)
    assert by_name(report)["org policies"]["status"] == "unknown"


def test_a_region_without_the_gpu_fails(cloud: Any, run_cli: Any) -> None:
    result = run_cli("--json", "--region", "us-west2", "doctor")
    report = json.loads(result.stdout)
    [gpu] = [c for c in report["checks"] if c["name"] == "GPU region"]
    assert gpu["status"] == "fail" and "offered in: " in gpu["detail"]
    assert result.exit_code == 7
