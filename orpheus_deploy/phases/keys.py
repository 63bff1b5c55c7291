"""`orpheus keys`: named API keys in the API-key secret (format: runtime/frontend/key_set.py).

Every change reads the latest version, adds a version with the new set and destroys the older
ones (resources/secret.py). The deployed frontend mounts the secret as a file that follows the
latest version and re-reads it every ``api_key_refresh_s`` (runtime/frontend/key_store.py), so a
change is in force within that bound on every running instance, without a redeploy. A key is
generated here, returned to the command once, and never logged; listings show the last four
characters only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orpheus_deploy.errors import EXIT_CONFLICT, EXIT_NOT_FOUND, InputError, OrpheusError
from orpheus_deploy.resources.secret import ApiKeySecret, now_rfc3339

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from runtime.frontend.key_set import KeySet, NamedKey


@dataclass(frozen=True)
class KeyChange:
    name: str
    last4: str
    at: str  # RFC 3339: created or revoked
    version: str  # the secret version that holds the new set
    raced: bool  # another writer added a version between our read and our write
    key: str | None = None  # only for a created key, for the command to hand over once

    def __repr__(self) -> str:  # never the key
        return f"KeyChange(name={self.name!r}, last4={self.last4!r}, version={self.version!r})"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "last4": self.last4, "at": self.at,
                "version": self.version.rsplit("/", 1)[-1]}


def _number(version: str | None) -> int:
    return int(version.rsplit("/", 1)[-1]) if version else 0


def _write(settings: Settings, cloud: Cloud, keys: KeySet, read_from: str | None) -> tuple[
        str, bool]:
    version = ApiKeySecret(settings).write_keys(cloud, keys)
    # Secret Manager has no compare-and-set on versions: a version number that is not the one
    # after what we read means someone else wrote in between, and their change may be lost.
    return version, _number(version) != _number(read_from) + 1


def list_keys(settings: Settings, cloud: Cloud) -> list[NamedKey]:
    """Every key, active and revoked, oldest first."""
    keys, _ = ApiKeySecret(settings).read_keys(cloud)
    return list(keys.keys)


def create_key(settings: Settings, cloud: Cloud, name: str) -> KeyChange:
    from orpheus_deploy.phases.setup import KeySource
    from runtime.frontend.key_set import KeySetError, validate_name

    try:
        validate_name(name)
    except KeySetError as exc:
        raise InputError(str(exc)) from None
    keys, read_from = ApiKeySecret(settings).read_keys(cloud)
    existing = keys.get(name)
    if existing is not None and existing.active:
        raise OrpheusError(f"A key named {name!r} already exists (created {existing.created})",
                           "choose another name, or revoke it first: "
                           f"`orpheus keys revoke {name}`", EXIT_CONFLICT)
    key = KeySource.generate().value()  # the same generator as setup's default key
    created = now_rfc3339()
    version, raced = _write(settings, cloud, keys.with_key(name, key, created), read_from)
    return KeyChange(name, key[-4:], created, version, raced, key=key)


def revoke_key(settings: Settings, cloud: Cloud, name: str) -> KeyChange:
    keys, read_from = ApiKeySecret(settings).read_keys(cloud)
    current = keys.get(name)
    if current is None:
        known = ", ".join(k.name for k in keys.active) or "none"
        raise OrpheusError(f"There is no API key named {name!r} (keys: {known})",
                           "see `orpheus keys list`", EXIT_NOT_FOUND)
    if not current.active:
        raise OrpheusError(f"The API key {name!r} was already revoked ({current.revoked})",
                           "see `orpheus keys list`", EXIT_NOT_FOUND)
    if len(keys.active) == 1:
        raise InputError(f"{name!r} is the only API key: revoking it would lock every caller "
                         "out", "create another key first: `orpheus keys create NAME`")
    revoked = now_rfc3339()
    version, raced = _write(settings, cloud, keys.without(name, revoked), read_from)
    return KeyChange(name, current.last4, revoked, version, raced)


def frontend_follows_the_secret(settings: Settings, cloud: Cloud) -> bool | None:
    """Whether the deployed frontend re-reads the keys (a secret volume; deployed by this
    version of orpheus) or read them once at start-up (API_KEY_SECRET, an older deployment).
    None when no frontend is deployed."""
    from orpheus_deploy.resources.cloudrun import FrontendService

    service = FrontendService(settings).read_service(cloud)
    if service is None:
        return None
    secret = settings.names.secret
    return any(v.secret.secret.rsplit("/", 1)[-1] == secret for v in service.template.volumes)
