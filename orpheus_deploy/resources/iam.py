"""IAM role bindings on single resources (least privilege: never project-wide).

``IamBinding`` grants one role to one member on one resource by a read-modify-write of the
resource's IAM policy, retried on etag conflicts (ABORTED / 409/412). Subclasses only say how to
get and set the policy of their kind of resource:

- ``SecretIamBinding``: Secret Manager secret (gRPC ``get_iam_policy``/``set_iam_policy``).
- ``BucketIamBinding``: Cloud Storage bucket (JSON API via google-cloud-storage).
- ``GrpcIamBinding``: any gRPC client with the standard IAM mixin, e.g. a Cloud Run service::

      GrpcIamBinding(settings, client=lambda c: c.run_services(),
                     resource=names.backend_service_path, role="roles/run.invoker",
                     member=f"serviceAccount:{names.frontend_sa_email}")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_CONFLICT, CloudError
from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.resources.base import Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class BindingSpec:
    role: str
    member: str
    granted: bool = True


class IamBinding(Resource):
    kind = "iam"

    def __init__(self, settings: Settings, resource: str, role: str, member: str,
                 label: str | None = None):
        super().__init__(settings)
        self.resource = resource
        self.role = role
        self.member = member
        self.label = label or resource

    @property
    def name(self) -> str:
        return f"{self.label}/{self.role}/{self.member.split(':', 1)[-1]}"

    # subclasses: policy as {role: set(members)} plus an opaque handle for writing it back
    def _get(self, cloud: Cloud) -> tuple[dict[str, set[str]], Any]:
        raise NotImplementedError

    def _set(self, cloud: Cloud, bindings: dict[str, set[str]], handle: Any) -> None:
        raise NotImplementedError

    def _is_conflict(self, exc: Exception) -> bool:
        from google.api_core import exceptions

        return isinstance(exc, (exceptions.Aborted, exceptions.Conflict,
                                exceptions.PreconditionFailed))

    def desired(self, settings: Settings) -> BindingSpec:
        return BindingSpec(self.role, self.member)

    def read(self, cloud: Cloud) -> BindingSpec | None:
        from google.api_core import exceptions

        with translated(f"read IAM policy of {self.label}", cloud.project):
            try:
                bindings, _ = self._get(cloud)
            except exceptions.NotFound:
                return None
        if self.member in bindings.get(self.role, set()):
            return BindingSpec(self.role, self.member)
        return None

    def _modify(self, cloud: Cloud, change: Callable[[dict[str, set[str]]], bool],
                action: str) -> bool:
        policy = cloud.policy
        deadline = time.monotonic() + policy.retry_deadline_s
        delay = policy.retry_initial_s
        conflicts = 0
        while conflicts < _MAX_ATTEMPTS:
            with translated(f"{action} on {self.label}", cloud.project):
                bindings, handle = self._get(cloud)
                if not change(bindings):
                    return False
                try:
                    self._set(cloud, bindings, handle)
                    return True
                except Exception as exc:
                    if self._is_conflict(exc):
                        # Someone changed the policy since we read it: re-read and re-apply.
                        conflicts += 1
                        continue
                    if not (member_not_visible_yet(exc, self.member)
                            and time.monotonic() + delay < deadline):
                        raise
                # A service account created seconds ago (by setup, just before this binding)
                # is not yet known to the IAM policy check: Google answers 400 "Service account
                # ... does not exist" for a while. Wait and try again, within the retry deadline.
                time.sleep(delay)
                delay = min(delay * policy.retry_multiplier, policy.retry_max_s)
        raise CloudError(f"IAM policy of {self.label} keeps changing concurrently",
                         "retry in a minute", EXIT_CONFLICT, kind="conflict")

    def apply(self, cloud: Cloud, spec: BindingSpec) -> None:
        def grant(bindings: dict[str, set[str]]) -> bool:
            members = bindings.setdefault(spec.role, set())
            if spec.member in members:
                return False
            members.add(spec.member)
            return True

        self._modify(cloud, grant, f"grant {spec.role} to {spec.member}")

    def delete(self, cloud: Cloud) -> bool:
        from google.api_core import exceptions

        def revoke(bindings: dict[str, set[str]]) -> bool:
            members = bindings.get(self.role, set())
            if self.member not in members:
                return False
            members.discard(self.member)
            return True

        try:
            return self._modify(cloud, revoke, f"revoke {self.role} from {self.member}")
        except CloudError as err:
            if isinstance(err.__cause__, exceptions.NotFound):
                return False
            raise


def member_not_visible_yet(exc: Exception, member: str) -> bool:
    """Whether a policy write failed only because IAM does not know ``member``'s service account
    yet. Creating a service account is eventually consistent: a binding written right after
    ``create_service_account`` is refused with INVALID_ARGUMENT / HTTP 400 "Service account X
    does not exist." for some seconds (the same check Terraform's Google provider retries on).
    """
    from google.api_core import exceptions

    kind, _, email = member.partition(":")
    if kind != "serviceAccount" or not isinstance(
            exc, (exceptions.InvalidArgument, exceptions.BadRequest, exceptions.NotFound)):
        return False
    text = str(getattr(exc, "message", "") or exc)
    return "does not exist" in text and (email in text or "Service account" in text)


class GrpcIamBinding(IamBinding):
    """A binding on a resource served by a gRPC client with the IAM policy mixin."""

    def __init__(self, settings: Settings, client: Callable[[Cloud], Any], resource: str,
                 role: str, member: str, label: str | None = None):
        super().__init__(settings, resource, role, member, label)
        self._client = client

    def _get(self, cloud: Cloud) -> tuple[dict[str, set[str]], Any]:
        policy = self._client(cloud).get_iam_policy(request={"resource": self.resource},
                                                    retry=cloud.retry)
        return {b.role: set(b.members) for b in policy.bindings}, policy

    def _set(self, cloud: Cloud, bindings: dict[str, set[str]], handle: Any) -> None:
        from google.iam.v1 import policy_pb2

        policy = policy_pb2.Policy(version=handle.version, etag=handle.etag)
        for role in sorted(bindings):
            if bindings[role]:
                policy.bindings.add(role=role, members=sorted(bindings[role]))
        # The etag makes this write fail (ABORTED) if the policy changed since it was read.
        self._client(cloud).set_iam_policy(request={"resource": self.resource,
                                                    "policy": policy}, retry=cloud.retry)


class SecretIamBinding(GrpcIamBinding):
    def __init__(self, settings: Settings, role: str, member: str):
        names = settings.names
        super().__init__(settings, lambda cloud: cloud.secrets(), names.secret_path, role,
                         member, label=f"secret/{names.secret}")


class BucketIamBinding(IamBinding):
    """A binding on the model bucket, or on ``bucket`` when given (e.g. the build bucket)."""

    def __init__(self, settings: Settings, role: str, member: str, bucket: str | None = None):
        bucket = bucket or settings.names.bucket
        super().__init__(settings, bucket, role, member, label=f"bucket/{bucket}")

    def _get(self, cloud: Cloud) -> tuple[dict[str, set[str]], Any]:
        bucket = cloud.storage().bucket(self.resource)
        policy = bucket.get_iam_policy(requested_policy_version=3,
                                       retry=cloud.policy.storage_retry())
        return {b["role"]: set(b["members"]) for b in policy.bindings}, policy

    def _set(self, cloud: Cloud, bindings: dict[str, set[str]], handle: Any) -> None:
        handle.bindings.clear()
        for role in sorted(bindings):
            if bindings[role]:
                handle.bindings.append({"role": role, "members": set(bindings[role])})
        # The policy carries its etag; GCS answers 412 if it changed meanwhile.
        cloud.storage().bucket(self.resource).set_iam_policy(handle)
