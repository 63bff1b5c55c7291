"""Phase `setup`: everything the services need before an image or a model exists.

Order matters: APIs first (nothing else works without them), service accounts before the
bindings that name them, the bucket and the secret before their IAM bindings.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from orpheus_deploy.errors import CloudError, InputError
from orpheus_deploy.gcp import Cloud
from orpheus_deploy.resources.apis import Apis
from orpheus_deploy.resources.base import UNCHANGED, PhaseReport, Resource, Result, reconcile
from orpheus_deploy.resources.bucket import ModelBucket
from orpheus_deploy.resources.iam import BucketIamBinding, SecretIamBinding
from orpheus_deploy.resources.registry import Registry
from orpheus_deploy.resources.secret import ApiKeySecret
from orpheus_deploy.resources.service_accounts import ServiceAccount

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.secret_file import SecretFile
    from orpheus_deploy.ui import UI

BUCKET_READER_ROLE = "roles/storage.objectViewer"
SECRET_ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"

MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 512
_KEY_ALPHABET = set(string.ascii_letters + string.digits + "-_.~+/=!@#$%^&*:;?")


def validate_api_key(value: str) -> str:
    """Accept a key that can travel in an HTTP header and in API_KEY_SECRET (comma-separated).
    Error messages describe the problem, never the key."""
    if not value:
        raise InputError("The API key is empty", "pass --api-key, pipe one in, or omit it to "
                                                 "generate one")
    if len(value) < MIN_KEY_LENGTH:
        raise InputError(f"The API key is too short ({len(value)} characters)",
                         f"use at least {MIN_KEY_LENGTH} characters, or omit --api-key to "
                         "generate a strong one")
    if len(value) > MAX_KEY_LENGTH:
        raise InputError(f"The API key is too long ({len(value)} characters)",
                         f"use at most {MAX_KEY_LENGTH}")
    if any(c not in _KEY_ALPHABET for c in value):
        raise InputError("The API key contains whitespace, a comma or another character that "
                         "cannot be used in an HTTP header or a key list",
                         "use letters, digits and -_.~+/=!@#$%^&*:;?")
    return value


@dataclass
class KeySource:
    """Where the API key comes from. The value is produced only when it will be stored."""

    kind: str  # "given" | "stdin" | "generated"
    _value: str | None = field(default=None, repr=False)
    _taken: bool = field(default=False, repr=False)

    @classmethod
    def given(cls, value: str) -> KeySource:
        return cls("given", validate_api_key(value.strip()))

    @classmethod
    def from_stdin(cls, stream: TextIO, required: bool = True) -> KeySource:
        text = stream.read().strip()
        if not text and not required:
            return cls.generate()
        return cls("stdin", validate_api_key(text))

    @classmethod
    def generate(cls) -> KeySource:
        return cls("generated")

    @property
    def generated(self) -> bool:
        return self.kind == "generated"

    def value(self) -> str:
        self._taken = True
        if self._value is None:
            # 32 random bytes from the OS CSPRNG, URL-safe: fits in a header and a key list.
            self._value = "ok_" + secrets.token_urlsafe(32)
        return self._value

    @property
    def used(self) -> bool:
        """Whether the value was taken to be stored."""
        return self._taken

    def __repr__(self) -> str:  # never show the value, even in a debugger or traceback
        return f"KeySource(kind={self.kind!r})"


def setup_resources(settings: Settings) -> list[Resource]:
    """Setup's resources in creation order (destroy deletes them in reverse)."""
    backend = ServiceAccount(settings, "backend")
    frontend = ServiceAccount(settings, "frontend")
    return [
        Apis(settings),
        backend,
        frontend,
        ModelBucket(settings),
        BucketIamBinding(settings, BUCKET_READER_ROLE, backend.member),
        Registry(settings),
        ApiKeySecret(settings),
        SecretIamBinding(settings, SECRET_ACCESSOR_ROLE, frontend.member),
    ]


# How long an API enabled by this run may still answer SERVICE_DISABLED. Google's own message
# says "If you enabled this API recently, wait a few minutes for the action to propagate to our
# systems and retry": the enable operation completes before every API front end knows.
API_PROPAGATION_S = 300.0


def _reconcile_while_apis_propagate(resource: Resource, cloud: Cloud, ui: UI) -> Result:
    """``reconcile``, retried while an API that this run has just enabled still says it is
    disabled (only then: an API disabled for another reason fails at once, as before)."""
    from orpheus_deploy.gcp.propagation import until_applied

    return until_applied(
        lambda: reconcile(resource, cloud),
        waiting=lambda exc: isinstance(exc, CloudError) and exc.kind == "api_disabled",
        what=f"the APIs just enabled (needed by {resource.key})", policy=cloud.policy,
        budget_s=min(API_PROPAGATION_S, cloud.policy.operation_timeout_s), report=ui.info)


# Where a key this run generated can be read later (it is never printed in --json mode or CI).
def key_retrieval_hint(settings: Settings) -> str:
    return (f"read it from Secret Manager: gcloud secrets versions access latest "
            f"--secret={settings.names.secret} --project={settings.project} "
            "(or pass --api-key-file PATH to have it written to a file only you can read)")


def run_setup(settings: Settings, ui: UI, key: KeySource, rotate_key: bool = False,
              cloud: Cloud | None = None, key_file: SecretFile | None = None,
              apis_enabled_now: bool = False) -> PhaseReport:
    """Reconcile setup's resources. ``key_file`` (opened by the command, before any change)
    receives a key generated here and is removed again when none was, or on failure.
    ``apis_enabled_now``: the caller enabled APIs moments ago (deploy --all's preflight), so
    the calls here wait out their propagation as after enabling them here."""
    try:
        report = _reconcile_setup(settings, ui, key, rotate_key, cloud, apis_enabled_now)
    except BaseException:
        if key_file is not None:
            key_file.discard()
        raise
    new_key = key.generated and key.used
    if new_key and key_file is not None:
        key_file.write(key.value())
        report.data["api_key_file"] = str(key_file.path)
        report.messages.append(f"The new API key was written to {key_file.path} (mode 0600); "
                               f"it is also in Secret Manager ({settings.names.secret}).")
    elif key_file is not None:
        key_file.discard()  # no key was generated: nothing to write, no empty file left
    if new_key and key_file is None and (ui.json_mode or ui.ci):
        # A --json result or a CI log is kept and shared (an Actions log, an artifact): the key
        # never goes there. Say where to read it instead.
        report.data["api_key_secret"] = settings.names.secret
        report.messages.append("A new API key was generated and stored in Secret Manager; it "
                               f"is not printed here. To use it, {key_retrieval_hint(settings)}.")
    ui.report(report)
    if new_key and key_file is None and not (ui.json_mode or ui.ci):
        # Shown once, on the terminal only; it is not stored anywhere on this machine.
        ui.show_secret_once("API key", key.value())
    return report


def _reconcile_setup(settings: Settings, ui: UI, key: KeySource, rotate_key: bool,
                     cloud: Cloud | None, apis_enabled_now: bool) -> PhaseReport:
    cloud = cloud or Cloud(settings)
    cloud.ensure_credentials()
    settings.require_project()
    report = PhaseReport("setup")
    for resource in setup_resources(settings):
        with ui.spinner(f"{resource.key}") as progress:
            cloud.progress = progress
            if apis_enabled_now:
                result = _reconcile_while_apis_propagate(resource, cloud, ui)
            else:
                result = reconcile(resource, cloud)
            report.results.append(result)
        cloud.progress = None
        if isinstance(resource, Apis) and result.action != UNCHANGED:
            apis_enabled_now = True
        if isinstance(resource, ApiKeySecret):
            with ui.spinner(f"{resource.key}/version"):
                result = resource.ensure_version(cloud, key.value, rotate=rotate_key)
            report.results.append(result)
            if key.kind != "generated" and not key.used and not rotate_key:
                report.messages.append(
                    "The secret already has a key, so the given key was not stored; "
                    "pass --rotate-key to replace it.")
    return report
