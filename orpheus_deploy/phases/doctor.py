"""`orpheus doctor`: what would stop a deploy, found in seconds instead of after an upload and a
20-minute CUDA build. Read-only; also the first step of `deploy --all`, which stops on a failure.

Each check ends as ``pass``, ``fail`` (with the fix) or ``unknown`` (could not check: why, and
what to do). A check whose API is not enabled yet is ``unknown``: `setup` enables it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_PERMISSION,
    EXIT_QUOTA,
    CloudError,
    OrpheusError,
)

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"

# Cloud Quotas IDs of Cloud Run's GPU quotas (per project and region), by (type, zonal redundancy).
GPU_QUOTA_IDS = {
    ("nvidia-l4", False): "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion",
    ("nvidia-l4", True): "NvidiaL4GpuAllocPerProjectRegion",
}

# What each phase calls, as IAM permissions tested on the project (testIamPermissions).
PHASE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "setup": ("serviceusage.services.enable", "iam.serviceAccounts.create",
              "storage.buckets.create", "storage.buckets.setIamPolicy",
              "artifactregistry.repositories.create", "secretmanager.secrets.create",
              "secretmanager.versions.add", "secretmanager.secrets.setIamPolicy"),
    "upload-model": ("storage.objects.create", "storage.objects.get"),
    "build": ("cloudbuild.builds.create", "cloudbuild.builds.get",
              "artifactregistry.repositories.setIamPolicy"),
    "deploy": ("run.services.create", "run.services.update", "run.services.setIamPolicy",
               "iam.serviceAccounts.actAs", "compute.subnetworks.get",
               "compute.subnetworks.setPrivateIpGoogleAccess"),
    "test": ("secretmanager.versions.access",),
}
# A role that grants each permission's family, for the hint.
_ROLE_OF = {"serviceusage": "roles/serviceusage.serviceUsageAdmin",
            "iam": "roles/iam.serviceAccountAdmin and roles/iam.serviceAccountUser",
            "storage": "roles/storage.admin", "artifactregistry": "roles/artifactregistry.admin",
            "secretmanager": "roles/secretmanager.admin",
            "cloudbuild": "roles/cloudbuild.builds.editor", "run": "roles/run.admin",
            "compute": "roles/compute.networkAdmin"}
_EXIT = {"credentials": EXIT_AUTH, "billing": EXIT_PERMISSION, "permissions": EXIT_PERMISSION,
         "GPU quota": EXIT_QUOTA, "GPU region": EXIT_QUOTA, "network": EXIT_NOT_FOUND,
         "project": EXIT_NOT_FOUND}


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | UNKNOWN
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.as_dict() for c in self.checks]}


class DoctorFailed(OrpheusError):
    def __init__(self, report: DoctorReport):
        first = report.failures[0]
        others = len(report.failures) - 1
        super().__init__(
            f"Preflight check failed: {first.name}: {first.detail}"
            + (f" (and {others} more, listed above)" if others else ""),
            first.fix or "run `orpheus doctor` for details",
            _EXIT.get(first.name, EXIT_FAILURE))
        self.report = report


def run_doctor(settings: Settings, cloud: Cloud) -> DoctorReport:
    report = DoctorReport()
    report.checks.append(_credentials(settings))
    if report.checks[-1].status == FAIL:
        return report  # nothing else can be asked
    settings.require_project()
    for check in (_project, _billing, _gpu, _permissions, _network, _org_policies):
        report.checks.extend(_guarded(check, settings, cloud))
    return report


def _guarded(check: Callable[[Settings, Cloud], list[Check]], settings: Settings,
             cloud: Cloud) -> list[Check]:
    """A check that could not ask its question is UNKNOWN, saying why and what to do."""
    name = check.__name__.strip("_").replace("_", " ")
    name = {"gpu": "GPU quota", "org policies": "org policies"}.get(name, name)
    try:
        return check(settings, cloud)
    except CloudError as exc:
        if exc.kind == "api_disabled":
            fix = "run `orpheus setup` (it enables the APIs), then `orpheus doctor` again"
        elif exc.kind == "permission":
            fix = exc.hint or "ask for a role that can read this"
        else:
            fix = exc.hint or "retry"
        return [Check(name, UNKNOWN, f"could not check: {exc.message}", fix)]


def _translated(what: str, settings: Settings) -> Any:
    from orpheus_deploy.gcp import translated

    return translated(what, settings.project)


# -- the checks ---------------------------------------------------------------------------------
def _credentials(settings: Settings) -> Check:
    from orpheus_deploy.gcp import credentials as creds

    if creds.grpc_endpoint():
        return Check("credentials", PASS, "test endpoint (ORPHEUS_GRPC_ENDPOINT): none needed")
    try:
        credentials, _ = creds.default_credentials()
    except CloudError as exc:
        return Check("credentials", FAIL, exc.message, exc.hint or creds.ADC_HINT)
    account = (getattr(credentials, "service_account_email", None)
               or getattr(credentials, "_service_account_email", None))
    kind = type(credentials).__module__.rsplit(".", 1)[-1]
    who = f"service account {account}" if account else f"{kind} credentials (user login)"
    return Check("credentials", PASS, f"Application Default Credentials: {who}")


def _project(settings: Settings, cloud: Cloud) -> list[Check]:
    from google.api_core import exceptions

    from orpheus_deploy.gcp import map_error

    project = settings.project
    with _translated(f"read project {project}", settings):
        try:
            found = cloud.projects().get_project(name=f"projects/{project}", retry=cloud.retry)
        except (exceptions.NotFound, exceptions.PermissionDenied) as exc:
            mapped = map_error(exc, f"read project {project}", project)
            if mapped.kind == "api_disabled":
                raise mapped from exc
            return [Check("project", FAIL, f"project {project} does not exist or you cannot "
                          "see it", "check --project, and that your account has a role on it")]
    state = found.state.name
    if state != "ACTIVE":
        return [Check("project", FAIL, f"project {project} is {state}",
                      "use an active project")]
    return [Check("project", PASS, f"{project} (number {found.name.rsplit('/', 1)[-1]}) is "
                  "active")]


def _billing(settings: Settings, cloud: Cloud) -> list[Check]:
    project = settings.project
    with _translated("read the project's billing", settings):
        info = cloud.grpc_client("google.cloud.billing_v1", "CloudBillingClient") \
            .get_project_billing_info(name=f"projects/{project}", retry=cloud.retry)
    if not info.billing_enabled:
        return [Check("billing", FAIL, f"billing is not enabled on {project}",
                      "link an open billing account at https://console.cloud.google.com/"
                      f"billing/linkedaccount?project={project}")]
    return [Check("billing", PASS, f"enabled ({info.billing_account_name})")]


def _gpu(settings: Settings, cloud: Cloud) -> list[Check]:
    from google.api_core import exceptions

    from orpheus_deploy.resources.cloudrun import GPU_QUOTA_METRIC, QUOTA_CONSOLE

    zonal = settings.gpu_zonal_redundancy
    quota_id = GPU_QUOTA_IDS.get((settings.gpu_type, zonal))
    if quota_id is None:
        return [Check("GPU quota", UNKNOWN, f"no known Cloud Run quota for {settings.gpu_type}",
                      "check the quota in the console")]
    name = (f"projects/{settings.project}/locations/global/services/run.googleapis.com/"
            f"quotaInfos/{quota_id}")
    with _translated("read the Cloud Run GPU quota", settings):
        try:
            info = cloud.grpc_client("google.cloud.cloudquotas_v1", "CloudQuotasClient") \
                .get_quota_info(name=name, retry=cloud.retry)
        except exceptions.NotFound:
            info = None
    regions = sorted({loc for d in (info.dimensions_infos if info else ())
                      for loc in d.applicable_locations})
    if settings.region not in regions:
        offered = ", ".join(regions) or "none listed"
        return [Check("GPU region", FAIL, f"Cloud Run offers no {settings.gpu_type} in "
                      f"{settings.region} (offered in: {offered})",
                      "set region in orpheus.toml (or --region) to one of those")]
    value = next(int(d.details.value) for d in info.dimensions_infos  # type: ignore[union-attr]
                 if settings.region in d.applicable_locations)
    needed = settings.backend_max_instances
    kind = "with" if zonal else "without"
    region_ok = Check("GPU region", PASS, f"{settings.region} offers {settings.gpu_type}")
    if value < needed:
        return [region_ok, Check(
            "GPU quota", FAIL,
            f"{settings.gpu_type} quota {kind} zonal redundancy in {settings.region} is "
            f"{value}, the backend needs {needed} (backend_max_instances)",
            f"request quota {quota_id} ({GPU_QUOTA_METRIC[zonal]}) >= {needed} for region "
            f"{settings.region} at {QUOTA_CONSOLE.format(project=settings.project)} (or "
            "`gcloud beta quotas preferences create --service=run.googleapis.com "
            f"--quota-id={quota_id} --preferred-value={needed} --dimensions=region="
            f"{settings.region}`)")]
    return [region_ok, Check("GPU quota", PASS, f"{value} x {settings.gpu_type} {kind} zonal "
                             f"redundancy in {settings.region} (need {needed})")]


def _permissions(settings: Settings, cloud: Cloud) -> list[Check]:
    wanted = sorted({p for perms in PHASE_PERMISSIONS.values() for p in perms})
    with _translated("test your permissions on the project", settings):
        held = set(cloud.projects().test_iam_permissions(
            resource=f"projects/{settings.project}", permissions=wanted,
            retry=cloud.retry).permissions)
    missing = {phase: [p for p in perms if p not in held]
               for phase, perms in PHASE_PERMISSIONS.items()}
    missing = {phase: perms for phase, perms in missing.items() if perms}
    if not missing:
        return [Check("permissions", PASS, f"your account holds all {len(wanted)} permissions "
                      "the phases need")]
    detail = "; ".join(f"{phase}: {', '.join(perms)}" for phase, perms in missing.items())
    roles = sorted({_ROLE_OF.get(p.split(".", 1)[0], "a role with it")
                    for perms in missing.values() for p in perms})
    return [Check("permissions", FAIL, f"missing {detail}",
                  f"grant your account {', '.join(roles)} on project {settings.project} "
                  "(or Owner)")]


def _network(settings: Settings, cloud: Cloud) -> list[Check]:
    from google.api_core import exceptions

    s = settings
    with _translated(f"read network {s.network}", s):
        try:
            cloud.compute("NetworksClient").get(project=s.project, network=s.network)
        except exceptions.NotFound:
            return [Check("network", FAIL, f"VPC network {s.network} does not exist",
                          "create it, or set network and subnet in orpheus.toml")]
        try:
            subnet = cloud.compute("SubnetworksClient").get(
                project=s.project, region=s.region, subnetwork=s.subnet)
        except exceptions.NotFound:
            return [Check("network", FAIL, f"subnet {s.subnet} does not exist in {s.region}",
                          f"create a subnet of network {s.network} in {s.region}, or set "
                          "subnet in orpheus.toml to an existing one")]
    if subnet.network.rsplit("/", 1)[-1] != s.network:
        return [Check("network", FAIL, f"subnet {s.subnet} belongs to network "
                      f"{subnet.network.rsplit('/', 1)[-1]}, not {s.network}",
                      "set network and subnet in orpheus.toml to a matching pair")]
    return [Check("network", PASS, f"network {s.network}, subnet {s.subnet} in {s.region} "
                  "(Direct VPC egress)")]


def _org_policies(settings: Settings, cloud: Cloud) -> list[Check]:
    client = cloud.grpc_client("google.cloud.orgpolicy_v2", "OrgPolicyClient")

    def effective(constraint: str) -> Any:
        with _translated(f"read organization policy {constraint}", settings):
            return client.get_effective_policy(
                name=f"projects/{settings.project}/policies/{constraint}", retry=cloud.retry)

    out: list[Check] = []
    drs = _allowed(effective("iam.allowedPolicyMemberDomains"))
    invoker_iam_required = _enforced(effective("run.managed.requireInvokerIam"))
    if invoker_iam_required:
        out.append(Check("org policy: public frontend", FAIL,
                         "run.managed.requireInvokerIam is enforced, so the frontend cannot "
                         "disable its invoker IAM check"
                         + (", and domain-restricted sharing refuses allUsers" if drs else ""),
                         "ask an organization admin to exempt this project from "
                         "constraints/run.managed.requireInvokerIam"))
    else:
        note = ("domain-restricted sharing is on; no problem: the frontend is public through "
                "invoker_iam_disabled, not an allUsers binding" if drs is not None
                else "the frontend may disable its invoker IAM check")
        out.append(Check("org policy: public frontend", PASS, note))
    locations = _allowed(effective("gcp.resourceLocations"))
    if locations is not None and not _region_allowed(settings.region, locations):
        out.append(Check("org policy: locations", FAIL, f"gcp.resourceLocations allows "
                         f"{', '.join(locations)}, not {settings.region}",
                         "choose an allowed region (--region), or ask an admin"))
    else:
        out.append(Check("org policy: locations", PASS, f"{settings.region} is allowed"))
    for constraint, needed in (("run.allowedIngress", ("internal", "all")),
                               ("run.allowedVPCEgress", ("all-traffic",))):
        allowed = _allowed(effective(constraint))
        refused = [v for v in needed if allowed is not None and v not in allowed]
        if refused:
            out.append(Check(f"org policy: {constraint}", FAIL,
                             f"{constraint} does not allow {', '.join(refused)}",
                             f"ask an admin to allow {', '.join(refused)} for this project"))
        else:
            out.append(Check(f"org policy: {constraint}", PASS,
                             f"{', '.join(needed)} allowed"))
    return out


def _allowed(policy: Any) -> list[str] | None:
    """The allowed values of a list constraint, or None when it does not restrict them."""
    values: list[str] = []
    for rule in policy.spec.rules:
        if rule.allow_all:
            return None
        values.extend(rule.values.allowed_values)
    return values or None


def _enforced(policy: Any) -> bool:
    return any(rule.enforce for rule in policy.spec.rules)


def _region_allowed(region: str, allowed: list[str]) -> bool:
    # Values are regions ("us-central1") or value groups ("in:us-locations",
    # "in:us-central1-locations"); the group of a region's continent covers it.
    continent = region.split("-", 1)[0]
    return any(v in (region, f"in:{region}-locations", f"in:{continent}-locations")
               for v in allowed)
