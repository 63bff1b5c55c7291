"""The two Cloud Run services as desired-state resources.

The desired spec comes from :mod:`orpheus_deploy.specs` (pure). Comparing it with what Cloud Run
returns goes through :func:`managed_fields`: a flat projection of exactly the fields this tool
sets, so server-filled output fields (uri, conditions, generation, defaults for fields we leave
alone) never look like drift, while a CPU or image changed in the console does.

``apply`` is one ``update_service(allow_missing=True)`` call (create-or-update, idempotent), then a
wait for the long-running operation, which Cloud Run completes once the new revision is ready or
has failed; a failure is reported with the revision's condition message and what to do about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from orpheus_deploy.errors import EXIT_FAILURE, EXIT_QUOTA, EXIT_USAGE, CloudError
from orpheus_deploy.resources.base import Change, Resource
from orpheus_deploy.specs import backend_service_spec, frontend_service_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.cloud import run_v2

    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.models import ModelEntry

QUOTA_CONSOLE = "https://console.cloud.google.com/iam-admin/quotas?project={project}"
# Cloud Run's GPU quota metrics (per project and region); zonal-redundancy-off has its own.
GPU_QUOTA_METRIC = {
    False: "run.googleapis.com/nvidia_l4_gpu_allocation_no_zonal_redundancy",
    True: "run.googleapis.com/nvidia_l4_gpu_allocation",
}


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` and the deploy phases need to know about a deployed service."""

    exists: bool
    uri: str | None = None
    ready: bool = False
    message: str = ""
    latest_ready_revision: str | None = None
    latest_created_revision: str | None = None
    image: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"exists": self.exists, "uri": self.uri, "ready": self.ready,
                "message": self.message, "latest_ready_revision": self.latest_ready_revision,
                "latest_created_revision": self.latest_created_revision, "image": self.image}


def _env(container: Any) -> dict[str, str]:
    out = {}
    for e in container.env:
        ref = e.value_source.secret_key_ref
        out[e.name] = f"secret:{ref.secret}:{ref.version}" if ref.secret else e.value
    return out


def _limits(limits: dict[str, str]) -> dict[str, Any]:
    """Compare quantities, not spellings: "4" and "4000m" CPU, "16Gi" and "16384Mi" memory."""
    from orpheus_deploy.cost import parse_cpu, parse_memory_gib

    out: dict[str, Any] = dict(limits)
    try:
        if "cpu" in out:
            out["cpu"] = parse_cpu(out["cpu"])
        if "memory" in out:
            out["memory"] = parse_memory_gib(out["memory"])
    except ValueError:
        pass  # an unparsable value compares as text, and so shows up as a difference
    return out


def managed_fields(svc: run_v2.Service) -> dict[str, Any]:
    """Flat ``{field path: value}`` of everything the specs set, comparable across both sides."""
    t = svc.template
    fields: dict[str, Any] = {
        "ingress": svc.ingress.name if hasattr(svc.ingress, "name") else svc.ingress,
        "invoker_iam_disabled": svc.invoker_iam_disabled,
        "labels": dict(svc.labels),
        "template.labels": dict(t.labels),
        "template.service_account": t.service_account,
        "template.execution_environment": getattr(t.execution_environment, "name",
                                                  t.execution_environment),
        "template.scaling": (t.scaling.min_instance_count, t.scaling.max_instance_count),
        "template.max_instance_request_concurrency": t.max_instance_request_concurrency,
        "template.timeout_s": int(t.timeout.total_seconds()) if t.timeout else 0,
        "template.node_selector.accelerator": t.node_selector.accelerator,
        "template.gpu_zonal_redundancy_disabled": t.gpu_zonal_redundancy_disabled,
        "template.vpc_access.egress": getattr(t.vpc_access.egress, "name", t.vpc_access.egress)
        if t.vpc_access.network_interfaces else None,
        "template.vpc_access.network_interfaces": [
            (n.network, n.subnetwork) for n in t.vpc_access.network_interfaces],
        "template.volumes": [(v.name, v.gcs.bucket, v.gcs.read_only) for v in t.volumes],
        "template.containers": len(t.containers),
    }
    for i, c in enumerate(t.containers):
        p = f"template.containers[{i}]"
        probe = c.startup_probe
        fields.update({
            f"{p}.image": c.image,
            f"{p}.ports": [port.container_port for port in c.ports],
            f"{p}.env": _env(c),
            f"{p}.resources.limits": _limits(dict(c.resources.limits)),
            f"{p}.resources.cpu_idle": c.resources.cpu_idle,
            f"{p}.resources.startup_cpu_boost": c.resources.startup_cpu_boost,
            f"{p}.volume_mounts": [(m.name, m.mount_path) for m in c.volume_mounts],
            f"{p}.startup_probe": (probe.http_get.path, probe.http_get.port,
                                   probe.period_seconds, probe.timeout_seconds,
                                   probe.failure_threshold, probe.initial_delay_seconds),
        })
    return fields


def diff_services(desired: run_v2.Service, actual: run_v2.Service) -> list[Change]:
    want, have = managed_fields(desired), managed_fields(actual)
    return [Change(k, have.get(k), v) for k, v in want.items() if have.get(k) != v]


def service_status(svc: run_v2.Service | None) -> ServiceStatus:
    if svc is None:
        return ServiceStatus(exists=False)
    from google.cloud import run_v2

    cond = svc.terminal_condition
    ready = cond.state == run_v2.Condition.State.CONDITION_SUCCEEDED and bool(
        svc.latest_ready_revision) and svc.latest_ready_revision == svc.latest_created_revision
    image = svc.template.containers[0].image if svc.template.containers else None
    return ServiceStatus(
        exists=True, uri=svc.uri or None, ready=ready, message=cond.message,
        latest_ready_revision=svc.latest_ready_revision.rsplit("/", 1)[-1] or None,
        latest_created_revision=svc.latest_created_revision.rsplit("/", 1)[-1] or None,
        image=image,
    )


def container_env(svc: run_v2.Service | None) -> dict[str, str]:
    """The live service's container environment: the variables with a literal value (one read
    from a secret has none); empty when the service or its container is missing."""
    if svc is None or not svc.template.containers:
        return {}
    return {e.name: e.value for e in svc.template.containers[0].env if e.value}


def explain_failure(message: str, settings: Settings, service: str) -> CloudError:
    """Turn Cloud Run's rejection or revision-failure text into one actionable line."""
    text = " ".join(message.split())
    project = settings.project or "PROJECT"
    lowered = text.lower()
    if "quota" in lowered and ("gpu" in lowered or "nvidia" in lowered or "l4" in lowered):
        zonal = settings.gpu_zonal_redundancy
        metric = GPU_QUOTA_METRIC[zonal]
        kind = "with" if zonal else "without"
        return CloudError(
            f"Cannot deploy {service}: no {settings.gpu_type} GPU quota ({kind} zonal redundancy) "
            f"in {settings.region}: {text}",
            f"request {settings.gpu_type} quota ({kind} zonal redundancy) in region "
            f"{settings.region} ({metric}) at {QUOTA_CONSOLE.format(project=project)}, then "
            "re-run the same command; it continues where it stopped",
            EXIT_QUOTA, kind="quota")
    if "quota" in lowered:
        # Cloud Run's regional CPU / memory allocation quotas, e.g. "Max instances must be set to
        # 0 or fewer to set the requested total CPU. ... Quota violated: CpuAllocPerProjectRegion
        # requested: 60000 allowed: 20000": the spec is valid; the project lacks quota for it.
        return CloudError(
            f"Cannot deploy {service}: not enough Cloud Run quota in {settings.region}: {text}",
            "lower the service's max instances (or its CPU/memory) in orpheus.toml, or request "
            f"more quota at {QUOTA_CONSOLE.format(project=project)}, then re-run the same "
            "command; it continues where it stopped", EXIT_QUOTA, kind="quota")
    if re.search(r"container failed to start|failed to start and listen|startup probe",
                 lowered):
        return CloudError(
            f"Cannot deploy {service}: the container did not become ready: {text}",
            f"read the revision's logs: https://console.cloud.google.com/run/detail/"
            f"{settings.region}/{service}/logs?project={project}", EXIT_FAILURE, kind="failed")
    if "invalid" in lowered or "must" in lowered or "not supported" in lowered:
        return CloudError(f"Cannot deploy {service}: Cloud Run rejected the spec: {text}",
                          "fix the setting it names in orpheus.toml or ORPHEUS_* and re-run",
                          EXIT_USAGE, kind="invalid")
    return CloudError(f"Cannot deploy {service}: {text}",
                      "re-run the same command; it continues where it stopped",
                      EXIT_FAILURE, kind="failed")


class CloudRunService(Resource):
    """Base for both services. ``inputs_missing`` says why the spec cannot be built yet."""

    kind: ClassVar[str] = "run-service"
    access: ClassVar[str] = ""  # who may call it, for plan and status

    def spec(self) -> run_v2.Service:
        raise NotImplementedError

    def inputs_missing(self) -> str | None:
        return None

    def desired(self, settings: Settings) -> run_v2.Service:
        return self.spec()

    def read_service(self, cloud: Cloud) -> run_v2.Service | None:
        from google.api_core import exceptions

        with _translated(f"read Cloud Run service {self.name}", cloud):
            try:
                return cloud.run_services().get_service(name=self.path, retry=cloud.retry)
            except exceptions.NotFound:
                return None

    def read(self, cloud: Cloud) -> run_v2.Service | None:
        return self.read_service(cloud)

    def diff(self, desired: run_v2.Service, actual: run_v2.Service | None) -> list[Change]:
        if actual is None:
            return []
        return diff_services(desired, actual)

    @property
    def path(self) -> str:
        raise NotImplementedError

    def validate(self, cloud: Cloud) -> None:
        """Server-side dry run (validate_only): raises the CloudError a real apply would."""
        self._update(cloud, self.spec(), validate_only=True, progress=None)

    def apply(self, cloud: Cloud, spec: run_v2.Service, progress: Any = None) -> None:
        self._update(cloud, spec, validate_only=False, progress=progress)

    def _update(self, cloud: Cloud, spec: run_v2.Service, validate_only: bool,
                progress: Any) -> run_v2.Service | None:
        from google.api_core import exceptions
        from google.cloud import run_v2

        from orpheus_deploy.gcp import wait_for

        client = cloud.run_services()
        request = run_v2.UpdateServiceRequest(service=spec, allow_missing=True,
                                              validate_only=validate_only)
        verb = "validate" if validate_only else "deploy"
        try:
            operation = _update_once_account_is_visible(client, request, cloud)
        except (exceptions.InvalidArgument, exceptions.FailedPrecondition,
                exceptions.ResourceExhausted) as exc:
            raise explain_failure(exc.message or str(exc), self.settings, self.name) from exc
        except exceptions.GoogleAPICallError as exc:
            from orpheus_deploy.gcp import map_error

            raise map_error(exc, f"{verb} Cloud Run service {self.name}",
                            self.settings.project) from exc
        try:
            return wait_for(operation, f"{verb} {self.name} (waiting for the revision)",
                            cloud.policy, progress=progress)
        except CloudError as exc:
            # The operation's error carries the revision condition (quota, failed start...);
            # prefer the service's own terminal condition, which says the same more precisely.
            svc = None if validate_only else self.read_service(cloud)
            reason = (svc.terminal_condition.message if svc is not None
                      and svc.terminal_condition.message else exc.message)
            raise explain_failure(reason, self.settings, self.name) from exc

    def delete(self, cloud: Cloud) -> bool:
        from google.api_core import exceptions

        from orpheus_deploy.gcp import wait_for

        with _translated(f"delete Cloud Run service {self.name}", cloud):
            try:
                operation = cloud.run_services().delete_service(name=self.path,
                                                                retry=cloud.retry)
            except exceptions.NotFound:
                return False
        wait_for(operation, f"delete {self.name}", cloud.policy)
        return True


def _update_once_account_is_visible(client: Any, request: Any, cloud: Cloud) -> Any:
    """``update_service``, retried while Cloud Run does not know the revision's service account
    yet. Service accounts are eventually consistent: one that `setup` created seconds ago (as
    after `destroy` then `deploy --all`, where upload and build are skipped) is refused with
    "Service account ... does not exist" for a while."""
    import time

    from orpheus_deploy.resources.iam import member_not_visible_yet

    member = f"serviceAccount:{request.service.template.service_account}"
    policy = cloud.policy
    deadline = time.monotonic() + policy.retry_deadline_s
    delay = policy.retry_initial_s
    while True:
        try:
            return client.update_service(request=request, retry=cloud.retry)
        except Exception as exc:
            if not (member_not_visible_yet(exc, member)
                    and time.monotonic() + delay < deadline):
                raise
        time.sleep(delay)
        delay = min(delay * policy.retry_multiplier, policy.retry_max_s)


class BackendService(CloudRunService):
    access = ("internal ingress; invoker IAM on (roles/run.invoker: the frontend's account, "
              "and project Owners/Editors)")

    def __init__(self, settings: Settings, image: str | None = None,
                 model_object: str | None = None, models: Sequence[ModelEntry] = ()):
        super().__init__(settings)
        self.image = image
        self.model_object = model_object
        self.models = tuple(models)  # the manifest, default first (orpheus_deploy/models.py)

    @property
    def name(self) -> str:
        return self.settings.names.backend_service

    @property
    def path(self) -> str:
        return self.settings.names.backend_service_path

    def inputs_missing(self) -> str | None:
        if not self.model_object:
            return "no model uploaded yet (orpheus upload-model PATH)"
        if not self.image:
            return "backend image not built yet (orpheus build)"
        return None

    def spec(self) -> run_v2.Service:
        missing = self.inputs_missing()
        if missing:
            raise CloudError(f"Cannot deploy {self.name}: {missing}",
                             "run `orpheus deploy --all --model PATH`, or the named command",
                             EXIT_USAGE, kind="not_ready")
        return backend_service_spec(self.settings, self.image or "", self.model_object or "",
                                    self.models)


class FrontendService(CloudRunService):
    access = "public: invoker IAM check disabled (invoker_iam_disabled); API key required"

    def __init__(self, settings: Settings, image: str | None = None,
                 backend_uri: str | None = None, models: Sequence[ModelEntry] = ()):
        super().__init__(settings)
        self.image = image
        self.backend_uri = backend_uri
        self.models = tuple(models)

    @property
    def name(self) -> str:
        return self.settings.names.frontend_service

    @property
    def path(self) -> str:
        return self.settings.names.frontend_service_path

    def inputs_missing(self) -> str | None:
        if not self.image:
            return "frontend image not built yet (orpheus build)"
        if not self.backend_uri:
            return "the backend is not deployed yet (orpheus deploy-backend)"
        return None

    def spec(self) -> run_v2.Service:
        missing = self.inputs_missing()
        if missing:
            raise CloudError(f"Cannot deploy {self.name}: {missing}",
                             "run `orpheus deploy --all`, or the named command", EXIT_USAGE,
                             kind="not_ready")
        return frontend_service_spec(self.settings, self.image or "", self.backend_uri or "",
                                     self.models)


def _translated(action: str, cloud: Cloud) -> Any:
    from orpheus_deploy.gcp import translated

    return translated(action, cloud.settings.project)
