"""The Artifact Registry docker repository that holds both images, with cleanup policies.

Every rebuild pushes a multi-GB CUDA image and moves the tag to it; without cleanup the old,
untagged versions are billed forever. Two policies (Artifact Registry's "Configure cleanup
policies" page): keep the ``KEEP_RECENT`` most recent versions of each image whatever else
applies (a KEEP policy wins over a DELETE), and delete untagged versions older than
``UNTAGGED_MAX_AGE_DAYS``. So the image a service runs (deployed by digest) and the few before
it, for a rollback, stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_CONFLICT, CloudError
from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.gcp.operations import wait_for
from orpheus_deploy.resources.base import Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


KEEP_RECENT = 3
UNTAGGED_MAX_AGE_DAYS = 7
# (id, action, tag state, older than seconds, keep count): a comparable form of one policy.
Policy = tuple[str, str, str, int, int]


def desired_cleanup() -> tuple[Policy, ...]:
    return (("delete-untagged", "DELETE", "UNTAGGED", UNTAGGED_MAX_AGE_DAYS * 86400, 0),
            ("keep-recent", "KEEP", "", 0, KEEP_RECENT))


@dataclass(frozen=True)
class RepositorySpec:
    format: str  # "DOCKER"
    description: str
    cleanup: tuple[Policy, ...] | None = None
    cleanup_dry_run: bool | None = None


class Registry(Resource):
    kind = "registry"

    @property
    def name(self) -> str:
        return self.settings.names.repo

    def desired(self, settings: Settings) -> RepositorySpec:
        return RepositorySpec("DOCKER", f"{settings.name} text-to-speech images",
                              desired_cleanup(), cleanup_dry_run=False)

    def read(self, cloud: Cloud) -> RepositorySpec | None:
        from google.api_core import exceptions

        with translated(f"read repository {self.name}", cloud.project):
            try:
                repo = cloud.artifact_registry().get_repository(
                    name=self.settings.names.repo_path, retry=cloud.retry)
            except exceptions.NotFound:
                return None
        return RepositorySpec(repo.format_.name, repo.description,
                              _policies_of(repo), bool(repo.cleanup_policy_dry_run))

    def apply(self, cloud: Cloud, spec: RepositorySpec, progress: Any = None) -> None:
        from google.api_core import exceptions
        from google.cloud import artifactregistry_v1

        names = self.settings.names
        client = cloud.artifact_registry()
        actual = self.read(cloud)
        with translated(f"create repository {self.name}", cloud.project):
            if actual is None:
                # proto-plus takes an enum field by its name ("DOCKER"), as protobuf does.
                repo = artifactregistry_v1.Repository(
                    format_=spec.format, description=spec.description,
                    cleanup_policies=_cleanup_messages(spec.cleanup or ()),
                    cleanup_policy_dry_run=bool(spec.cleanup_dry_run))
                try:
                    operation = client.create_repository(
                        parent=names.location_path, repository=repo,
                        repository_id=self.name, retry=cloud.retry)
                except exceptions.AlreadyExists:
                    return  # created concurrently: same desired state
                wait_for(operation, f"create repository {self.name}", cloud.policy,
                         progress or cloud.progress)
                return
            if actual.format != spec.format:
                raise CloudError(
                    f"Repository {self.name} exists with format {actual.format}, not {spec.format}",
                    "delete it or choose another `name`", EXIT_CONFLICT, kind="conflict")
            client.update_repository(
                repository=artifactregistry_v1.Repository(
                    name=names.repo_path, description=spec.description,
                    cleanup_policies=_cleanup_messages(spec.cleanup or ()),
                    cleanup_policy_dry_run=bool(spec.cleanup_dry_run)),
                update_mask={"paths": ["description", "cleanup_policies",
                                       "cleanup_policy_dry_run"]}, retry=cloud.retry)

    def delete(self, cloud: Cloud) -> bool:
        from google.api_core import exceptions

        with translated(f"delete repository {self.name}", cloud.project):
            try:
                operation = cloud.artifact_registry().delete_repository(
                    name=self.settings.names.repo_path, retry=cloud.retry)
            except exceptions.NotFound:
                return False
        wait_for(operation, f"delete repository {self.name}", cloud.policy)
        return True


def _cleanup_messages(policies: tuple[Policy, ...]) -> dict[str, Any]:
    from google.cloud import artifactregistry_v1 as ar
    from google.protobuf import duration_pb2

    out: dict[str, Any] = {}
    for policy_id, action, tag_state, older_than_s, keep in policies:
        policy = ar.CleanupPolicy(id=policy_id, action=action)
        if keep:
            policy.most_recent_versions = ar.CleanupPolicyMostRecentVersions(keep_count=keep)
        else:
            policy.condition = ar.CleanupPolicyCondition(
                tag_state=tag_state, older_than=duration_pb2.Duration(seconds=older_than_s))
        out[policy_id] = policy
    return out


def _policies_of(repo: Any) -> tuple[Policy, ...]:
    out = []
    for policy_id, p in repo.cleanup_policies.items():
        older = int(p.condition.older_than.total_seconds()) if p.condition.older_than else 0
        tag_state = p.condition.tag_state.name if p.condition.tag_state else ""
        out.append((policy_id, p.action.name, "" if tag_state == "TAG_STATE_UNSPECIFIED"
                    else tag_state, older, int(p.most_recent_versions.keep_count)))
    return tuple(sorted(out))
