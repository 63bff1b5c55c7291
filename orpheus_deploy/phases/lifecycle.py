"""`plan` (diff everything), `status` (read everything), `destroy` (delete in reverse order).

The ordered resource list is setup's resources followed by the deploy phases' resources; destroy
walks it backwards so nothing is deleted while something created after it still depends on it.
The model bucket (and the model and deployment state in it) is kept unless ``delete_model``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpheus_deploy.resources.base import (
    ABSENT,
    DELETE,
    UNCHANGED,
    PhaseReport,
    Resource,
    Result,
    plan_resource,
)
from orpheus_deploy.resources.cloudrun import (
    BackendService,
    CloudRunService,
    FrontendService,
    container_env,
    service_status,
)

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


def plan(settings: Settings, cloud: Cloud, validate: bool = True) -> PhaseReport:
    """Every resource's diff, then the models the services would serve differently and the GPU
    memory budget; a manifest that cannot fit on the GPU is refused (ConfigError)."""
    from orpheus_deploy.phases.deploy import plan_services
    from orpheus_deploy.phases.models import plan_models
    from orpheus_deploy.phases.setup import setup_resources
    from orpheus_deploy.resources.cloudrun import FrontendService
    from orpheus_deploy.state import load_state

    cloud.ensure_credentials()
    models = plan_models(settings, load_state(cloud, settings),
                         BackendService(settings).read_service(cloud),
                         FrontendService(settings).read_service(cloud))
    report = PhaseReport("plan")
    for resource in setup_resources(settings):
        report.results.append(plan_resource(resource, cloud))
    report.results.extend(plan_services(settings, cloud, validate=validate))
    report.results.extend(models)
    return report


@dataclass
class StatusReport:
    resources: list[dict[str, Any]] = field(default_factory=list)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, str | None] = field(default_factory=dict)
    model_object: str | None = None
    gpu: dict[str, Any] = field(default_factory=dict)
    cost_per_hour: dict[str, Any] = field(default_factory=dict)
    storage_per_month: dict[str, Any] = field(default_factory=dict)
    # The manifest (phases/models.py): name, language, voices, object, size, resident.
    models: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # gpu_memory.MemoryBudget.as_dict()
    # The frontend's fair-use limits (per instance): as deployed, else as configured.
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def existing(self) -> list[str]:
        """Objects of this deployment that exist. API enablement and the subnet's Private Google
        Access flag are settings of things the tool does not own (destroy leaves them, other
        workloads may rely on them), so they are listed but not counted here."""
        return [r["key"] for r in self.resources if r["exists"]
                and not r["key"].startswith(("apis/", "subnet-private-google-access/"))]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"existing": self.existing}


def status(settings: Settings, cloud: Cloud) -> StatusReport:
    from orpheus_deploy.cost import backend_hourly_cost
    from orpheus_deploy.phases.deploy import backend_resources, frontend_resources
    from orpheus_deploy.phases.models import models_status
    from orpheus_deploy.phases.setup import setup_resources
    from orpheus_deploy.state import load_state

    cloud.ensure_credentials()
    state = load_state(cloud, settings)
    backend_live = BackendService(settings).read_service(cloud)
    backend_uri = service_status(backend_live).uri
    out = StatusReport(model_object=state.model_object)
    frontend_live: Any = None
    resources: list[Resource] = [*setup_resources(settings),
                                 *backend_resources(settings, state),
                                 *frontend_resources(settings, state, backend_uri)]
    for resource in resources:
        if isinstance(resource, CloudRunService):
            live = backend_live if isinstance(resource, BackendService) else \
                resource.read_service(cloud)
            if isinstance(resource, FrontendService):
                frontend_live = live
            st = service_status(live)
            matches = None
            if live is not None and not resource.inputs_missing():
                matches = not resource.diff(resource.spec(), live)
            live_public = bool(live is not None and live.invoker_iam_disabled)
            out.services[resource.name] = st.as_dict() | {
                "matches_desired": matches, "access": resource.access,
                "invoker_iam_disabled": live_public if live is not None else None}
            out.resources.append({"key": resource.key, "exists": st.exists,
                                  "matches": matches,
                                  "detail": f"{st.uri or ''} ({resource.access})"
                                  if st.exists else resource.access})
            continue
        result = plan_resource(resource, cloud)
        exists = result.action != "create"
        out.resources.append({"key": resource.key, "exists": exists,
                              "matches": result.action == UNCHANGED if exists else None,
                              "detail": ", ".join(str(c) for c in result.changes)})
    out.images = {"backend": state.backend_image_digest, "frontend": state.frontend_image_digest}
    out.gpu = {"type": settings.gpu_type, "count": settings.gpu_count,
               "zonal_redundancy": settings.gpu_zonal_redundancy,
               "min_instances": settings.backend_min_instances,
               "max_instances": settings.backend_max_instances}
    out.cost_per_hour = backend_hourly_cost(settings).as_dict()
    out.storage_per_month = storage_cost(settings, cloud).as_dict()
    frontend_uri = out.services.get(settings.names.frontend_service, {}).get("uri")
    out.models, out.memory = models_status(settings, cloud, state, frontend_uri)
    out.limits = frontend_limits(settings, frontend_live)
    return out


def storage_cost(settings: Settings, cloud: Cloud) -> Any:
    """Bytes kept in the two buckets and the image repository (billed monthly, running or
    not), with their list price."""
    from google.api_core import exceptions

    from orpheus_deploy.cost import StorageCost
    from orpheus_deploy.gcp import translated

    n = settings.names

    def bucket_bytes(name: str) -> int:
        try:
            return sum(int(b.size or 0) for b in cloud.storage().list_blobs(
                name, retry=cloud.policy.storage_retry()))
        except exceptions.NotFound:
            return 0

    with translated("measure the deployment's storage", settings.project):
        try:
            registry = int(cloud.artifact_registry().get_repository(
                name=n.repo_path, retry=cloud.retry).size_bytes)
        except exceptions.NotFound:
            registry = 0
        return StorageCost(bucket_bytes(n.bucket), bucket_bytes(n.build_bucket), registry)


def frontend_limits(settings: Settings, live: Any) -> dict[str, Any]:
    """The limits the deployed frontend runs with (its environment), or the configured ones
    when it is not deployed (or predates them)."""
    from orpheus_deploy.specs import FRONTEND_LIMIT_VARIABLES, frontend_limits_env

    env = container_env(live)
    source = ("deployed" if all(v in env for v in FRONTEND_LIMIT_VARIABLES.values())
              else "configured")
    if source == "configured":
        env = frontend_limits_env(settings)
    values: dict[str, Any] = {k: int(float(env[v])) for k, v in FRONTEND_LIMIT_VARIABLES.items()}
    return values | {"source": source, "per": "frontend instance"}


def destroy(settings: Settings, cloud: Cloud, delete_model: bool = False) -> PhaseReport:
    from orpheus_deploy.phases.deploy import backend_resources, frontend_resources
    from orpheus_deploy.phases.setup import setup_resources
    from orpheus_deploy.resources.bucket import BuildBucket, ModelBucket
    from orpheus_deploy.state import load_state, save_state

    cloud.ensure_credentials()
    report = PhaseReport("destroy")
    state = load_state(cloud, settings)
    n = settings.names
    # Left alone on purpose, and said so rather than shown as "absent".
    not_deleted = {
        "apis/required": "kept: APIs are never disabled (other workloads may use them)",
        f"run-invoker/{n.backend_service}": "removed with its service",
        f"subnet-private-google-access/{settings.region}/{settings.subnet}":
            "kept: the subnet is not ours and others may need Private Google Access",
    }
    ordered: list[Resource] = [*setup_resources(settings), *backend_resources(settings, state),
                               *frontend_resources(settings, state, None)]
    for resource in reversed(ordered):
        if isinstance(resource, ModelBucket) and not delete_model:
            report.results.append(Result(resource.key, UNCHANGED,
                                         detail="kept (pass --delete-model to delete it)"))
            continue
        if resource.key in not_deleted:
            report.results.append(Result(resource.key, UNCHANGED,
                                         detail=not_deleted[resource.key]))
            continue
        deleted = resource.delete(cloud)
        report.results.append(Result(resource.key, DELETE if deleted else ABSENT))
    build_bucket = BuildBucket(settings)  # not in the ordered list: `orpheus build` makes it
    report.results.append(Result(build_bucket.key,
                                 DELETE if build_bucket.delete(cloud) else ABSENT))
    if not delete_model:
        # The images went with the registry: forget their digests so the next deploy rebuilds.
        save_state(cloud, settings, dataclasses.replace(
            state, backend_image_digest=None, frontend_image_digest=None,
            extra={k: v for k, v in state.extra.items() if k != "build_context_sha256"}))
        report.messages.append(f"Kept gs://{settings.names.bucket} (the model and the "
                               "deployment state); `destroy --delete-model` removes it too.")
    return report
