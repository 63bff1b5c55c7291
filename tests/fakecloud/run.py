"""Fake Cloud Run Admin API v2 (services): CRUD, long-running operations, IAM, and the rules the
deployment depends on.

Rules enforced, with Cloud Run's wording where known (cloud.google.com/run/docs/configuring/
services/gpu, .../healthchecks, .../resource-model#names):

- service IDs: lowercase letters, digits and hyphens, start with a letter, not end with a
  hyphen, at most 49 characters;
- a GPU (``node_selector.accelerator``) needs ``nvidia.com/gpu`` = 1, at least 4 CPU and 16 GiB,
  CPU always allocated (``cpu_idle`` False), and GPU quota in the region (zonal-redundancy-off
  has its own quota: ``gpu_quota``);
- startup probe: period and initial delay at most 240 s, timeout not above the period, and
  period x failure threshold at most 600 s (1800 s with a GPU);
- ``template.revision``, when a client sets it, must be new (the classic second-deploy failure);
- a secret referenced by an environment variable or a volume must exist when the revision
  starts;
- ``invoker_iam_disabled`` needs run.services.setIamPolicy as well (Cloud Run's "Allowing public
  (unauthenticated) access" page) and is refused when the organization enforces the managed
  constraint ``run.managed.requireInvokerIam``; ingress and VPC egress must be allowed by
  ``run.allowedIngress`` / ``run.allowedVPCEgress`` (Cloud Run's "Use organization policies"
  page), each when set in ``cloud.org_policies``.

Long-running operations are not done at first (``polls``). When a revision becomes ready the
``on_ready`` hook (if set) is called with the service spec; it may return the URI the service
should report (e.g. a local server that runs the container natively) or raise ``RevisionFailed``
to make the revision fail with that message. ``fail_revisions[service_id] = message`` does the
same without a hook. ``on_deleted`` is told the name of each deleted service.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import run_v2
from google.protobuf import timestamp_pb2

from tests.fakecloud.core import (
    FakeError,
    FakeService,
    already_exists,
    invalid,
    not_found,
    permission_denied,
    rpc,
)

_SERVICE_RE = re.compile(r"^projects/([^/]+)/locations/([a-z]+-[a-z]+[0-9]+)/services/([^/]+)$")
_PARENT_RE = re.compile(r"^projects/([^/]+)/locations/([a-z]+-[a-z]+[0-9]+)$")
_ID_RE = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
GPU_REGIONS = {"us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1",
               "asia-south1"}
GPU_TYPES = {"nvidia-l4"}

Cond = run_v2.Condition


class RevisionFailed(Exception):
    """Raised by an ``on_ready`` hook: the revision fails with this message."""


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def _cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _gib(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G)?", value)
    if not match:
        raise invalid(f"Invalid value specified for memory: {value!r}.")
    scale = {None: 1 / 2**30, "k": 1e3 / 2**30, "M": 1e6 / 2**30, "G": 1e9 / 2**30,
             "Ki": 1 / 2**20, "Mi": 1 / 2**10, "Gi": 1.0, "Ti": 1024.0}[match.group(2)]
    return float(match.group(1)) * scale


class RunServicesFake(FakeService):
    client = ("google.cloud.run_v2", "ServicesClient")
    key = "run"
    api = "run.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.services: dict[str, run_v2.Service] = {}
        self.revisions: dict[str, run_v2.RevisionTemplate] = {}  # revision name -> template
        self.polls = 2
        self.gpu_quota = {"zonal": 1, "no_zonal": 1}  # GPUs per project and region
        self.on_ready: Callable[[run_v2.Service], str | None] | None = None
        # Called with the service name when a service is deleted (e.g. to stop what on_ready ran).
        self.on_deleted: Callable[[str], None] | None = None
        self.fail_revisions: dict[str, str] = {}  # service id -> condition message

    # -- helpers -------------------------------------------------------------------------------
    def _parse(self, name: str) -> tuple[str, str, str]:
        match = _SERVICE_RE.match(name)
        if not match:
            raise invalid(f"Invalid resource name {name!r}: expected "
                          "projects/*/locations/*/services/*.")
        self.check_project(name)
        project, region, service_id = match.groups()
        if not _ID_RE.match(service_id):
            raise invalid(
                f"Invalid service name {service_id!r}: it must use only lowercase alphanumeric "
                "characters and dashes, begin with a letter, not end with a dash, and be at "
                "most 49 characters long.")
        return project, region, service_id

    def get(self, service_id: str) -> run_v2.Service | None:
        """Test helper: the stored service by short ID."""
        for name, svc in self.services.items():
            if name.rsplit("/", 1)[-1] == service_id:
                return run_v2.Service(svc)
        return None

    def _uri(self, region: str, service_id: str) -> str:
        return f"https://{service_id}-{self.cloud.project_number}.{region}.run.app"

    def _validate(self, svc: run_v2.Service, region: str) -> None:
        t = svc.template
        if not t.containers:
            raise invalid("spec.template.spec.containers: at least one container is required.")
        gpu = t.node_selector.accelerator
        for i, c in enumerate(t.containers):
            where = f"spec.template.spec.containers[{i}]"
            if not c.image:
                raise invalid(f"{where}.image: image is required.")
            limits = dict(c.resources.limits)
            if gpu:
                if limits.get("nvidia.com/gpu", "1") != "1":
                    raise invalid(f"{where}.resources.limits: only 1 GPU per instance is "
                                  "supported.")
                if _cpu(limits.get("cpu", "1")) < 4:
                    raise invalid(f"{where}.resources.limits.cpu: Invalid value specified for "
                                  "cpu. Total cpu < 4 is not supported with GPU.")
                if _gib(limits.get("memory", "512Mi")) < 16:
                    raise invalid(f"{where}.resources.limits.memory: Invalid value specified "
                                  "for memory. Total memory < 16 GiB is not supported with GPU.")
                if c.resources.cpu_idle:
                    raise invalid("spec.template.metadata.annotations[run.googleapis.com/"
                                  "cpu-throttling]: GPU is not supported with CPU throttling; "
                                  "CPU must be always allocated.")
            self._validate_probe(c.startup_probe, f"{where}.startupProbe", bool(gpu))
        if gpu:
            if gpu not in GPU_TYPES:
                raise invalid(f"spec.template.spec.nodeSelector: accelerator {gpu!r} is not "
                              f"supported; supported: {', '.join(sorted(GPU_TYPES))}.")
            if region not in GPU_REGIONS:
                raise invalid(f"GPU is not supported in region {region}.")
            if t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1:
                raise invalid("GPU requires the second generation execution environment.")
            kind = "no_zonal" if t.gpu_zonal_redundancy_disabled else "zonal"
            needed = max(t.scaling.max_instance_count, 1)
            if needed > self.gpu_quota[kind]:
                without = "without" if kind == "no_zonal" else "with"
                raise FakeError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"You do not have quota for using GPUs {without} zonal redundancy: "
                    f"requested {needed}, quota {self.gpu_quota[kind]} in {region}. Request "
                    "quota: https://cloud.google.com/run/quotas#increase")
        if t.revision and t.revision in {r.rsplit("/", 1)[-1] for r in self.revisions}:
            raise already_exists(f"Revision named '{t.revision}' with different configuration "
                                 "already exists")

    @staticmethod
    def _validate_probe(probe: run_v2.Probe, where: str, gpu: bool) -> None:
        if not (probe.http_get.path or probe.tcp_socket.port or probe.grpc.port
                or probe.period_seconds or probe.failure_threshold):
            return
        period = probe.period_seconds or 10
        failures = probe.failure_threshold or 3
        timeout = probe.timeout_seconds or 1
        if period > 240 or probe.initial_delay_seconds > 240:
            raise invalid(f"{where}: periodSeconds and initialDelaySeconds must be at most 240.")
        if timeout > period:
            raise invalid(f"{where}.timeoutSeconds must not exceed periodSeconds.")
        cap = 1800 if gpu else 600
        if period * failures > cap:
            raise invalid(f"{where}: failureThreshold * periodSeconds must not exceed {cap} "
                          "seconds.")

    @staticmethod
    def _with_defaults(svc: run_v2.Service) -> run_v2.Service:
        # What the real API fills in for fields a client leaves unset.
        out = run_v2.Service(svc)
        if not out.ingress:
            out.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
        if not out.launch_stage:
            out.launch_stage = "GA"
        t = out.template
        if not t.max_instance_request_concurrency:
            t.max_instance_request_concurrency = 80
        if not t.timeout:
            t.timeout = {"seconds": 300}
        if not t.scaling.max_instance_count:
            t.scaling.max_instance_count = 100
        for c in t.containers:
            if "cpu" not in c.resources.limits:
                c.resources.limits["cpu"] = "1000m"
            if "memory" not in c.resources.limits:
                c.resources.limits["memory"] = "512Mi"
        if not out.traffic:
            out.traffic = [run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                percent=100)]
        return out

    def _missing_secret(self, svc: run_v2.Service) -> str | None:
        secrets = self.cloud.services.get("secretmanager")
        if secrets is None:
            return None
        def missing(ref: str) -> bool:
            name = f"projects/{self.cloud.project_number}/secrets/{ref.rsplit('/', 1)[-1]}"
            return name not in secrets.secrets  # type: ignore[attr-defined]

        for c in svc.template.containers:
            for env in c.env:
                ref = env.value_source.secret_key_ref.secret
                if ref and missing(ref):
                    version = env.value_source.secret_key_ref.version
                    return (f"spec.template.spec.containers[0].env.{env.name}: Secret "
                            f"{ref}/versions/{version} was not found")
        for volume in svc.template.volumes:
            # Volumes are checked at deployment too (cloud.google.com/run/docs/configuring/
            # services/secrets, "How secrets are checked at deployment and runtime").
            if volume.secret.secret and missing(volume.secret.secret):
                return (f"spec.template.spec.volumes[{volume.name}].secret: Secret "
                        f"{volume.secret.secret} was not found")
        return None

    # -- RPCs ----------------------------------------------------------------------------------
    @rpc("run.services.get")
    def get_service(self, request: Any, context: Any) -> Any:
        self._parse(request.name)
        with self.lock:
            if request.name not in self.services:
                raise not_found(f"Resource '{request.name.rsplit('/', 1)[-1]}' of kind "
                                "'SERVICE' in region")
            return run_v2.Service(self.services[request.name])

    @rpc("run.services.list")
    def list_services(self, request: Any, context: Any) -> Any:
        if not _PARENT_RE.match(request.parent):
            raise invalid(f"Invalid parent {request.parent!r}.")
        self.check_project(request.parent)
        with self.lock:
            found = [run_v2.Service(s) for n, s in sorted(self.services.items())
                     if n.startswith(request.parent + "/")]
        return run_v2.ListServicesResponse(services=found)

    @rpc("run.services.create")
    def create_service(self, request: Any, context: Any) -> Any:
        if not _PARENT_RE.match(request.parent):
            raise invalid(f"Invalid parent {request.parent!r}.")
        service = run_v2.Service(request.service)
        service.name = f"{request.parent}/services/{request.service_id}"
        with self.lock:
            if service.name in self.services:
                raise already_exists(f"Resource '{request.service_id}'")
        return self._upsert(service, request.validate_only)

    @rpc("run.services.update")
    def update_service(self, request: Any, context: Any) -> Any:
        with self.lock:
            exists = request.service.name in self.services
        if not exists and not request.allow_missing:
            self._parse(request.service.name)
            raise not_found(f"Resource '{request.service.name.rsplit('/', 1)[-1]}'")
        return self._upsert(run_v2.Service(request.service), request.validate_only)

    def _check_org_policies(self, svc: run_v2.Service) -> None:
        cloud = self.cloud
        with self.lock:
            old = self.services.get(svc.name)
        if svc.invoker_iam_disabled and not (old is not None and old.invoker_iam_disabled):
            if "run.services.setIamPolicy" in cloud.denied:
                raise permission_denied("run.services.setIamPolicy", svc.name)
            if cloud.constraint_enforced("run.managed.requireInvokerIam"):
                raise self._org_denied(svc.name, "run.managed.requireInvokerIam",
                                       "Disabling the invoker IAM check is not allowed.")
        ingress = {run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL: "all",
                   run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY: "internal",
                   run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER:
                       "internal-and-cloud-load-balancing"}.get(svc.ingress, "all")
        allowed = cloud.org_policies.get("run.allowedIngress", {}).get("allowed_values")
        if allowed is not None and ingress not in allowed:
            raise self._org_denied(svc.name, "run.allowedIngress",
                                   f"Ingress setting '{ingress}' is not allowed.")
        vpc = svc.template.vpc_access
        if vpc.network_interfaces or vpc.connector:
            egress = ("all-traffic" if vpc.egress == run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
                      else "private-ranges-only")
            allowed = cloud.org_policies.get("run.allowedVPCEgress", {}).get("allowed_values")
            if allowed is not None and egress not in allowed:
                raise self._org_denied(svc.name, "run.allowedVPCEgress",
                                       f"VPC egress setting '{egress}' is not allowed.")

    @staticmethod
    def _org_denied(resource: str, constraint: str, why: str) -> FakeError:
        return FakeError(grpc.StatusCode.FAILED_PRECONDITION,
                         f"Operation denied by org policy on resource '{resource}': "
                         f"[\"constraints/{constraint}\": {why}]",
                         violations=[(f"constraints/{constraint}", resource, why)])

    def _upsert(self, service: run_v2.Service, validate_only: bool) -> Any:
        _, region, service_id = self._parse(service.name)
        self._validate(service, region)
        self._check_org_policies(service)
        desired = self._with_defaults(service)
        if validate_only:
            return self.cloud.operations.start(result=desired, polls=0, metadata=desired)
        with self.lock:
            old = self.services.get(service.name)
            stored = run_v2.Service(desired)
            now = _now()
            if old is None:
                stored.uid = hashlib.sha1(service.name.encode()).hexdigest()[:32]
                stored.create_time = now
                stored.generation = 1
                stored.uri = self._uri(region, service_id)
                stored.urls = [stored.uri]
                stored.creator = "fake@example.com"
                template_changed = True
            else:
                for f in ("uid", "create_time", "uri", "urls", "creator", "latest_ready_revision",
                          "latest_created_revision", "terminal_condition"):
                    setattr(stored, f, getattr(old, f))
                stored.generation = old.generation + 1
                template_changed = (run_v2.RevisionTemplate.serialize(old.template)
                                    != run_v2.RevisionTemplate.serialize(stored.template))
            stored.update_time = now
            stored.etag = f'"{stored.generation}"'
            stored.reconciling = True
            if template_changed or not old or not old.latest_ready_revision:
                revision = stored.template.revision or (
                    f"{service_id}-{stored.generation:05d}-"
                    f"{hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:3]}")
                revision_name = f"{service.name}/revisions/{revision}"
                self.revisions[revision_name] = run_v2.RevisionTemplate(stored.template)
                stored.latest_created_revision = revision_name
            stored.terminal_condition = Cond(
                type_="Ready", state=Cond.State.CONDITION_RECONCILING,
                message="Deploying revision.")
            self.services[service.name] = stored

        op_name: list[str] = []

        def finish() -> Any:
            failure = self._finish_rollout(service.name)
            if isinstance(failure, FakeError):
                # The outcome is decided at completion; Operations reads an entry's error after
                # on_done has run, so a failed rollout sets it here.
                self.cloud.operations._ops[op_name[0]]["error"] = failure
                return None
            return failure

        op = self.cloud.operations.start(result=None, polls=self.polls, metadata=stored,
                                         on_done=finish)
        op_name.append(op.name)
        return op

    def _finish_rollout(self, name: str) -> run_v2.Service | FakeError | None:
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                return None
            service_id = name.rsplit("/", 1)[-1]
            message = self.fail_revisions.get(service_id) or self._missing_secret(svc)
            uri = None
            if message is None and self.on_ready is not None:
                try:
                    uri = self.on_ready(run_v2.Service(svc))
                except RevisionFailed as exc:
                    message = str(exc)
            svc.reconciling = False
            svc.observed_generation = svc.generation
            if message:
                revision = svc.latest_created_revision.rsplit("/", 1)[-1]
                full = (f"Revision '{revision}' is not ready and cannot serve traffic. "
                        f"{message}")
                svc.terminal_condition = Cond(type_="Ready", state=Cond.State.CONDITION_FAILED,
                                              message=full)
                return FakeError(grpc.StatusCode.FAILED_PRECONDITION, full)
            if uri:
                svc.uri = uri
                svc.urls = [uri]
            svc.latest_ready_revision = svc.latest_created_revision
            svc.terminal_condition = Cond(type_="Ready", state=Cond.State.CONDITION_SUCCEEDED)
            return run_v2.Service(svc)

    @rpc("run.services.delete")
    def delete_service(self, request: Any, context: Any) -> Any:
        self._parse(request.name)
        with self.lock:
            svc = self.services.pop(request.name, None)
            if svc is None:
                raise not_found(f"Resource '{request.name.rsplit('/', 1)[-1]}'")
            self.revisions = {k: v for k, v in self.revisions.items()
                              if not k.startswith(request.name + "/")}
        self.cloud.iam.forget(request.name)
        if self.on_deleted is not None:
            self.on_deleted(request.name)
        return self.cloud.operations.start(result=svc, polls=self.polls, metadata=svc)

    @rpc("run.services.getIamPolicy")
    def get_iam_policy(self, request: Any, context: Any) -> Any:
        self._parse(request.resource)
        with self.lock:
            if request.resource not in self.services:
                raise not_found(f"Resource '{request.resource.rsplit('/', 1)[-1]}'")
        return self.cloud.iam.get(request.resource)

    @rpc("run.services.setIamPolicy")
    def set_iam_policy(self, request: Any, context: Any) -> Any:
        self._parse(request.resource)
        with self.lock:
            if request.resource not in self.services:
                raise not_found(f"Resource '{request.resource.rsplit('/', 1)[-1]}'")
        return self.cloud.iam.set(request.resource, request.policy, self.cloud.validate_member)


SERVICES = [RunServicesFake]
