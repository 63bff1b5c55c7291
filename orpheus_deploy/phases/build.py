"""`orpheus build`: pack, upload, run cloudbuild.yaml on Cloud Build, stream the log, keep digests.

Skipped when the deployment state already records both image digests for this exact build
context (same SHA-256 of the deterministic archive): the CUDA build is the slowest step of a
deploy and rebuilding unchanged sources would only cost time and money.

The log is streamed from the logs bucket (``gs://<build bucket>/logs/log-<id>.txt``, which Cloud
Build appends to while it runs) rather than from Cloud Logging: a user-specified logs bucket is
allowed with any build service account and needs no extra API or client library.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orpheus_deploy.build_context import BuildContext, pack, project_root
from orpheus_deploy.errors import EXIT_FAILURE, CloudError, InputError
from orpheus_deploy.resources.base import CREATE, UNCHANGED, PhaseReport, Result

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.state import DeploymentState

CONFIG_FILE = "cloudbuild.yaml"
CONTEXT_KEY = "build_context_sha256"  # kept in DeploymentState.extra
LOG_TAIL_LINES = 25
_STEP_LINE = re.compile(r'^Step #(\d+)(?: - "([^"]*)")?: ?(.*)$')


@dataclass
class BuildOutcome:
    skipped: bool
    build_id: str | None = None
    digests: dict[str, str] = field(default_factory=dict)  # "backend"/"frontend" -> sha256:...
    context_sha256: str = ""
    files: int = 0
    log_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "build_id": self.build_id, "digests": self.digests,
                "context_sha256": self.context_sha256, "files": self.files,
                "log_url": self.log_url}


def image_ref(settings: Settings, kind: str, digest: str | None) -> str | None:
    """``<registry>/<project>/<repo>/<name>-<kind>@sha256:…`` (what the services deploy)."""
    if not digest:
        return None
    repo_path = settings.names.image(kind).rsplit(":", 1)[0]
    return f"{repo_path}@{digest}"


def load_build_config(root: Path) -> Any:
    """cloudbuild.yaml as a ``cloudbuild_v1.Build`` (camelCase or snake_case keys, as gcloud)."""
    import yaml
    from google.cloud.devtools import cloudbuild_v1
    from google.protobuf import json_format

    path = root / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{path} not found", "run orpheus from a checkout of orpheus-deploy")
    data = yaml.safe_load(path.read_text())
    build = cloudbuild_v1.Build()
    try:
        json_format.ParseDict(data, cloudbuild_v1.Build.pb(build))
    except json_format.ParseError as exc:
        raise InputError(f"{path} is not a valid build config: {exc}") from None
    return build


def build_request(settings: Settings, config: Any, bucket: str, source_object: str) -> Any:
    """The Build to submit: cloudbuild.yaml plus our source, substitutions and log location."""
    from google.cloud.devtools import cloudbuild_v1

    n = settings.names
    build = cloudbuild_v1.Build(config)
    build.source = cloudbuild_v1.Source(storage_source=cloudbuild_v1.StorageSource(
        bucket=bucket, object_=source_object))
    build.substitutions.update({"_REGION": settings.region, "_REPO": n.repo,
                                "_NAME": settings.name, "_TAG": settings.image_tag})
    build.logs_bucket = f"gs://{bucket}/logs"
    # proto-plus ships no type information, so mypy reads its enums' members as plain ints.
    build.options.logging = cloudbuild_v1.BuildOptions.LoggingMode.GCS_ONLY  # type: ignore[assignment]
    # Tags annotate the build (they are not image tags). With the default name "orpheus" the
    # two would be the same; a tag unique to this submission finds the build again when
    # CreateBuild's answer is lost (see submit_and_follow).
    tags = [*build.tags, "orpheus", settings.name, submission_tag()]
    del build.tags[:]
    build.tags.extend(dict.fromkeys(tags))
    return build


def submission_tag() -> str:
    import secrets

    return f"orpheus-submit-{secrets.token_hex(6)}"


def up_to_date(state: DeploymentState, context_sha: str) -> bool:
    return bool(state.backend_image_digest and state.frontend_image_digest
                and state.extra.get(CONTEXT_KEY) == context_sha)


def run_build(settings: Settings, cloud: Cloud, *, force: bool = False,
              on_log: Callable[[str], None] | None = None,
              root: Path | None = None) -> BuildOutcome:
    from orpheus_deploy.state import load_state, save_state

    root = root or project_root()
    context = pack(root)
    state = load_state(cloud, settings)
    if not force and up_to_date(state, context.sha256):
        return BuildOutcome(skipped=True, context_sha256=context.sha256, files=len(context.files),
                            digests={"backend": state.backend_image_digest or "",
                                     "frontend": state.frontend_image_digest or ""})
    config = load_build_config(root)
    bucket = ensure_build_bucket(settings, cloud)
    builder = grant_builder_access(settings, cloud, bucket)
    source_object = upload_context(cloud, bucket, context)
    request = build_request(settings, config, bucket, source_object)
    build = submit_and_follow(settings, cloud, request, on_log or (lambda _line: None),
                              builder=builder)
    digests = digests_of(settings, build)
    state = load_state(cloud, settings)  # re-read: the build took minutes
    state = dataclasses.replace(
        state, backend_image_digest=digests["backend"], frontend_image_digest=digests["frontend"],
        extra={**state.extra, CONTEXT_KEY: context.sha256})
    save_state(cloud, settings, state)
    return BuildOutcome(skipped=False, build_id=build.id, digests=digests,
                        context_sha256=context.sha256, files=len(context.files),
                        log_url=build.log_url or None)


def ensure_build_bucket(settings: Settings, cloud: Cloud) -> str:
    """The staging bucket for sources and logs, in the deploy region, private (public access
    prevention), with a lifecycle rule that deletes old sources and logs; created on first use
    and brought back to that spec on every build (resources/bucket.py)."""
    from orpheus_deploy.resources.base import reconcile
    from orpheus_deploy.resources.bucket import BuildBucket

    bucket = BuildBucket(settings)
    reconcile(bucket, cloud)
    return bucket.name


# What the account that runs the build needs, granted on the two resources it touches only.
# Cloud Build docs (store-view-build-logs): a user-created logs bucket needs Storage Admin for the
# build's service account unless it is the legacy Cloud Build account; the same bucket holds the
# source archive it fetches. Pushing the images needs Artifact Registry Writer on the repository.
BUILD_BUCKET_ROLE = "roles/storage.admin"
REGISTRY_WRITER_ROLE = "roles/artifactregistry.writer"


def builder_account(settings: Settings, cloud: Cloud) -> str | None:
    """The e-mail of the account Cloud Build runs this project's builds as, or None when Cloud
    Build cannot say (then the build runs as before and a failure is explained afterwards).

    Since 2024, new projects build as the Compute Engine default service account
    (PROJECT_NUMBER-compute@developer.gserviceaccount.com), which in organizations that disable
    the automatic Editor grant to default accounts has no role at all: it could neither read the
    uploaded source, write the log to our logs bucket, nor push to the repository."""
    from google.api_core import exceptions

    name = f"projects/{settings.names.project}/locations/global/defaultServiceAccount"
    try:
        account = cloud.cloud_build().get_default_service_account(name=name, retry=cloud.retry)
    except exceptions.GoogleAPICallError:
        return None
    # "projects/{project}/serviceAccounts/{email}"; empty when builds have no default account.
    email = account.service_account_email.rsplit("/", 1)[-1]
    return email or None


@dataclass
class BuilderAccess:
    """The account builds run as, and whether this tool's bindings for it are in place."""

    email: str | None = None
    granted: bool = False  # both bindings are in the policies (applied or not yet)
    results: list[Result] = field(default_factory=list)


def grant_builder_access(settings: Settings, cloud: Cloud, bucket: str) -> BuilderAccess:
    """Let the build's account read and write the build bucket and push to our repository
    (bindings on those two resources only; nothing project-wide). Idempotent: an existing
    binding is read, not written again.

    The repository binding is made first: the push comes at the end of the build, and by the
    time CreateBuild accepts the source (which proves the later bucket binding applies, see
    submit_and_follow) the earlier one has had at least as long to propagate."""
    from orpheus_deploy.resources.base import reconcile
    from orpheus_deploy.resources.iam import BucketIamBinding, GrpcIamBinding

    email = builder_account(settings, cloud)
    if email is None:
        return BuilderAccess()
    member = f"serviceAccount:{email}"
    n = settings.names
    bindings = [
        GrpcIamBinding(settings, lambda c: c.artifact_registry(), n.repo_path,
                       REGISTRY_WRITER_ROLE, member, label=f"repository/{n.repo}"),
        BucketIamBinding(settings, BUILD_BUCKET_ROLE, member, bucket=bucket),
    ]
    access = BuilderAccess(email, granted=True)
    for binding in bindings:
        try:
            access.results.append(reconcile(binding, cloud))
        except CloudError as err:
            # Without the right to change these policies the build may still work (the legacy
            # Cloud Build account has project-wide roles); if it does not, its failure says so.
            if err.kind != "permission":
                raise
            access.granted = False
    return access


def upload_context(cloud: Cloud, bucket: str, context: BuildContext) -> str:
    """Upload once per content hash (the object name), so a resumed build re-uses it."""
    from orpheus_deploy.gcp import translated

    name = f"source/{context.sha256}.tar.gz"
    with translated(f"upload the build context to gs://{bucket}", cloud.settings.project):
        blob = cloud.storage().bucket(bucket).blob(name)
        if not blob.exists():
            blob.upload_from_string(context.data, content_type="application/gzip",
                                    retry=cloud.policy.storage_retry())
    return name


_TERMINAL = ("SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED")


def _source_not_readable_yet(exc: Exception) -> bool:
    """CreateBuild refused the source or logs bucket because the build's account cannot use
    it (yet): nothing was created, so submitting again is safe."""
    from google.api_core import exceptions

    text = str(getattr(exc, "message", "") or exc)
    return isinstance(exc, exceptions.InvalidArgument) and (
        ("could not resolve source" in text and ("403" in text or "storage.objects.get" in text))
        or ("invalid bucket" in text and "does not have access" in text))


def _outcome_unknown(exc: Exception) -> bool:
    """The request may have reached Cloud Build and started a build before the answer was
    lost (a dropped connection, a timeout, a server error)."""
    from google.api_core import exceptions

    return isinstance(exc, (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded,
                            exceptions.InternalServerError, exceptions.BadGateway,
                            exceptions.GatewayTimeout, exceptions.RetryError))


def create_build(settings: Settings, cloud: Cloud, request: Any,
                 builder: BuilderAccess | None = None,
                 report: Callable[[str], None] | None = None) -> str:
    """Start the build once; return its id.

    CreateBuild is not idempotent (each call that reaches Cloud Build starts a paid build), so
    it is never retried blindly. Two cases are safe and handled: a refusal because the build's
    account cannot read the source yet (its binding, made seconds ago, is still propagating;
    nothing was created) is submitted again while the binding applies; an answer that never
    came is looked up by the submission's unique tag instead of submitted twice."""
    from orpheus_deploy.gcp import map_error
    from orpheus_deploy.gcp.propagation import until_applied

    client = cloud.cloud_build()
    project = settings.names.project
    tag = next(t for t in request.tags if t.startswith("orpheus-submit-"))

    def submit() -> Any:
        return client.create_build(project_id=project, build=request, retry=None)

    who = builder.email if builder is not None and builder.email else "Cloud Build's account"
    try:
        if builder is not None and builder.granted:
            operation = until_applied(
                submit, waiting=_source_not_readable_yet, policy=cloud.policy, report=report,
                what=f"{BUILD_BUCKET_ROLE} on gs://{request.source.storage_source.bucket} for "
                     f"{who}")
        else:
            operation = submit()
        return str(operation.metadata.build.id)
    except Exception as exc:
        if not _outcome_unknown(exc):
            raise map_error(exc, "submit the Cloud Build", project) from exc
        found = _build_by_tag(cloud, project, tag)
        if found is None:
            raise CloudError(
                "Cloud Build did not answer whether it started the build, and no build tagged "
                f"{tag} exists", "re-run `orpheus build`; no second build was started",
                EXIT_FAILURE, kind="unavailable") from exc
        return found


def _build_by_tag(cloud: Cloud, project: str, tag: str) -> str | None:
    from orpheus_deploy.gcp import translated

    with translated("look for the submitted Cloud Build", project):
        builds = cloud.cloud_build().list_builds(project_id=project, filter=f'tags="{tag}"',
                                                 retry=cloud.retry)
        for build in builds:
            return str(build.id)
    return None


def submit_and_follow(settings: Settings, cloud: Cloud, request: Any,
                      on_log: Callable[[str], None], builder: BuilderAccess | None = None
                      ) -> Any:
    """Create the build, then poll it while streaming new log lines; raise on failure."""
    from orpheus_deploy.gcp import translated

    client = cloud.cloud_build()
    project = settings.names.project
    build_id = create_build(settings, cloud, request, builder, report=on_log)
    log = _LogFollower(cloud, request.logs_bucket, build_id)
    delays = cloud.policy.poll_delays()
    started = time.monotonic()
    while True:
        with translated(f"read Cloud Build {build_id}", project):
            build = client.get_build(project_id=project, id=build_id, retry=cloud.retry)
        for line in log.new_lines():
            on_log(line)
        status = build.status.name
        if status in _TERMINAL:
            break
        if time.monotonic() - started > cloud.policy.operation_timeout_s * 4:
            raise CloudError(f"Cloud Build {build_id} is still running after "
                             f"{time.monotonic() - started:.0f}s",
                             f"follow it at {build.log_url}; then re-run `orpheus build`")
        time.sleep(next(delays))
    for line in log.new_lines(final=True):
        on_log(line)
    if status != "SUCCESS":
        raise build_failure(build, log.lines)
    return build


class _LogFollower:
    """Reads ``log-<id>.txt`` from the logs bucket from where it left off."""

    def __init__(self, cloud: Cloud, logs_bucket: str, build_id: str):
        bucket, _, prefix = logs_bucket.removeprefix("gs://").partition("/")
        self.cloud = cloud
        self.bucket = bucket
        self.object = f"{prefix.rstrip('/')}/log-{build_id}.txt".lstrip("/")
        self.offset = 0
        self.partial = ""
        self.lines: list[str] = []

    def new_lines(self, final: bool = False) -> list[str]:
        from google.api_core import exceptions

        try:
            blob = self.cloud.storage().bucket(self.bucket).blob(self.object)
            data = blob.download_as_bytes(start=self.offset) if self.offset else \
                blob.download_as_bytes()
        except exceptions.NotFound:
            return []
        except exceptions.RequestRangeNotSatisfiable:
            data = b""
        except exceptions.GoogleAPICallError:
            return []  # the log is a convenience; never fail the build on it
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        parts = text.split("\n")
        self.partial = "" if final else parts.pop()
        out = [p for p in parts if p or not final]
        if final and self.partial:
            out.append(self.partial)
        self.lines.extend(out)
        return out


def failing_step(build: Any) -> tuple[int, str] | None:
    for i, step in enumerate(build.steps):
        if step.status.name in ("FAILURE", "TIMEOUT", "INTERNAL_ERROR"):
            return i, step.id or step.name
    return None


def step_log_tail(lines: list[str], index: int, n: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``n`` lines that Cloud Build prefixed with ``Step #<index>``."""
    picked = []
    for line in lines:
        match = _STEP_LINE.match(line)
        if match and int(match.group(1)) == index:
            picked.append(match.group(3))
    return picked[-n:]


class BuildFailed(CloudError):
    """A build that ran and failed; ``log_tail`` holds the failing step's last lines."""

    def __init__(self, message: str, hint: str, log_tail: list[str], build_id: str):
        super().__init__(message, hint, EXIT_FAILURE, kind="build_failed")
        self.log_tail = log_tail
        self.build_id = build_id


def build_failure(build: Any, lines: list[str]) -> BuildFailed:
    step = failing_step(build)
    detail = " ".join((build.status_detail or build.failure_info.detail or "").split())
    where = f" at step {step[1]!r}" if step else ""
    tail = step_log_tail(lines, step[0]) if step else lines[-LOG_TAIL_LINES:]
    return BuildFailed(
        f"Cloud Build {build.id} {build.status.name.lower()}{where}"
        + (f": {detail}" if detail else ""),
        f"fix the error shown above, then re-run `orpheus build`; full log: {build.log_url}"
        if build.log_url else "fix the error shown above, then re-run `orpheus build`",
        tail, build.id)


def digests_of(settings: Settings, build: Any) -> dict[str, str]:
    """Match results.images to our two images by repository path (tags may differ)."""
    wanted = {kind: settings.names.image(kind).rsplit(":", 1)[0]
              for kind in ("backend", "frontend")}
    found: dict[str, str] = {}
    for image in build.results.images:
        repo = image.name.rsplit(":", 1)[0] if "@" not in image.name else \
            image.name.split("@", 1)[0]
        for kind, path in wanted.items():
            if repo == path and image.digest:
                found[kind] = image.digest
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise CloudError(f"Cloud Build {build.id} succeeded but reported no digest for "
                         f"{', '.join(missing)}",
                         "check that cloudbuild.yaml lists both images under `images:`")
    return found


# -- local Docker ------------------------------------------------------------------------------
def run_local_build(settings: Settings, cloud: Cloud, root: Path | None = None,
                    on_log: Callable[[str], None] | None = None) -> BuildOutcome:
    """`orpheus build --local`: docker buildx on this machine, pushed to Artifact Registry."""
    import json
    import subprocess
    import tempfile

    from orpheus_deploy.state import load_state, save_state

    docker = shutil.which("docker")
    if docker is None:
        raise InputError("`--local` needs Docker with buildx, and no `docker` is on PATH",
                         "install Docker, or drop --local to build on Cloud Build")
    root = root or project_root()
    context = pack(root)
    digests: dict[str, str] = {}
    for kind in ("backend", "frontend"):
        tag = settings.names.image(kind)
        with tempfile.TemporaryDirectory() as tmp:
            meta = Path(tmp) / "meta.json"
            cmd = [docker, "buildx", "build", "--platform", "linux/amd64",
                   f"--file=runtime/{kind}/Dockerfile", f"--tag={tag}", "--push",
                   f"--metadata-file={meta}", "."]
            proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            tail: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                tail = [*tail[-LOG_TAIL_LINES + 1:], line.rstrip("\n")]
                if on_log:
                    on_log(line.rstrip("\n"))
            if proc.wait() != 0:
                raise BuildFailed(
                    f"docker buildx build of the {kind} image failed", "fix the error above; "
                    f"to push, Docker must be logged in to {settings.names.registry_host}",
                    tail, "local")
            digests[kind] = json.loads(meta.read_text())["containerimage.digest"]
    state = load_state(cloud, settings)
    save_state(cloud, settings, dataclasses.replace(
        state, backend_image_digest=digests["backend"], frontend_image_digest=digests["frontend"],
        extra={**state.extra, CONTEXT_KEY: context.sha256}))
    return BuildOutcome(skipped=False, build_id="local", digests=digests,
                        context_sha256=context.sha256, files=len(context.files))


def report(outcome: BuildOutcome, settings: Settings) -> PhaseReport:
    rep = PhaseReport("build")
    for kind in ("backend", "frontend"):
        ref = image_ref(settings, kind, outcome.digests.get(kind))
        rep.results.append(Result(f"image/{settings.name}-{kind}",
                                  UNCHANGED if outcome.skipped else CREATE,
                                  detail=ref or ""))
    if outcome.skipped:
        rep.messages.append("Build context unchanged since the last build "
                            f"({outcome.context_sha256[:12]}): skipped (use --force to rebuild).")
    return rep

