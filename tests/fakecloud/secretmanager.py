"""Fake Secret Manager v1: secrets, versions (payload CRC32C checked; disable and destroy), IAM
policies. ``watch(fn)`` calls ``fn(secret_name)`` after any change to a secret's versions or
policy: the local Cloud Run uses it to keep secret volumes current (container.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import google_crc32c
import grpc
from google.cloud import secretmanager_v1
from google.protobuf import empty_pb2, timestamp_pb2

from tests.fakecloud.core import FakeError, FakeService, already_exists, invalid, not_found, rpc

_SECRET_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,255}$")
_SECRET_RE = re.compile(r"^projects/([^/]+)/secrets/([a-zA-Z0-9_-]+)$")
_VERSION_RE = re.compile(r"^(projects/[^/]+/secrets/[a-zA-Z0-9_-]+)/versions/(latest|[0-9]+)$")

State = secretmanager_v1.SecretVersion.State


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class SecretManagerFake(FakeService):
    client = ("google.cloud.secretmanager_v1", "SecretManagerServiceClient")
    key = "secretmanager"
    api = "secretmanager.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.secrets: dict[str, secretmanager_v1.Secret] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}  # secret name -> versions
        self.watchers: list[Callable[[str], None]] = []

    def watch(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(canonical secret name)`` after each change of a secret."""
        with self.lock:
            self.watchers.append(fn)

    def _changed(self, name: str) -> None:
        for fn in list(self.watchers):
            fn(name)

    def payload(self, version_name: str) -> bytes:
        """Test helper: what AccessSecretVersion would return (FakeError when it would fail)."""
        with self.lock:
            entry = self._version(version_name)
            self._check_enabled(entry)
            return bytes(entry["data"])

    @staticmethod
    def _check_enabled(entry: dict[str, Any]) -> None:
        state = entry["version"].state
        if state != State.ENABLED:
            raise FakeError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"{entry['version'].name} is in {State(state).name} state.")

    def _canonical(self, name: str) -> str:
        match = _SECRET_RE.match(name)
        if not match:
            raise invalid(f"Invalid secret name {name!r}.")
        self.check_project(name)
        return f"projects/{self.cloud.project_number}/secrets/{match.group(2)}"

    def _secret(self, name: str) -> secretmanager_v1.Secret:
        canonical = self._canonical(name)
        if canonical not in self.secrets:
            raise not_found(f"Secret [{canonical}]")
        return self.secrets[canonical]

    def payloads(self, secret_id: str) -> list[bytes]:
        """Test helper: the payloads of every version, oldest first."""
        name = f"projects/{self.cloud.project_number}/secrets/{secret_id}"
        return [v["data"] for v in self.versions.get(name, [])]

    @rpc("secretmanager.secrets.create")
    def create_secret(self, request: Any, context: Any) -> Any:
        self.check_project(request.parent)
        if not _SECRET_ID_RE.match(request.secret_id):
            raise invalid(f"Invalid secret_id {request.secret_id!r}.")
        replication = request.secret.replication
        if "automatic" not in replication and not replication.user_managed.replicas:
            raise invalid("Secret.replication is required.")
        name = f"projects/{self.cloud.project_number}/secrets/{request.secret_id}"
        with self.lock:
            if name in self.secrets:
                raise already_exists(f"Secret [{name}]")
            secret = secretmanager_v1.Secret(request.secret)
            secret.name = name
            secret.create_time = _now()
            secret.etag = '"1"'
            self.secrets[name] = secret
            self.versions[name] = []
            return secret

    @rpc("secretmanager.secrets.get")
    def get_secret(self, request: Any, context: Any) -> Any:
        with self.lock:
            return self._secret(request.name)

    @rpc("secretmanager.secrets.list")
    def list_secrets(self, request: Any, context: Any) -> Any:
        self.check_project(request.parent)
        with self.lock:
            return secretmanager_v1.ListSecretsResponse(secrets=list(self.secrets.values()),
                                                        total_size=len(self.secrets))

    @rpc("secretmanager.secrets.delete")
    def delete_secret(self, request: Any, context: Any) -> Any:
        with self.lock:
            secret = self._secret(request.name)
            del self.secrets[secret.name]
            self.versions.pop(secret.name, None)
            self.cloud.iam.forget(secret.name)
        self._changed(secret.name)
        return empty_pb2.Empty()

    @rpc("secretmanager.versions.add")
    def add_secret_version(self, request: Any, context: Any) -> Any:
        data = request.payload.data
        if not data:
            raise invalid("Secret payload must not be empty.")
        if ("data_crc32c" in request.payload
                and int(google_crc32c.value(data)) != request.payload.data_crc32c):
            raise FakeError(grpc.StatusCode.INVALID_ARGUMENT, "Checksum mismatch for the payload.")
        with self.lock:
            secret = self._secret(request.parent)
            versions = self.versions[secret.name]
            number = len(versions) + 1
            version = secretmanager_v1.SecretVersion(
                name=f"{secret.name}/versions/{number}", state=State.ENABLED,
                create_time=_now(), client_specified_payload_checksum="data_crc32c"
                in request.payload)
            versions.append({"version": version, "data": data})
        self._changed(secret.name)
        return version

    def _version(self, name: str) -> dict[str, Any]:
        match = _VERSION_RE.match(name)
        if not match:
            raise invalid(f"Invalid secret version name {name!r}.")
        secret = self._secret(match.group(1))
        versions = self.versions[secret.name]
        if match.group(2) == "latest":
            # "an alias to the most recently created SecretVersion" (AccessSecretVersionRequest,
            # cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/
            # access), whatever its state: a disabled or destroyed newest version makes reading
            # `latest` fail, it does not fall back to an older one.
            if not versions:
                raise not_found(f"Secret Version [{name}]")
            return versions[-1]
        index = int(match.group(2)) - 1
        if not 0 <= index < len(versions):
            raise not_found(f"Secret Version [{name}]")
        return versions[index]

    @rpc("secretmanager.versions.get")
    def get_secret_version(self, request: Any, context: Any) -> Any:
        with self.lock:
            return self._version(request.name)["version"]

    @rpc("secretmanager.versions.access")
    def access_secret_version(self, request: Any, context: Any) -> Any:
        with self.lock:
            entry = self._version(request.name)
            self._check_enabled(entry)
            data = entry["data"]
            return secretmanager_v1.AccessSecretVersionResponse(
                name=entry["version"].name,
                payload=secretmanager_v1.SecretPayload(
                    data=data, data_crc32c=int(google_crc32c.value(data))))

    @rpc("secretmanager.versions.list")
    def list_secret_versions(self, request: Any, context: Any) -> Any:
        with self.lock:
            secret = self._secret(request.parent)
            versions = [v["version"] for v in reversed(self.versions[secret.name])]
        if request.filter:
            if request.filter != "state:ENABLED":
                raise invalid(f"Unsupported filter {request.filter!r}.")
            versions = [v for v in versions if v.state == State.ENABLED]
        return secretmanager_v1.ListSecretVersionsResponse(versions=versions,
                                                           total_size=len(versions))

    @rpc("secretmanager.versions.disable")
    def disable_secret_version(self, request: Any, context: Any) -> Any:
        with self.lock:
            entry = self._version(request.name)
            if entry["version"].state == State.DESTROYED:
                raise FakeError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{entry['version'].name} is in DESTROYED state.")
            entry["version"].state = State.DISABLED
        self._changed(entry["version"].name.split("/versions/")[0])
        return entry["version"]

    @rpc("secretmanager.versions.destroy")
    def destroy_secret_version(self, request: Any, context: Any) -> Any:
        # Irreversible: the payload is gone (cloud.google.com/secret-manager/docs/
        # manage-secret-versions#destroy).
        with self.lock:
            entry = self._version(request.name)
            if entry["version"].state == State.DESTROYED:
                raise FakeError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{entry['version'].name} is already in DESTROYED state.")
            entry["version"].state = State.DESTROYED
            entry["version"].destroy_time = _now()
            entry["data"] = b""
        self._changed(entry["version"].name.split("/versions/")[0])
        return entry["version"]

    @rpc("secretmanager.secrets.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            secret = self._secret(request.resource)
        return self.cloud.iam.get(secret.name)

    @rpc("secretmanager.secrets.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        with self.lock:
            secret = self._secret(request.resource)
        policy = self.cloud.iam.set(secret.name, request.policy, self.cloud.validate_member)
        self._changed(secret.name)
        return policy


SERVICES = [SecretManagerFake]
