"""Who may invoke each Cloud Run service (``roles/run.invoker``).

- backend: the frontend's service account and nobody else. Internal ingress alone is not access
  control (anything in the VPC could call it); IAM is, so other invoker members are removed.
  (Principals with project-wide roles that include run.routes.invoke, such as Owner and
  Editor, can invoke it too; see the README.)
- frontend: no binding. It is public through ``invoker_iam_disabled`` on the service (specs.py),
  which works under domain-restricted sharing where ``allUsers`` is refused; the API key,
  checked by the app, is its access control.

Read-modify-write with the policy's etag, so a concurrent change makes the write fail instead of
being lost; an already-correct policy is not written at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from orpheus_deploy.errors import CloudError
from orpheus_deploy.resources.base import Change, Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

INVOKER_ROLE = "roles/run.invoker"


@dataclass(frozen=True)
class InvokerSpec:
    members: frozenset[str]


class ServiceInvokers(Resource):
    """``roles/run.invoker`` members of one service, exactly."""

    kind: ClassVar[str] = "run-invoker"

    def __init__(self, settings: Settings, service: str, members: set[str]):
        super().__init__(settings)
        self.service = service
        self.members = frozenset(members)

    @property
    def name(self) -> str:
        return self.service

    @property
    def path(self) -> str:
        return f"{self.settings.names.location_path}/services/{self.service}"

    def desired(self, settings: Settings) -> InvokerSpec:
        return InvokerSpec(self.members)

    def _policy(self, cloud: Cloud) -> Any | None:
        from google.api_core import exceptions

        from orpheus_deploy.gcp import translated

        with translated(f"read the IAM policy of {self.service}", cloud.settings.project):
            try:
                return cloud.run_services().get_iam_policy(
                    request={"resource": self.path}, retry=cloud.retry)
            except exceptions.NotFound:
                return None

    def read(self, cloud: Cloud) -> InvokerSpec | None:
        policy = self._policy(cloud)
        if policy is None:
            return None  # the service does not exist: nothing to bind yet
        members: set[str] = set()
        for binding in policy.bindings:
            if binding.role == INVOKER_ROLE and not binding.condition.expression:
                members.update(binding.members)
        return InvokerSpec(frozenset(members))

    def diff(self, desired: InvokerSpec, actual: InvokerSpec | None) -> list[Change]:
        if actual is None or actual.members == desired.members:
            return []
        return [Change(INVOKER_ROLE, sorted(actual.members), sorted(desired.members))]

    def apply(self, cloud: Cloud, spec: InvokerSpec) -> None:
        from google.iam.v1 import policy_pb2

        from orpheus_deploy.gcp import translated

        policy = self._policy(cloud)
        if policy is None:
            raise CloudError(f"Cannot set who may invoke {self.service}: it does not exist",
                             "deploy it first", kind="not_found")
        kept = [b for b in policy.bindings
                if b.role != INVOKER_ROLE or b.condition.expression]
        new = policy_pb2.Policy(version=policy.version, etag=policy.etag,
                                audit_configs=policy.audit_configs)
        new.bindings.extend(kept)
        new.bindings.add(role=INVOKER_ROLE, members=sorted(spec.members))
        with translated(f"set the IAM policy of {self.service}", cloud.settings.project):
            cloud.run_services().set_iam_policy(
                request={"resource": self.path, "policy": new}, retry=cloud.retry)

    def delete(self, cloud: Cloud) -> bool:
        # The policy lives and dies with its service; deleting the service removes it.
        return False


def backend_invokers(settings: Settings) -> ServiceInvokers:
    n = settings.names
    return ServiceInvokers(settings, n.backend_service, {f"serviceAccount:{n.frontend_sa_email}"})

