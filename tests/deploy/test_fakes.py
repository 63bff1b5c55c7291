"""The fake Cloud Run / Cloud Build / Compute through the real client libraries."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import run_v2

from orpheus_deploy.config import Settings
from orpheus_deploy.gcp import Cloud, OperationPolicy
from orpheus_deploy.specs import backend_service_spec

IMAGE = "us-central1-docker.pkg.dev/test-project/orpheus-repo/orpheus-backend@sha256:" + "a" * 64


def client(fake: Any) -> Any:
    return Cloud(Settings(project=fake.project), policy=OperationPolicy.fast()).run_services()


def spec() -> run_v2.Service:
    return backend_service_spec(Settings(project="test-project"), IMAGE, "m.gguf")


def test_update_service_is_a_long_running_create(cloud: Any) -> None:
    op = client(cloud).update_service(request={"service": spec(), "allow_missing": True})
    assert not op.done()  # not done at first, as in Cloud Run
    svc = op.result(timeout=5)
    assert svc.uri.startswith("https://orpheus-backend-")
    assert svc.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda s: s.template.containers[0].resources.limits.update({"cpu": "2"}), "cpu < 4"),
    (lambda s: s.template.containers[0].resources.limits.update({"memory": "8Gi"}),
     "memory < 16 GiB"),
    (lambda s: setattr(s.template.containers[0].resources, "cpu_idle", True), "throttling"),
    (lambda s: setattr(s, "name", s.name.replace("orpheus-backend", "Orpheus_Backend")),
     "Invalid service name"),
    (lambda s: setattr(s.template.containers[0].startup_probe, "failure_threshold", 500),
     "failureThreshold"),
])
def test_fake_rejects_what_cloud_run_rejects(cloud: Any, mutate: Any, needle: str) -> None:
    s = spec()
    mutate(s)
    with pytest.raises(exceptions.InvalidArgument, match=needle):
        client(cloud).update_service(request={"service": s, "allow_missing": True})
    assert cloud.services["run"].services == {}


def test_validate_only_stores_nothing(cloud: Any) -> None:
    op = client(cloud).update_service(request={"service": spec(), "allow_missing": True,
                                               "validate_only": True})
    op.result(timeout=5)
    assert cloud.services["run"].services == {}


def test_fixed_revision_name_fails_on_second_deploy(cloud: Any) -> None:
    s = spec()
    s.template.revision = "orpheus-backend-v1"
    client(cloud).update_service(request={"service": s, "allow_missing": True}).result(timeout=5)
    s.template.containers[0].env[0].value = "/models/other.gguf"
    with pytest.raises(exceptions.AlreadyExists):
        client(cloud).update_service(request={"service": s, "allow_missing": True})


def test_subnet_private_google_access_over_rest(cloud: Any) -> None:
    from orpheus_deploy.resources.base import reconcile
    from orpheus_deploy.resources.network import SubnetPrivateAccess

    settings = Settings(project=cloud.project)
    c = Cloud(settings, policy=OperationPolicy.fast())
    assert cloud.compute.subnet("us-central1", "default").private_ip_google_access is False
    result = reconcile(SubnetPrivateAccess(settings), c)
    assert result.action == "update"
    assert cloud.compute.subnet("us-central1", "default").private_ip_google_access is True
    assert [c.method for c in cloud.calls(service="compute.Subnetworks")
            if c.mutating] == ["SetPrivateIpGoogleAccess"]
    cloud.clear_log()
    assert reconcile(SubnetPrivateAccess(settings), c).action == "unchanged"
    assert cloud.mutating_calls() == []


FRONTEND_IMAGE = IMAGE.replace("orpheus-backend", "orpheus-frontend")
FRONTEND_SA = "orpheus-frontend@test-project.iam.gserviceaccount.com"


def test_a_missing_key_secret_fails_the_frontend_revision(cloud: Any) -> None:
    from orpheus_deploy.specs import frontend_service_spec

    s = frontend_service_spec(Settings(project="test-project"), FRONTEND_IMAGE, "https://b")
    op = client(cloud).update_service(request={"service": s, "allow_missing": True})
    with pytest.raises(exceptions.FailedPrecondition, match="Secret orpheus-api-key was not found"):
        op.result(timeout=5)


def test_secret_volume_follows_the_latest_version(cloud: Any, tmp_path: Any) -> None:
    """The local Cloud Run's secret volume: the file is the latest enabled version, changes with
    each new version, and cannot be read once the account loses access."""
    from google.iam.v1 import policy_pb2

    from orpheus_deploy.specs import frontend_service_spec
    from tests.fakecloud.container import ContainerFactory
    from tests.fakecloud.run import RevisionFailed

    gcp = Cloud(Settings(project="test-project"), OperationPolicy.fast())
    secrets = gcp.secrets()
    parent = "projects/test-project/secrets/orpheus-api-key"
    secrets.create_secret(request={"parent": "projects/test-project",
                                   "secret_id": "orpheus-api-key",
                                   "secret": {"replication": {"automatic": {}}}})
    secrets.add_secret_version(request={"parent": parent, "payload": {"data": b"first"}})
    template = frontend_service_spec(Settings(project="test-project"), FRONTEND_IMAGE,
                                     "https://b").template
    factory = ContainerFactory(cloud, None, tmp_path, None, {})  # type: ignore[arg-type]
    with pytest.raises(RevisionFailed, match="Permission denied on secret"):
        factory._volumes(template, template.containers[0], FRONTEND_SA)

    def grant(members: list[str]) -> None:
        policy = secrets.get_iam_policy(request={"resource": parent})
        del policy.bindings[:]
        policy.bindings.append(policy_pb2.Binding(role="roles/secretmanager.secretAccessor",
                                                  members=members))
        secrets.set_iam_policy(request={"resource": parent, "policy": policy})

    gcp.iam_admin().create_service_account(request={"name": "projects/test-project",
                                                    "account_id": "orpheus-frontend"})
    grant([f"serviceAccount:{FRONTEND_SA}"])
    [local] = factory._volumes(template, template.containers[0], FRONTEND_SA).values()
    keys = local / "api-keys.json"
    assert keys.read_bytes() == b"first"
    secrets.add_secret_version(request={"parent": parent, "payload": {"data": b"second"}})
    assert keys.read_bytes() == b"second"
    grant([])
    assert not keys.exists()  # "attempts to read the mounted volume will fail"
    grant([f"serviceAccount:{FRONTEND_SA}"])
    third = secrets.add_secret_version(request={"parent": parent, "payload": {"data": b"third"}})
    assert keys.read_bytes() == b"third"
    secrets.disable_secret_version(request={"name": third.name})
    # latest = the newest version, even disabled: unreadable, never an older one.
    assert not keys.exists()


@pytest.mark.parametrize("permission", ["*", "storage.*", "run.services", "run services create"])
def test_test_iam_permissions_refuses_wildcards_and_malformed_names(cloud: Any,
                                                                    permission: str) -> None:
    projects = Cloud(Settings(project="test-project"), OperationPolicy.fast()).projects()
    held = projects.test_iam_permissions(resource="projects/test-project",
                                         permissions=["run.services.create"])
    assert list(held.permissions) == ["run.services.create"]
    with pytest.raises(exceptions.InvalidArgument):
        projects.test_iam_permissions(resource="projects/test-project",
                                      permissions=["run.services.create", permission])
