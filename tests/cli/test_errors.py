"""Error mapping: real library exceptions, produced by the real clients against the fake, become
one-line CloudErrors that say what to do."""

from __future__ import annotations

import grpc
import pytest

from orpheus_deploy.config import load_settings
from orpheus_deploy.errors import CloudError
from orpheus_deploy.gcp import Cloud, OperationPolicy, map_error


@pytest.fixture
def cloud(fake_cloud):
    return Cloud(load_settings(), OperationPolicy.fast())


def _error_of(call) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_permission_denied_names_permission(fake_cloud, cloud):
    fake_cloud.deny("secretmanager.secrets.get")
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    err = map_error(exc, "read secret x")
    assert err.kind == "permission" and err.exit_code == 5
    assert "secretmanager.secrets.get" in err.message and "secretmanager.secrets.get" in err.hint


def test_api_disabled_names_the_api(fake_cloud, cloud):
    fake_cloud.enforce_apis = True
    exc = _error_of(lambda: cloud.artifact_registry().get_repository(
        name="projects/test-project/locations/us-central1/repositories/r"))
    err = map_error(exc, project="test-project")
    assert err.kind == "api_disabled"
    assert "artifactregistry.googleapis.com" in err.message
    assert "orpheus setup --project test-project" in err.hint


def test_quota_not_found_unavailable(fake_cloud, cloud):
    fake_cloud.fail_next("GetSecret", grpc.StatusCode.RESOURCE_EXHAUSTED, times=1,
                         message="Quota exceeded for quota metric 'Requests'")
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    assert map_error(exc, project="p").kind == "quota"
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    err = map_error(exc)
    assert err.kind == "not_found" and err.exit_code == 6
    # UNAVAILABLE beyond the retry deadline.
    fake_cloud.fail_next("GetSecret", grpc.StatusCode.UNAVAILABLE, times=None)
    exc = _error_of(lambda: cloud.secrets().get_secret(
        name="projects/test-project/secrets/x", retry=cloud.retry))
    assert map_error(exc).kind == "unavailable"


def test_network_unavailable(monkeypatch):
    # Nothing listens on port 9: a real connection failure.
    monkeypatch.setenv("ORPHEUS_GRPC_ENDPOINT", "127.0.0.1:9")
    cloud = Cloud(load_settings(project="test-project"), OperationPolicy.fast())
    exc = _error_of(lambda: cloud.secrets().get_secret(
        name="projects/test-project/secrets/x", retry=cloud.retry, timeout=2))
    err = map_error(exc)
    assert err.kind == "unavailable" and "network" in (err.hint or "") + err.message


def test_no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("ORPHEUS_GRPC_ENDPOINT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    from orpheus_deploy.gcp import credentials_available

    assert credentials_available() is False
    with pytest.raises(CloudError) as info:
        Cloud(load_settings(project="test-project")).ensure_credentials()
    assert info.value.kind == "auth"
    assert "application-default login" in info.value.hint


def test_messages_are_one_line_and_bounded():
    from google.api_core import exceptions

    err = map_error(exceptions.InternalServerError("boom\n" * 200))
    assert "\n" in "boom\n" and "\n" not in err.message
    assert len(err.message) <= 320


def test_operation_failure_is_mapped(fake_cloud, cloud):
    from orpheus_deploy.gcp import wait_for
    from tests.fakecloud.core import FakeError

    operation_pb = fake_cloud.operations.start(
        polls=1, error=FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota 'GPUs' exceeded"))
    from google.api_core import operation as ops
    from google.protobuf import empty_pb2

    client = cloud.service_usage()
    future = ops.from_gapic(operation_pb, client._transport.operations_client, empty_pb2.Empty)
    with pytest.raises(CloudError) as info:
        wait_for(future, "deploy", cloud.policy)
    assert info.value.kind == "quota" and "deploy" in info.value.message


@pytest.mark.parametrize("code, message, reason, metadata", [
    # Service Usage enabling an API on a project with no billing account.
    (grpc.StatusCode.FAILED_PRECONDITION,
     "Billing account for project '522837608576' is not found. Billing must be enabled for "
     "activation of service(s) 'compute.googleapis.com' to proceed.",
     "UREQ_PROJECT_BILLING_NOT_FOUND", {"project": "522837608576",
                                        "services": "compute.googleapis.com"}),
    # Any billed API once billing is off.
    (grpc.StatusCode.PERMISSION_DENIED,
     "This API method requires billing to be enabled. Please enable billing on project "
     "#test-project by visiting https://console.developers.google.com/billing/enable?"
     "project=test-project then retry.", "BILLING_DISABLED", {}),
    # Cloud Storage's wording (an HTTP 403 without ErrorInfo).
    (grpc.StatusCode.PERMISSION_DENIED,
     "The billing account for the owning project is disabled in state absent", None, {}),
])
def test_billing_problems_say_billing(fake_cloud, cloud, code, message, reason, metadata):
    fake_cloud.fail_next("GetSecret", code, times=1, message=message, reason=reason,
                         metadata=metadata)
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    err = map_error(exc, project="test-project")
    assert err.kind == "billing", err.message
    assert "billing/linkedaccount?project=test-project" in err.hint
    assert "API is disabled" not in err.message and "console.developers.google" not in \
        err.message.split(":")[0]


def test_api_disabled_without_a_service_name_reads_well(fake_cloud, cloud):
    fake_cloud.fail_next("GetSecret", grpc.StatusCode.PERMISSION_DENIED, times=1,
                         message="The API is disabled for this project.")
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    err = map_error(exc)
    assert err.kind == "api_disabled"
    assert err.message == "a required API is disabled"


def test_a_link_in_a_denial_is_not_taken_for_the_permission(fake_cloud, cloud):
    fake_cloud.fail_next(
        "GetSecret", grpc.StatusCode.PERMISSION_DENIED, times=1,
        message="The caller does not have permission. Grant a role at "
                "https://console.cloud.google.com/iam-admin/iam?project=test-project")
    exc = _error_of(lambda: cloud.secrets().get_secret(name="projects/test-project/secrets/x"))
    err = map_error(exc)
    assert err.kind == "permission"
    assert "console.cloud.google" not in (err.hint or "")
    assert err.message.startswith("permission denied: The caller does not have permission")
