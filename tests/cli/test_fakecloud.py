"""The fake cloud itself: the behaviours the acceptance tests rely on."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions

from orpheus_deploy.config import load_settings
from orpheus_deploy.gcp import Cloud, OperationPolicy


@pytest.fixture
def cloud(fake_cloud):
    return Cloud(load_settings(), OperationPolicy.fast())


def test_long_running_operation_is_not_done_at_first(fake_cloud, cloud):
    operation = cloud.service_usage().batch_enable_services(
        request={"parent": "projects/test-project", "service_ids": ["run.googleapis.com"]})
    assert not operation.done()
    assert not fake_cloud.services["serviceusage"].is_enabled("run.googleapis.com")
    operation.result(polling=None, timeout=5)
    assert fake_cloud.services["serviceusage"].is_enabled("run.googleapis.com")


def test_iam_etag_mismatch_is_aborted(fake_cloud, cloud):
    client = cloud.secrets()
    client.create_secret(request={"parent": "projects/test-project", "secret_id": "s",
                                  "secret": {"replication": {"automatic": {}}}})
    name = "projects/test-project/secrets/s"
    stale = client.get_iam_policy(request={"resource": name})
    fresh = client.get_iam_policy(request={"resource": name})
    fresh.bindings.add(role="roles/secretmanager.secretAccessor", members=["user:a@b.c"])
    client.set_iam_policy(request={"resource": name, "policy": fresh})
    stale.bindings.add(role="roles/viewer", members=["user:x@b.c"])
    with pytest.raises(exceptions.Aborted):
        client.set_iam_policy(request={"resource": name, "policy": stale})


def test_binding_unknown_service_account_is_rejected(fake_cloud, cloud):
    client = cloud.secrets()
    client.create_secret(request={"parent": "projects/test-project", "secret_id": "s",
                                  "secret": {"replication": {"automatic": {}}}})
    policy = client.get_iam_policy(request={"resource": "projects/test-project/secrets/s"})
    policy.bindings.add(role="roles/secretmanager.secretAccessor",
                        members=["serviceAccount:ghost@test-project.iam.gserviceaccount.com"])
    with pytest.raises(exceptions.InvalidArgument):
        client.set_iam_policy(request={"resource": "projects/test-project/secrets/s",
                                       "policy": policy})


def test_validation_and_other_projects(fake_cloud, cloud):
    client = cloud.secrets()
    with pytest.raises(exceptions.InvalidArgument):
        client.create_secret(request={"parent": "projects/test-project", "secret_id": "bad id!",
                                      "secret": {"replication": {"automatic": {}}}})
    with pytest.raises(exceptions.InvalidArgument):
        client.create_secret(request={"parent": "projects/test-project", "secret_id": "ok"})
    with pytest.raises(exceptions.PermissionDenied):
        client.get_secret(name="projects/someone-else/secrets/x")
    with pytest.raises(exceptions.InvalidArgument):
        cloud.iam_admin().create_service_account(
            request={"name": "projects/test-project", "account_id": "x"})


def test_fault_injection_counts_and_log(fake_cloud, cloud):
    fake_cloud.fail_next("ListSecrets", grpc.StatusCode.UNAVAILABLE, times=2)
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            list(cloud.secrets().list_secrets(parent="projects/test-project", retry=None))
    list(cloud.secrets().list_secrets(parent="projects/test-project", retry=None))
    assert [c.code for c in fake_cloud.calls("ListSecrets")] == ["UNAVAILABLE", "UNAVAILABLE",
                                                                 "OK"]
    assert fake_cloud.mutating_calls() == []


def test_unimplemented_rpc(fake_cloud, cloud):
    with pytest.raises(exceptions.MethodNotImplemented):
        cloud.iam_admin().create_role(request={"parent": "projects/test-project",
                                               "role_id": "r"})
    assert fake_cloud.calls("CreateRole")[0].code == "UNIMPLEMENTED"
