"""Fake Artifact Registry v1: repositories (create/delete are long-running), IAM policies."""

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
            return self._get(request.name)

    @rpc("artifactregistry.repositories.list")
    def list_repositories(self, request: Any, context: Any) -> Any:
        parent = self._parent(request.parent)
        with self.lock:
            repos = [r for n, r in sorted(self.repositories.items())
                     if n.startswith(parent + "/")]
        return artifactregistry_v1.ListRepositoriesResponse(repositories=repos)

    @rpc("artifactregistry.repositories.update")
    def update_repository(self, request: Any, context: Any) -> Any:
        with self.lock:
            return update_fields(self._get(request.repository.name), request.repository,
                                 request.update_mask.paths, {"description", "labels"})

    @rpc("artifactregistry.repositories.delete")
    def delete_repository(self, request: Any, context: Any) -> Any:
        with self.lock:
            self._get(request.name)

        def done() -> Any:
            with self.lock:
                self.repositories.pop(request.name, None)
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
