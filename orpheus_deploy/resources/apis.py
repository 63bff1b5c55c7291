"""The Google APIs the deployment needs, enabled through Service Usage.

Only missing APIs are enabled (one batch call, then wait for the operation); APIs are never
disabled, by destroy either: other workloads in the project may rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.gcp.operations import wait_for
from orpheus_deploy.resources.base import Change, Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

REQUIRED_APIS: tuple[str, ...] = (
    "run.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    # What `orpheus doctor` reads: the project and your permissions, billing, the GPU quota,
    # organization policies.
    "cloudresourcemanager.googleapis.com",
    "cloudbilling.googleapis.com",
    "cloudquotas.googleapis.com",
    "orgpolicy.googleapis.com",
    "logging.googleapis.com",  # `orpheus logs`; Cloud Run writes the services' logs there
)


@dataclass(frozen=True)
class ApisSpec:
    enabled: tuple[str, ...]  # sorted


class Apis(Resource):
    kind = "apis"

    def __init__(self, settings: Settings, apis: tuple[str, ...] = REQUIRED_APIS):
        super().__init__(settings)
        self.apis = tuple(sorted(apis))

    @property
    def name(self) -> str:
        return "required"

    def desired(self, settings: Settings) -> ApisSpec:
        return ApisSpec(self.apis)

    def read(self, cloud: Cloud) -> ApisSpec:
        """Which of the required APIs are enabled (never None: the project always exists)."""
        from google.cloud.service_usage_v1.types import State

        project = cloud.project
        with translated("check which APIs are enabled", project):
            response = cloud.service_usage().batch_get_services(
                request={"parent": f"projects/{project}",
                         "names": [f"projects/{project}/services/{api}" for api in self.apis]},
                retry=cloud.retry,
            )
        enabled = {s.config.name or s.name.rsplit("/", 1)[-1] for s in response.services
                   if s.state == State.ENABLED}
        return ApisSpec(tuple(sorted(a for a in self.apis if a in enabled)))

    def missing(self, actual: ApisSpec) -> list[str]:
        return [a for a in self.apis if a not in actual.enabled]

    def diff(self, desired: ApisSpec, actual: ApisSpec | None) -> list[Change]:
        if actual is None or desired == actual:
            return []
        return [Change(api, "disabled", "enabled") for api in self.missing(actual)]

    def apply(self, cloud: Cloud, spec: ApisSpec, progress: Any = None) -> None:
        missing = self.missing(self.read(cloud))
        if not missing:
            return
        project = cloud.project
        with translated(f"enable {', '.join(missing)}", project):
            operation = cloud.service_usage().batch_enable_services(
                request={"parent": f"projects/{project}", "service_ids": missing},
                retry=cloud.retry,
            )
        wait_for(operation, f"enable {len(missing)} API(s)", cloud.policy,
                 progress or cloud.progress)

    def delete(self, cloud: Cloud) -> bool:
        return False  # deliberately never disables APIs
