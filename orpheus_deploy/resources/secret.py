"""The API-key secret (Secret Manager) and its versions.

The secret's *value* is never part of a spec, a plan, a log line or an error message: specs hold
only replication and labels, and the version step reports version numbers, not payloads. Its
latest version is the whole set of named keys (runtime/frontend/key_set.py explains the format);
every change adds a version and destroys the older ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orpheus_deploy.errors import EXIT_NOT_FOUND, CloudError
from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.resources.base import CREATE, UNCHANGED, UPDATE, Resource, Result

if TYPE_CHECKING:
    from collections.abc import Callable

    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from runtime.frontend.key_set import KeySet


def now_rfc3339() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

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
        so a key is generated or read only when it will actually be stored. Rotating replaces
        the "default" key and keeps the named ones (`orpheus keys`)."""
        key = f"{self.key}/version"
        existing = [] if dry_run and self.read(cloud) is None else self.enabled_versions(cloud)
        if existing and not rotate:
            return Result(key, UNCHANGED, detail=f"{len(existing)} enabled version(s) kept")
        if dry_run:
            return Result(key, UPDATE if existing else CREATE)
        if not existing:
            version = self.add_version(cloud, value())
            return Result(key, CREATE, detail=f"added version {version.rsplit('/', 1)[-1]}")
        from runtime.frontend.key_set import DEFAULT_NAME

        current, _ = self.read_keys(cloud)
        version = self.write_keys(cloud, current.replace_key(DEFAULT_NAME, value(), now_rfc3339()))
        return Result(key, UPDATE, detail=f"added version {version.rsplit('/', 1)[-1]}; "
                                          "the old default key no longer works")

    # -- the key set (runtime/frontend/key_set.py) ----------------------------------------------
    def read_keys(self, cloud: Cloud) -> tuple[KeySet, str | None]:
        """The keys in the latest enabled version, and that version's name (None: no version).
        Keys from the old format get the version's creation time as theirs."""
        from google.api_core import exceptions

        from runtime.frontend.key_set import KeySet, KeySetError

        client = cloud.secrets()
        with translated(f"read the API keys from secret {self.name}", cloud.project):
            try:
                latest = client.get_secret_version(
                    name=f"{self.settings.names.secret_path}/versions/latest", retry=cloud.retry)
            except (exceptions.FailedPrecondition, exceptions.NotFound) as exc:
                if self.read(cloud) is not None:  # the secret is there, with no enabled version
                    return KeySet(), None
                raise CloudError(f"The API-key secret {self.name} does not exist",
                                 "run `orpheus setup` first", EXIT_NOT_FOUND,
                                 kind="not_found") from exc
            # By number, not "latest": a version added meanwhile must not be read as this one.
            payload = client.access_secret_version(name=latest.name, retry=cloud.retry).payload
        try:
            keys = KeySet.parse(payload.data.decode("utf-8"))
        except (KeySetError, UnicodeDecodeError) as exc:
            raise CloudError(f"The API-key secret {self.name} holds something that is not a set "
                             f"of keys ({exc if isinstance(exc, KeySetError) else 'not UTF-8'})",
                             "fix or replace it: `orpheus setup --rotate-key`") from exc
        created = latest.create_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return keys.with_created(created), latest.name

    def write_keys(self, cloud: Cloud, keys: KeySet) -> str:
        """Store ``keys`` as the new latest version, then destroy every older version, so that no
        stored version still holds a key that is no longer in the set (and `latest` cannot fall
        back to one if the new version were disabled). Returns the new version's name."""
        from google.cloud import secretmanager_v1

        version = self.add_version(cloud, keys.dumps())
        number = int(version.rsplit("/", 1)[-1])
        destroyed = secretmanager_v1.SecretVersion.State.DESTROYED
        client = cloud.secrets()
        with translated(f"destroy the old versions of secret {self.name}", cloud.project):
            for old in client.list_secret_versions(
                    request={"parent": self.settings.names.secret_path}, retry=cloud.retry):
                if old.state != destroyed and int(old.name.rsplit("/", 1)[-1]) < number:
                    client.destroy_secret_version(name=old.name, retry=cloud.retry)
        return version

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
