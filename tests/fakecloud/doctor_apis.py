"""Fakes of the read-only APIs `orpheus doctor` asks: Cloud Billing (is billing enabled), Cloud
Quotas (the Cloud Run GPU quota per region) and Org Policy (effective policies).

- Billing: ``cloud.billing_enabled`` (default True) is the project's state.
- Quotas: the QuotaInfo of Cloud Run's L4 quotas is built from the fake Cloud Run's own
  ``gpu_quota`` and ``GPU_REGIONS``, so a quota set to 0 fails `doctor` and `deploy` alike.
  Quota IDs as Cloud Quotas names them: NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion /
  NvidiaL4GpuAllocPerProjectRegion (metrics run.googleapis.com/nvidia_l4_gpu_allocation
  [_no_zonal_redundancy]); a region where Cloud Run offers no L4 is absent from its
  dimensions, as in QuotaInfo.dimensions_infos[].applicable_locations.
- Org Policy: GetEffectivePolicy answers from ``cloud.org_policies`` (see core.FakeCloud); an
  unset constraint has no rules, i.e. Google's default.
"""

from __future__ import annotations

from typing import Any

from google.cloud import billing_v1, cloudquotas_v1, orgpolicy_v2

from tests.fakecloud.core import FakeService, not_found, rpc
from tests.fakecloud.run import GPU_REGIONS

GPU_QUOTA_IDS = {"NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion": "no_zonal",
                 "NvidiaL4GpuAllocPerProjectRegion": "zonal"}


class BillingFake(FakeService):
    client = ("google.cloud.billing_v1", "CloudBillingClient")
    key = "billing"
    api = "cloudbilling.googleapis.com"

    @rpc("resourcemanager.projects.get")
    def get_project_billing_info(self, request: Any, context: Any) -> Any:
        project = self.check_project(request.name)
        enabled = getattr(self.cloud, "billing_enabled", True)
        return billing_v1.ProjectBillingInfo(
            name=f"projects/{project}/billingInfo", project_id=self.cloud.project,
            billing_account_name="billingAccounts/012345-6789AB-CDEF01" if enabled else "",
            billing_enabled=enabled)


class QuotasFake(FakeService):
    client = ("google.cloud.cloudquotas_v1", "CloudQuotasClient")
    key = "quotas"
    api = "cloudquotas.googleapis.com"

    @rpc("cloudquotas.quotas.get")
    def get_quota_info(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        quota_id = request.name.rsplit("/", 1)[-1]
        if ("/services/run.googleapis.com/quotaInfos/" not in request.name
                or quota_id not in GPU_QUOTA_IDS):
            raise not_found(request.name)
        value = self.cloud.services["run"].gpu_quota[GPU_QUOTA_IDS[quota_id]]
        no_zonal = GPU_QUOTA_IDS[quota_id] == "no_zonal"
        metric = ("run.googleapis.com/nvidia_l4_gpu_allocation"
                  + ("_no_zonal_redundancy" if no_zonal else ""))
        return cloudquotas_v1.QuotaInfo(
            name=request.name, quota_id=quota_id, metric=metric, service="run.googleapis.com",
            dimensions=["region"], container_type=cloudquotas_v1.QuotaInfo.ContainerType.PROJECT,
            dimensions_infos=[cloudquotas_v1.DimensionsInfo(
                dimensions={"region": region}, applicable_locations=[region],
                details=cloudquotas_v1.QuotaDetails(value=value))
                for region in sorted(GPU_REGIONS)])


class OrgPolicyFake(FakeService):
    client = ("google.cloud.orgpolicy_v2", "OrgPolicyClient")
    key = "orgpolicy"
    api = "orgpolicy.googleapis.com"

    @rpc("orgpolicy.policy.get")
    def get_effective_policy(self, request: Any, context: Any) -> Any:
        self.check_project(request.name)
        constraint = request.name.rsplit("/policies/", 1)[-1]
        rules = []
        setting = self.cloud.org_policies.get(constraint)
        Rule = orgpolicy_v2.PolicySpec.PolicyRule
        if setting is not None and "enforce" in setting:
            rules.append(Rule(enforce=bool(setting["enforce"])))
        elif setting is not None:
            rules.append(Rule(values=Rule.StringValues(
                allowed_values=setting.get("allowed_values", []),
                denied_values=setting.get("denied_values", []))))
        return orgpolicy_v2.Policy(name=request.name, spec=orgpolicy_v2.PolicySpec(rules=rules))


SERVICES = [BillingFake, QuotasFake, OrgPolicyFake]
