"""Fake Artifact Registry v1: repositories (create/delete are long-running), IAM policies,
cleanup policies, and the images the fake Cloud Build pushes (``record_push``), which make up a
repository's ``size_bytes`` as on Artifact Registry.

Cleanup policies are validated as the API does (Artifact Registry's "Configure cleanup policies"
page): at most 10 per repository, each keyed by its id, with an action and either a condition
or (KEEP only) ``most_recent_versions`` with a positive ``keep_count``. They are stored and
returned; running them (a daily job on Artifact Registry) is not modelled.
"""

from __future__ import annotations

import re
import time
from typing import Any

from google.cloud import artifactregistry_v1
from google.protobuf import empty_pb2, timestamp_pb2

from tests.fakecloud.core import (
    FakeService,
    already_exists,
    invalid,
    not_found,
    rpc,
    update_fields,
)

_REPO_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_PARENT_RE = re.compile(r"^projects/([^/]+)/locations/([a-z]+-[a-z]+[0-9]+)$")
_REPO_RE = re.compile(r"^(projects/[^/]+/locations/[a-z0-9-]+)/repositories/([a-z0-9-]+)$")

Repository = artifactregistry_v1.Repository


class ArtifactRegistryFake(FakeService):
    client = ("google.cloud.artifactregistry_v1", "ArtifactRegistryClient")
    key = "artifactregistry"
    api = "artifactregistry.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.repositories: dict[str, Repository] = {}
        self.images: dict[str, dict[str, int]] = {}  # repository name -> digest -> bytes

    def record_push(self, image: str, digest: str, size: int) -> None:
        """An image pushed to REGION-docker.pkg.dev/PROJECT/REPO/NAME:TAG (fake Cloud Build)."""
        host, project, repo = image.split("/")[:3]
        name = (f"projects/{project}/locations/{host.removesuffix('-docker.pkg.dev')}/"
                f"repositories/{repo}")
        with self.lock:
            self.images.setdefault(name, {})[digest] = size

    @staticmethod
    def _check_cleanup(repo: Repository) -> None:
        policies = repo.cleanup_policies
        if len(policies) > 10:
            raise invalid("A repository can have at most 10 cleanup policies.")
        Action = artifactregistry_v1.CleanupPolicy.Action
        for key, policy in policies.items():
            if policy.id != key:
                raise invalid(f"Cleanup policy id {policy.id!r} does not match its key {key!r}.")
            if policy.action == Action.ACTION_UNSPECIFIED:
                raise invalid(f"Cleanup policy {key}: action is required.")
            has_condition = "condition" in policy
            has_recent = "most_recent_versions" in policy
            if has_condition == has_recent:
                raise invalid(f"Cleanup policy {key}: exactly one of condition and "
                              "most_recent_versions is required.")
            if has_recent and (policy.action != Action.KEEP
                               or policy.most_recent_versions.keep_count <= 0):
                raise invalid(f"Cleanup policy {key}: most_recent_versions needs the KEEP "
                              "action and a positive keep_count.")

    def _with_size(self, repo: Repository) -> Repository:
        out = Repository(repo)
        out.size_bytes = sum(self.images.get(repo.name, {}).values())
        return out

    def _parent(self, parent: str) -> str:
        if not _PARENT_RE.match(parent):
            raise invalid(f"Invalid parent {parent!r}.")
        self.check_project(parent)
        return parent

    def _get(self, name: str) -> Repository:
        match = _REPO_RE.match(name)
        if not match:
            raise invalid(f"Invalid repository name {name!r}.")
        self.check_project(name)
        if name not in self.repositories:
            raise not_found(f"Requested entity was not found: {name}")
        return self.repositories[name]

    @rpc("artifactregistry.repositories.create")
    def create_repository(self, request: Any, context: Any) -> Any:
        parent = self._parent(request.parent)
        if not _REPO_ID_RE.match(request.repository_id):
            raise invalid(f"Invalid repository_id {request.repository_id!r}.")
        if request.repository.format_ == Repository.Format.FORMAT_UNSPECIFIED:
            raise invalid("Repository format is required.")
        name = f"{parent}/repositories/{request.repository_id}"
        self._check_cleanup(request.repository)
        with self.lock:
            if name in self.repositories:
                raise already_exists(f"the repository {name}")
            repo = Repository(request.repository)
            repo.name = name
            stamp = timestamp_pb2.Timestamp()
            stamp.FromNanoseconds(time.time_ns())
            repo.create_time = stamp
            repo.mode = repo.mode or Repository.Mode.STANDARD_REPOSITORY

        def done() -> Any:
            with self.lock:
                self.repositories[name] = repo
            return repo

        return self.cloud.operations.start(
            on_done=done, polls=2, metadata=artifactregistry_v1.OperationMetadata(),
            prefix=f"{parent}/operations")

    @rpc("artifactregistry.repositories.get")
    def get_repository(self, request: Any, context: Any) -> Any:
        with self.lock:
            return self._with_size(self._get(request.name))

    @rpc("artifactregistry.repositories.list")
    def list_repositories(self, request: Any, context: Any) -> Any:
        parent = self._parent(request.parent)
        with self.lock:
            repos = [self._with_size(r) for n, r in sorted(self.repositories.items())
                     if n.startswith(parent + "/")]
        return artifactregistry_v1.ListRepositoriesResponse(repositories=repos)

    @rpc("artifactregistry.repositories.update")
    def update_repository(self, request: Any, context: Any) -> Any:
        self._check_cleanup(request.repository)
        with self.lock:
            return self._with_size(update_fields(
                self._get(request.repository.name), request.repository,
                request.update_mask.paths,
                {"description", "labels", "cleanup_policies", "cleanup_policy_dry_run"}))

    @rpc("artifactregistry.repositories.delete")
    def delete_repository(self, request: Any, context: Any) -> Any:
        with self.lock:
            self._get(request.name)

        def done() -> Any:
            with self.lock:
                self.repositories.pop(request.name, None)
                self.images.pop(request.name, None)
            return empty_pb2.Empty()

        return self.cloud.operations.start(on_done=done, polls=1)

    @rpc("artifactregistry.repositories.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            self._get(request.resource)
        return self.cloud.iam.get(request.resource)

    @rpc("artifactregistry.repositories.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            self._get(request.resource)
        return self.cloud.iam.set(request.resource, request.policy, self.cloud.validate_member)


SERVICES = [ArtifactRegistryFake]
