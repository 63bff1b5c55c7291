"""The API-key secret (Secret Manager) and its versions.

The secret's *value* is never part of a spec, a plan, a log line or an error message: specs hold
only replication and labels, and the version step reports version numbers, not payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.resources.base import CREATE, UNCHANGED, UPDATE, Resource, Result

if TYPE_CHECKING:
    from collections.abc import Callable

    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

MANAGED_LABEL = ("managed-by", "orpheus")


@dataclass(frozen=True)
class SecretSpec:
    replication: str  # "automatic"
    labels: tuple[tuple[str, str], ...] = field(default=(MANAGED_LABEL,))


class ApiKeySecret(Resource):
    kind = "secret"

    @property
    def name(self) -> str:
        return self.settings.names.secret

    def desired(self, settings: Settings) -> SecretSpec:
        return SecretSpec("automatic")

    def read(self, cloud: Cloud) -> SecretSpec | None:
        from google.api_core import exceptions

        with translated(f"read secret {self.name}", cloud.project):
            try:
                secret = cloud.secrets().get_secret(name=self.settings.names.secret_path,
                                                    retry=cloud.retry)
            except exceptions.NotFound:
                return None
        replication = "automatic" if "automatic" in secret.replication else "user-managed"
        return SecretSpec(replication, tuple(sorted(secret.labels.items())))

    def diff(self, desired: SecretSpec, actual: SecretSpec | None):  # type: ignore[no-untyped-def]
        # Replication cannot change after creation and extra labels are the user's: only a
        # missing managed-by label is worth an update.
        from orpheus_deploy.resources.base import Change

        if actual is None or MANAGED_LABEL in actual.labels:
            return []
        return [Change("labels", dict(actual.labels), dict(desired.labels))]

    def apply(self, cloud: Cloud, spec: SecretSpec) -> None:
        from google.api_core import exceptions

        client = cloud.secrets()
        names = self.settings.names
        with translated(f"create secret {self.name}", cloud.project):
            try:
                client.create_secret(
                    request={"parent": names.project_path, "secret_id": self.name,
                             "secret": {"replication": {"automatic": {}},
                                        "labels": dict(spec.labels)}},
                    retry=cloud.retry)
                return
            except exceptions.AlreadyExists:
                pass
            current = client.get_secret(name=names.secret_path, retry=cloud.retry)
            labels = {**dict(current.labels), **dict(spec.labels)}
            client.update_secret(
                request={"secret": {"name": names.secret_path, "labels": labels},
                         "update_mask": {"paths": ["labels"]}},
                retry=cloud.retry)

    def delete(self, cloud: Cloud) -> bool:
        from google.api_core import exceptions

        with translated(f"delete secret {self.name}", cloud.project):
            try:
                cloud.secrets().delete_secret(name=self.settings.names.secret_path,
                                              retry=cloud.retry)
            except exceptions.NotFound:
                return False
        return True

    # -- versions (an action, not desired state: the value is never read back) ---------------
    def enabled_versions(self, cloud: Cloud) -> list[str]:
        with translated(f"list versions of secret {self.name}", cloud.project):
            pages = cloud.secrets().list_secret_versions(
                request={"parent": self.settings.names.secret_path, "filter": "state:ENABLED"},
                retry=cloud.retry)
            return [v.name for v in pages]

    def ensure_version(self, cloud: Cloud, value: Callable[[], str], rotate: bool,
                       dry_run: bool = False) -> Result:
        """Add a version when there is none (or when rotating). ``value`` is called only then,
        so a key is generated or read only when it will actually be stored."""
        key = f"{self.key}/version"
        existing = [] if dry_run and self.read(cloud) is None else self.enabled_versions(cloud)
        if existing and not rotate:
            return Result(key, UNCHANGED, detail=f"{len(existing)} enabled version(s) kept")
        if dry_run:
            return Result(key, UPDATE if existing else CREATE)
        version = self.add_version(cloud, value())
        return Result(key, UPDATE if existing else CREATE,
                      detail=f"added version {version.rsplit('/', 1)[-1]}")

    def add_version(self, cloud: Cloud, secret_value: str) -> str:
        import google_crc32c

        data = secret_value.encode("utf-8")
        # Secret Manager verifies the checksum, so a corrupted payload is never stored.
        checksum = int(google_crc32c.value(data))
        with translated(f"add a version to secret {self.name}", cloud.project):
            version = cloud.secrets().add_secret_version(
                request={"parent": self.settings.names.secret_path,
                         "payload": {"data": data, "data_crc32c": checksum}},
                retry=cloud.retry)
        return version.name
