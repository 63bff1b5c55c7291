"""Phases `deploy-backend`, `deploy-frontend` and the whole pipeline `deploy --all`.

Each service is one idempotent ``update_service(allow_missing=True)`` call, made only when the
live service differs from the spec (or its latest revision is not ready); IAM and the subnet are
reconciled the same way. So a second run makes no mutating call, and a run that failed part-way
continues where it stopped: everything before the failure is found already as desired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_USAGE, CloudError
from orpheus_deploy.resources.base import (
    CREATE,
    UNCHANGED,
    UPDATE,
    Change,
    PhaseReport,
    Result,
    plan_resource,
    reconcile,
)
from orpheus_deploy.resources.cloudrun import (
    BackendService,
    CloudRunService,
    FrontendService,
    service_status,
)
from orpheus_deploy.resources.network import SubnetPrivateAccess
from orpheus_deploy.resources.run_iam import backend_invokers

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.secret_file import SecretFile
    from orpheus_deploy.ui import UI


def reconcile_service(resource: CloudRunService, cloud: Cloud, ui: UI | None = None) -> Result:
    """Create/update the service when it differs or is not ready; wait for its revision."""
    actual = resource.read(cloud)
    desired = resource.spec()
    changes = tuple(resource.diff(desired, actual)) if actual is not None else ()
    status = service_status(actual)
    if actual is not None and not changes and status.ready:
        return Result(resource.key, UNCHANGED, detail=status.uri or "")
    action = CREATE if actual is None else UPDATE
    detail = "" if changes or actual is None else \
        f"previous revision not ready ({status.message or 'reconciling'}); rolling out again"
    label = f"{'Creating' if actual is None else 'Updating'} {resource.name}"
    if ui is not None:
        with ui.spinner(label) as progress:
            _apply_once_access_applies(resource, cloud, desired, ui, progress)
    else:
        _apply_once_access_applies(resource, cloud, desired, None, None)
    after = service_status(resource.read(cloud))
    return Result(resource.key, action, changes, detail or (after.uri or ""))


def _start_bindings(resource: CloudRunService) -> list[Any]:
    """The bindings (made by setup) that a revision of this service needs to start: the
    backend's account reads the model bucket (its volume), the frontend's reads the secret."""
    from orpheus_deploy.phases.setup import setup_resources
    from orpheus_deploy.resources.iam import IamBinding

    account = resource.spec().template.service_account
    return [r for r in setup_resources(resource.settings)
            if isinstance(r, IamBinding) and r.member == f"serviceAccount:{account}"]


def _apply_once_access_applies(resource: CloudRunService, cloud: Cloud, desired: Any,
                               ui: UI | None, progress: Any) -> None:
    """Roll the service out; while its revision fails only because its account cannot yet use
    a binding that setup made seconds ago (IAM propagation: the revision's start checks the
    secret and the volume), roll out again, within the propagation time."""
    from orpheus_deploy.gcp.propagation import until_applied

    bindings = _start_bindings(resource)
    account = desired.template.service_account

    def not_applied_yet(exc: Exception) -> bool:
        text = getattr(exc, "message", str(exc)).lower()
        return (isinstance(exc, CloudError) and exc.kind == "failed"
                and account.lower() in text
                and any(w in text for w in ("permission", "cannot read", "denied"))
                and all(b.read(cloud) is not None for b in bindings))

    what = "; ".join(f"{b.role} on {b.label} for {account}" for b in bindings) or account
    until_applied(lambda: resource.apply(cloud, desired, progress=progress),
                  waiting=not_applied_yet, what=what, policy=cloud.policy,
                  report=ui.info if ui is not None else None)


def _state(settings: Settings, cloud: Cloud) -> Any:
    from orpheus_deploy.state import load_state

    return load_state(cloud, settings)


def _deploy_service(report: PhaseReport, service: CloudRunService, invokers: Any, cloud: Cloud,
                    ui: UI | None) -> str | None:
    """The service, then who may invoke it (a policy on the service, so it must exist first);
    returns the service's URL."""
    report.results.append(reconcile_service(service, cloud, ui))
    report.results.append(reconcile(invokers, cloud))
    return service_status(service.read(cloud)).uri


def backend_resources(settings: Settings, state: Any) -> tuple[BackendService, Any]:
    from orpheus_deploy.models import manifest
    from orpheus_deploy.phases.build import image_ref

    models = manifest(settings, state)
    default = models[0].object if models else None
    return (BackendService(settings, image_ref(settings, "backend", state.backend_image_digest),
                           default, models), backend_invokers(settings))


def check_memory(settings: Settings, state: Any) -> None:
    """Refuse a manifest whose resident models cannot fit on the GPU (before any change)."""
    from orpheus_deploy.gpu_memory import memory_budget
    from orpheus_deploy.models import manifest

    memory_budget(settings, manifest(settings, state)).check()


def deploy_backend(settings: Settings, cloud: Cloud, ui: UI | None = None) -> PhaseReport:
    cloud.ensure_credentials()
    state = _state(settings, cloud)
    check_memory(settings, state)
    service, invokers = backend_resources(settings, state)
    report = PhaseReport("deploy-backend")
    uri = _deploy_service(report, service, invokers, cloud, ui)
    report.data["backend_url"] = uri
    report.messages.append(f"Backend (internal, IAM-protected): {uri}")
    return report


def frontend_resources(settings: Settings, state: Any, backend_uri: str | None
                       ) -> tuple[SubnetPrivateAccess, FrontendService]:
    """The subnet's Private Google Access, then the service. No invoker binding: the frontend is
    public through ``invoker_iam_disabled`` (specs.py), which domain-restricted sharing allows,
    where an ``allUsers`` binding is refused."""
    from orpheus_deploy.models import manifest
    from orpheus_deploy.phases.build import image_ref

    return (SubnetPrivateAccess(settings),
            FrontendService(settings, image_ref(settings, "frontend",
                                                state.frontend_image_digest), backend_uri,
                            manifest(settings, state)))


def deploy_frontend(settings: Settings, cloud: Cloud, ui: UI | None = None) -> PhaseReport:
    cloud.ensure_credentials()
    backend = service_status(BackendService(settings).read_service(cloud))
    if not backend.exists or not backend.uri:
        raise CloudError(f"The backend {settings.names.backend_service} is not deployed, and "
                         "the frontend needs its URL", "run `orpheus deploy-backend` first",
                         EXIT_USAGE, kind="not_ready")
    subnet, service = frontend_resources(settings, _state(settings, cloud), backend.uri)
    report = PhaseReport("deploy-frontend")
    report.results.append(reconcile(subnet, cloud))
    report.results.append(reconcile_service(service, cloud, ui))
    uri = service_status(service.read(cloud)).uri
    report.data["url"] = uri
    report.messages.append(f"Frontend (public: invoker IAM check disabled; the API key is "
                           f"required): {uri}")
    return report


# -- the whole pipeline ------------------------------------------------------------------------
@dataclass
class PipelineOptions:
    model_path: Path | None = None
    api_key: Any = None  # phases.setup.KeySource; generated when None
    force_build: bool = False
    run_test: bool = True
    test_key: str | None = None
    # Where a generated key is written (never printed): opened by the command, before any change.
    api_key_file: SecretFile | None = None


@dataclass
class PipelineReport:
    phases: list[PhaseReport] = field(default_factory=list)
    smoke: Any = None  # phases.smoke_test.SmokeResult
    doctor: Any = None  # phases.doctor.DoctorReport

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.phases)

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "phases": [p.as_dict() for p in self.phases],
                "doctor": self.doctor.as_dict() if self.doctor is not None else None,
                "smoke_test": self.smoke.as_dict() if self.smoke is not None else None}


def deploy_all(settings: Settings, cloud: Cloud, ui: UI, options: PipelineOptions
               ) -> PipelineReport:
    """setup → upload-model (when a path is given) → build → backend → frontend → test."""
    from orpheus_deploy.phases import build as build_phase
    from orpheus_deploy.phases.setup import KeySource, run_setup

    out = PipelineReport()
    try:
        cloud.ensure_credentials()
        settings.require_project()
        out.doctor, apis_enabled_now = _preflight(settings, cloud, ui)
    except BaseException:
        if options.api_key_file is not None:
            options.api_key_file.discard()  # no key was made: no empty file left behind
        raise
    # Setup finds the APIs enabled (by the preflight) and must still wait out their propagation.
    out.phases.append(run_setup(settings, ui, options.api_key or KeySource.generate(),
                                cloud=cloud, key_file=options.api_key_file,
                                apis_enabled_now=apis_enabled_now))
    if options.model_path is not None:
        out.phases.append(_upload_model(settings, cloud, ui, options.model_path))
    elif not _state(settings, cloud).model_object:
        raise CloudError("No model has been uploaded yet, so the backend has nothing to load",
                         "pass --model PATH/TO/orpheus.gguf (or run `orpheus upload-model`)",
                         EXIT_USAGE, kind="not_ready")
    check_memory(settings, _state(settings, cloud))  # before a build that would be for nothing
    ui.info("Building images (skipped when the sources are unchanged)…")
    outcome = build_phase.run_build(settings, cloud, force=options.force_build,
                                    on_log=None if ui.json_mode else ui.info)
    build_report = build_phase.report(outcome, settings)
    ui.report(build_report)
    out.phases.append(build_report)
    for run in (deploy_backend, deploy_frontend):
        phase = run(settings, cloud, ui)
        ui.report(phase)
        out.phases.append(phase)
    if options.run_test:
        from orpheus_deploy.phases.smoke_test import (
            SmokeTestFailed,
            api_key_from_secret,
            frontend_url,
            run_smoke_test,
        )

        url = frontend_url(settings, cloud)
        key = options.test_key or api_key_from_secret(settings, cloud)
        ui.info(f"Smoke test against {url} (a cold GPU start can take minutes)…")
        # The frontend's roles/run.invoker on the backend was granted moments ago: until it
        # applies, the backend refuses the frontend (403), which the test waits out.
        out.smoke = run_smoke_test(url, key, patience=cloud.policy, report=ui.info,
                                   invoker=invoker_binding_text(settings))
        if not out.smoke.ok:
            raise SmokeTestFailed(out.smoke)
    return out


def _preflight(settings: Settings, cloud: Cloud, ui: UI) -> tuple[Any, bool]:
    """`orpheus doctor` before anything slow or billable: the APIs it reads are enabled first
    (setup's first step, idempotent), then a failing check stops the pipeline here, before the
    model upload and the image build. Returns the doctor's report and whether APIs were
    enabled just now."""
    from orpheus_deploy.phases.doctor import DoctorFailed, run_doctor
    from orpheus_deploy.resources.apis import Apis

    with ui.spinner("apis/required") as progress:
        cloud.progress = progress
        try:
            enabled = reconcile(Apis(settings), cloud).action != UNCHANGED
        finally:
            cloud.progress = None
    report = run_doctor(settings, cloud)
    if not ui.json_mode:
        from orpheus_deploy.commands.doctor import render

        render(ui, report)
    if not report.ok:
        raise DoctorFailed(report)
    return report, enabled


def _upload_model(settings: Settings, cloud: Cloud, ui: UI, path: Path) -> PhaseReport:
    from orpheus_deploy.phases.upload_model import run_upload

    return run_upload(settings, ui, path, cloud=cloud)


# -- no credentials: a dry run from desired state only -----------------------------------------
NOT_CHECKED = "not checked: no credentials"


def dry_run_plan(settings: Settings, model_path: Path | None) -> PhaseReport:
    """Every resource `deploy --all` would create, from the settings alone (no cloud calls)."""
    from orpheus_deploy.phases.setup import setup_resources

    report = PhaseReport("deploy --all (DRY RUN)")
    for resource in setup_resources(settings):
        report.results.append(Result(resource.key, CREATE, detail=NOT_CHECKED))
    n = settings.names
    model = model_path.name if model_path else "<--model PATH>"
    report.results.append(Result(f"object/{n.bucket}/{model}", CREATE,
                                 detail=f"upload-model; {NOT_CHECKED}"))
    for kind in ("backend", "frontend"):
        report.results.append(Result(f"image/{settings.name}-{kind}", CREATE,
                                     detail=f"Cloud Build -> {n.image(kind)}"))
    for resource in (BackendService(settings), backend_invokers(settings),
                     SubnetPrivateAccess(settings), FrontendService(settings)):
        report.results.append(Result(resource.key, CREATE, detail=_describe(resource, settings)))
    report.results.append(Result("smoke-test", CREATE,
                                 detail="401 without key, 401 wrong key, 200 + audio with key"))
    return report


def _describe(resource: Any, settings: Settings) -> str:
    if isinstance(resource, BackendService):
        return (f"{settings.gpu_type} x{settings.gpu_count}, {settings.backend_cpu} CPU, "
                f"{settings.backend_memory}, {settings.backend_min_instances}.."
                f"{settings.backend_max_instances} instances, internal; {NOT_CHECKED}")
    if isinstance(resource, FrontendService):
        return (f"{settings.frontend_cpu} CPU, {settings.frontend_memory}, public (invoker IAM "
                f"check disabled; API key required), Direct VPC egress {settings.network}/"
                f"{settings.subnet}; {NOT_CHECKED}")
    if isinstance(resource, SubnetPrivateAccess):
        return f"enable Private Google Access; {NOT_CHECKED}"
    return f"roles/run.invoker {sorted(resource.members)}; {NOT_CHECKED}"


def plan_services(settings: Settings, cloud: Cloud, validate: bool = True) -> list[Result]:
    """Plan rows for the deploy phases: diffs, plus a server-side dry run of changed services."""
    state = _state(settings, cloud)
    backend, backend_iam = backend_resources(settings, state)
    live_backend = service_status(backend.read(cloud))
    subnet, frontend = frontend_resources(settings, state, live_backend.uri)
    rows: list[Result] = []
    for resource in (backend, backend_iam, subnet, frontend):
        if isinstance(resource, CloudRunService):
            rows.append(_plan_service(resource, cloud, validate))
        else:
            rows.append(plan_resource(resource, cloud))
    return rows


def _plan_service(resource: CloudRunService, cloud: Cloud, validate: bool) -> Result:
    actual = resource.read(cloud)
    missing = resource.inputs_missing()
    if missing:
        return Result(resource.key, CREATE if actual is None else UPDATE,
                      detail=f"pending: {missing}")
    desired = resource.spec()
    changes: tuple[Change, ...] = ()
    if actual is None:
        action = CREATE
    else:
        changes = tuple(resource.diff(desired, actual))
        ready = service_status(actual).ready
        action = UPDATE if changes or not ready else UNCHANGED
    detail = resource.access
    if action != UNCHANGED and validate:
        try:
            resource.validate(cloud)
            detail += "; validated by Cloud Run (dry run)"
        except CloudError as exc:
            detail = f"WOULD FAIL: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    return Result(resource.key, action, changes, detail)


def invoker_binding_text(settings: Settings) -> str:
    n = settings.names
    return f"roles/run.invoker on {n.backend_service} for {n.frontend_sa_email}"
