"""Private Google Access on the subnet the frontend's Direct VPC egress uses.

The frontend sends all its traffic into the VPC (egress ALL_TRAFFIC) so that its calls to the
internal-only backend count as internal (design section 6). Those calls, like the ones to Secret
Manager and the metadata-derived ID tokens, go to Google addresses; without Private Google Access
(or a Cloud NAT) a subnet with only internal IPs cannot reach them.

The subnet is not ours (usually the project's ``default``): this resource only switches the flag
on, and ``delete`` leaves it as it is, since other workloads may rely on it.
google-cloud-compute has only a REST transport (tests point it at ``ORPHEUS_REST_ENDPOINT``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from orpheus_deploy.errors import EXIT_NOT_FOUND, CloudError
from orpheus_deploy.resources.base import Resource

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


@dataclass(frozen=True)
class SubnetSpec:
    private_ip_google_access: bool


class SubnetPrivateAccess(Resource):
    kind: ClassVar[str] = "subnet-private-google-access"

    @property
    def name(self) -> str:
        return f"{self.settings.region}/{self.settings.subnet}"

    def desired(self, settings: Settings) -> SubnetSpec:
        return SubnetSpec(private_ip_google_access=True)

    def read(self, cloud: Cloud) -> SubnetSpec | None:
        from google.api_core import exceptions

        from orpheus_deploy.gcp import translated

        s = self.settings
        with translated(f"read subnet {self.name}", s.project):
            try:
                subnet = cloud.compute("SubnetworksClient").get(
                    project=s.names.project, region=s.region, subnetwork=s.subnet)
            except exceptions.NotFound:
                return None
        return SubnetSpec(private_ip_google_access=bool(subnet.private_ip_google_access))

    def apply(self, cloud: Cloud, spec: SubnetSpec) -> None:
        from google.cloud import compute_v1

        from orpheus_deploy.gcp import translated

        s = self.settings
        if self.read(cloud) is None:
            # Creating a VPC is a network design decision, not something to do silently.
            raise CloudError(
                f"Subnet {s.subnet} not found in {s.region} (network {s.network})",
                "create it, or set network and subnet in orpheus.toml to an existing subnet "
                f"of region {s.region}", EXIT_NOT_FOUND, kind="not_found")
        body = compute_v1.SubnetworksSetPrivateIpGoogleAccessRequest(
            private_ip_google_access=spec.private_ip_google_access)
        with translated(f"enable Private Google Access on subnet {self.name}", s.project):
            operation = cloud.compute("SubnetworksClient").set_private_ip_google_access_unary(
                project=s.names.project, region=s.region, subnetwork=s.subnet,
                subnetworks_set_private_ip_google_access_request_resource=body)
            # Poll through our own RegionOperationsClient: the library's ExtendedOperation
            # builds its own operations client, which ignores a custom endpoint, and would
            # sleep 1 s+ per poll instead of following the (injectable) policy.
            operations = cloud.compute("RegionOperationsClient")
            delays = cloud.policy.poll_delays()
            started = time.monotonic()
            while operation.status != compute_v1.Operation.Status.DONE:
                if time.monotonic() - started > cloud.policy.operation_timeout_s:
                    raise CloudError(f"Timed out enabling Private Google Access on {self.name}",
                                     "re-run the command; the change may still complete")
                time.sleep(next(delays))
                operation = operations.get(project=s.names.project, region=s.region,
                                           operation=operation.name)
        if operation.error.errors:
            message = "; ".join(e.message for e in operation.error.errors)
            raise CloudError(f"Cannot enable Private Google Access on subnet {self.name}: "
                             f"{message}", "check your permissions on the VPC network")

    def delete(self, cloud: Cloud) -> bool:
        return False
