"""The Artifact Registry docker repository that holds both images."""

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


@dataclass(frozen=True)
class RepositorySpec:
    format: str  # "DOCKER"
    description: str


class Registry(Resource):
    kind = "registry"

    @property
    def name(self) -> str:
        return self.settings.names.repo

    def desired(self, settings: Settings) -> RepositorySpec:
        return RepositorySpec("DOCKER", f"{settings.name} text-to-speech images")

    def read(self, cloud: Cloud) -> RepositorySpec | None:
        from google.api_core import exceptions

        with translated(f"read repository {self.name}", cloud.project):
            try:
                repo = cloud.artifact_registry().get_repository(
                    name=self.settings.names.repo_path, retry=cloud.retry)
            except exceptions.NotFound:
                return None
        return RepositorySpec(repo.format_.name, repo.description)

    def apply(self, cloud: Cloud, spec: RepositorySpec, progress: Any = None) -> None:
        from google.api_core import exceptions
        from google.cloud import artifactregistry_v1

        names = self.settings.names
        client = cloud.artifact_registry()
        actual = self.read(cloud)
        with translated(f"create repository {self.name}", cloud.project):
            if actual is None:
                # proto-plus takes an enum field by its name ("DOCKER"), as protobuf does.
                repo = artifactregistry_v1.Repository(format_=spec.format,
                                                      description=spec.description)
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
                repository={"name": names.repo_path, "description": spec.description},
                update_mask={"paths": ["description"]}, retry=cloud.retry)

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
