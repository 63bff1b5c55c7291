"""Fake Cloud Build v1: CreateBuild (long-running), GetBuild that advances the build one step per
poll, logs written to the logs bucket in the storage emulator as Cloud Build does, and
``results.images`` with digests.

The source archive is fetched from the storage emulator like Cloud Build's FETCHSOURCE step, so a
missing object fails the build, and the archive's file list is kept (``builds[id].source_files``)
for tests to assert what was uploaded.

Per-test outcomes: ``fail_steps[step_id] = ["log line", ...]`` makes that step fail after
printing those lines; ``step_logs[step_id]`` adds lines to a successful step.

Builds run as ``default_service_account`` (GetDefaultServiceAccount answers with it: the Compute
Engine default account, as on projects created since 2024). With ``builder_needs_grants`` set, that
account has no project-wide role (an organization that disables the automatic Editor grant to
default accounts), so, as on Cloud Build, a logs bucket it cannot write and a source it cannot
read are refused at CreateBuild (INVALID_ARGUMENT "could not resolve source ... Error 403"), and
the push fails without write access to the repository. Those grants are checked as enforced,
i.e. only once older than the IAM propagation delay (core.IamPolicies).

CreateBuild is not idempotent, as on Cloud Build: every call that reaches the server starts a
build, so a client that retries a create whose answer was lost (``cloud.fail_next("CreateBuild",
UNAVAILABLE, lose_response=True)``) pays for two. ListBuilds answers ``tags="T"`` filters, which
is how a client finds the build its lost answer started.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from google.cloud.devtools import cloudbuild_v1
from google.protobuf import timestamp_pb2

from tests.fakecloud.core import FakeService, invalid, not_found, rpc

Status = cloudbuild_v1.Build.Status
# Roles that let the build's account read the source bucket / push to a repository.
_BUCKET_READ = frozenset({"roles/storage.admin", "roles/storage.objectAdmin",
                          "roles/storage.objectViewer"})
_REPO_WRITE = frozenset({"roles/artifactregistry.writer", "roles/artifactregistry.repoAdmin",
                         "roles/artifactregistry.admin"})
# Build tags (annotations, not docker tags), as Cloud Build validates them.
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_TAG_FILTER_RE = re.compile(r'^tags\s*=\s*"?([\w.-]+)"?$')


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


@dataclass
class FakeBuild:
    build: cloudbuild_v1.Build
    pending: list[int]  # indexes of steps not run yet, in execution order
    log: list[str] = field(default_factory=list)
    source_files: list[str] = field(default_factory=list)
    queued_left: int = 1  # GetBuild answers that still say QUEUED


class CloudBuildFake(FakeService):
    client = ("google.cloud.devtools.cloudbuild_v1", "CloudBuildClient")
    key = "cloudbuild"
    api = "cloudbuild.googleapis.com"

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.builds: dict[str, FakeBuild] = {}
        self.fail_steps: dict[str, list[str]] = {}
        self.step_logs: dict[str, list[str]] = {}
        self.queued_polls = 1  # GetBuild calls that still answer QUEUED
        self.default_service_account = (
            f"{cloud.project_number}-compute@developer.gserviceaccount.com")
        self.builder_needs_grants = False
        self.image_bytes = 3 * 2**30  # what each pushed image adds to its repository's size

    # -- the build's service account and what it may touch --------------------------------------
    def _builder_has(self, bucket: str, roles: frozenset[str]) -> bool:
        if not self.builder_needs_grants:
            return True
        member = f"serviceAccount:{self.default_service_account}"
        emulator = getattr(self.cloud, "storage", None)
        if emulator is None:
            return True
        try:  # as enforced: a binding younger than the IAM propagation delay does not count
            return member in emulator.effective_bucket_members(bucket, roles)
        except Exception:
            return False

    def _builder_can_push(self, image: str) -> bool:
        if not self.builder_needs_grants:
            return True
        # REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG
        host, project, repo = image.split("/")[:3]
        region = host.removesuffix("-docker.pkg.dev")
        resource = f"projects/{project}/locations/{region}/repositories/{repo}"
        member = f"serviceAccount:{self.default_service_account}"
        return any(member in self.cloud.iam.effective_members(resource, role)
                   for role in _REPO_WRITE)

    # -- storage (the emulator) --------------------------------------------------------------
    def _bucket(self, name: str) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        emulator = getattr(self.cloud, "storage", None)
        if emulator is None:
            return None
        import os

        os.environ.setdefault("STORAGE_EMULATOR_HOST", emulator.url)
        client = storage.Client(project=self.cloud.project, credentials=AnonymousCredentials())
        return client.bucket(name)

    def _fetch_source(self, fb: FakeBuild) -> str | None:
        src = fb.build.source.storage_source
        bucket = self._bucket(src.bucket)
        if bucket is None:
            return "no storage emulator attached to the fake cloud"
        from google.api_core import exceptions

        if not self._builder_has(src.bucket, _BUCKET_READ):
            return (f"{self.default_service_account} does not have storage.objects.get access to "
                    f"the Google Cloud Storage object. Permission 'storage.objects.get' denied on "
                    f"resource (or it may not exist).")
        try:
            data = bucket.blob(src.object_).download_as_bytes()
        except exceptions.NotFound:
            return f"storage object gs://{src.bucket}/{src.object_} not found"
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                fb.source_files = sorted(m.name for m in tar.getmembers() if not m.isdir())
        except tarfile.TarError as exc:
            return f"source is not a .tar.gz: {exc}"
        return None

    def _write_log(self, fb: FakeBuild) -> None:
        logs = fb.build.logs_bucket
        if not logs:
            return
        bucket_name, _, prefix = logs.removeprefix("gs://").partition("/")
        bucket = self._bucket(bucket_name)
        if bucket is None:
            return
        name = f"{prefix.rstrip('/')}/log-{fb.build.id}.txt".lstrip("/")
        bucket.blob(name).upload_from_string("".join(line + "\n" for line in fb.log))

    # -- build execution -----------------------------------------------------------------------
    @staticmethod
    def _order(build: cloudbuild_v1.Build) -> list[int]:
        """Steps in an order that respects waitFor (parallel steps: listed order)."""
        ids = {s.id: i for i, s in enumerate(build.steps) if s.id}
        done: list[int] = []
        remaining = list(range(len(build.steps)))
        while remaining:
            for i in remaining:
                waits = [w for w in build.steps[i].wait_for if w != "-"]
                implicit = [] if build.steps[i].wait_for else list(range(i))
                deps = [ids[w] for w in waits if w in ids] + implicit
                if all(d in done for d in deps):
                    done.append(i)
                    remaining.remove(i)
                    break
            else:
                raise invalid("build steps have a waitFor cycle")
        return done

    def _substitute(self, build: cloudbuild_v1.Build, text: str) -> str:
        values = {"PROJECT_ID": self.cloud.project, "BUILD_ID": build.id,
                  **dict(build.substitutions)}
        for key in sorted(values, key=len, reverse=True):
            text = text.replace("${" + key + "}", values[key]).replace("$" + key, values[key])
        return text

    def _advance(self, fb: FakeBuild) -> None:
        b = fb.build
        if b.status == Status.QUEUED:
            if not fb.log:
                fb.log.append(f'starting build "{b.id}"')
            if fb.queued_left > 0:
                fb.queued_left -= 1
                return
            b.status = Status.WORKING
            b.start_time = _now()
            fb.log += ["", "FETCHSOURCE"]
            problem = self._fetch_source(fb)
            if problem:
                fb.log.append(f"ERROR: {problem}")
                b.status = Status.FAILURE
                b.status_detail = problem
                b.failure_info = cloudbuild_v1.Build.FailureInfo(
                    type_=cloudbuild_v1.Build.FailureInfo.FailureType.FETCH_SOURCE_FAILED,
                    detail=problem)
                return
            fb.log.append(f"Fetched {len(fb.source_files)} files from "
                          f"gs://{b.source.storage_source.bucket}/"
                          f"{b.source.storage_source.object_}")
            fb.log.append("BUILD")
            return
        if b.status != Status.WORKING:
            return
        if fb.pending:
            i = fb.pending.pop(0)
            step = b.steps[i]
            label = f'Step #{i} - "{step.id}"' if step.id else f"Step #{i}"
            fb.log.append(f"Starting {label}")
            args = [self._substitute(b, a) for a in step.args]
            fb.log.append(f"{label}: running {step.name} {' '.join(args)}")
            if step.id in self.fail_steps:
                fb.log += [f"{label}: {line}" for line in self.fail_steps[step.id]]
                fb.log.append(f"Finished {label}")
                fb.log.append(f'ERROR: build step {i} "{step.name}" failed: step exited with '
                              "non-zero status: 1")
                step.status = Status.FAILURE
                b.status = Status.FAILURE
                b.status_detail = (f'Build step failure: build step {i} "{step.name}" failed: '
                                   "step exited with non-zero status: 1")
                b.failure_info = cloudbuild_v1.Build.FailureInfo(
                    type_=cloudbuild_v1.Build.FailureInfo.FailureType.USER_BUILD_STEP,
                    detail=b.status_detail)
                b.finish_time = _now()
                return
            fb.log += [f"{label}: {line}" for line in self.step_logs.get(step.id, [])]
            fb.log.append(f"{label}: done")
            fb.log.append(f"Finished {label}")
            step.status = Status.SUCCESS
            return
        fb.log.append("PUSH")
        images = []
        for image in b.images:
            if not self._builder_can_push(image):
                fb.log.append(f"Pushing {image}")
                fb.log.append('denied: Permission "artifactregistry.repositories.'
                              'uploadArtifacts" denied on resource (or it may not exist).')
                b.status = Status.FAILURE
                b.status_detail = f"failed to push {image}: denied"
                b.finish_time = _now()
                return
            digest = "sha256:" + hashlib.sha256(
                f"{image}|{b.source.storage_source.object_}".encode()).hexdigest()
            images.append(cloudbuild_v1.BuiltImage(name=image, digest=digest))
            fb.log.append(f"Pushing {image}")
            fb.log.append(f"{image.rsplit(':', 1)[-1]}: digest: {digest} size: "
                          f"{self.image_bytes}")
            registry = self.cloud.services.get("artifactregistry")
            if registry is not None:
                registry.record_push(image, digest, self.image_bytes)
        b.results = cloudbuild_v1.Results(images=images)
        fb.log.append("DONE")
        b.status = Status.SUCCESS
        b.finish_time = _now()

    # -- RPCs ----------------------------------------------------------------------------------
    @rpc("cloudbuild.builds.create")
    def create_build(self, request: Any, context: Any) -> Any:
        self.check_project(f"projects/{request.project_id}")
        b = cloudbuild_v1.Build(request.build)
        if not b.steps:
            raise invalid("invalid build: no build steps")
        src = b.source.storage_source
        if not (src.bucket and src.object_):
            raise invalid("invalid build: source.storageSource bucket and object are required")
        if b.service_account and b.options.logging not in (
                cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY,
                cloudbuild_v1.BuildOptions.LoggingMode.NONE) and not b.logs_bucket:
            raise invalid("invalid argument: if 'build.service_account' is specified, the build "
                          "must either (a) specify 'build.logs_bucket', (b) use the "
                          "REGIONAL_USER_OWNED_BUCKET build.options.default_logs_bucket_behavior "
                          "option, or (c) use either CLOUD_LOGGING_ONLY / NONE logging options")
        for tag in b.tags:
            if not _TAG_RE.match(tag):
                raise invalid(f'invalid build tag "{tag}": must match format '
                              f'"{_TAG_RE.pattern}"')
        logs_bucket = b.logs_bucket.removeprefix("gs://").partition("/")[0]
        if logs_bucket and not self._builder_has(logs_bucket, frozenset({"roles/storage.admin"})):
            raise invalid(f'invalid bucket "{logs_bucket}"; service account '
                          f"{self.default_service_account} does not have access to the bucket")
        if not self._builder_has(src.bucket, _BUCKET_READ):
            # Cloud Build resolves the source before it queues the build; an account that cannot
            # read it yet (a grant younger than IAM propagation) is refused here, not in a step.
            raise invalid(
                f"could not resolve source: googleapi: Error 403: {self.default_service_account}"
                " does not have storage.objects.get access to the Google Cloud Storage object. "
                "Permission 'storage.objects.get' denied on resource (or it may not exist)., "
                "forbidden")
        b.id = str(uuid.uuid4())
        b.name = f"projects/{self.cloud.project_number}/locations/global/builds/{b.id}"
        b.project_id = request.project_id
        b.status = Status.QUEUED
        b.create_time = _now()
        b.log_url = (f"https://console.cloud.google.com/cloud-build/builds/{b.id}"
                     f"?project={self.cloud.project_number}")
        b.images = [self._substitute(b, i) for i in b.images]
        fb = FakeBuild(b, self._order(b), queued_left=self.queued_polls)
        with self.lock:
            self.builds[b.id] = fb
            self._write_log(fb)
        meta = cloudbuild_v1.BuildOperationMetadata(build=b)
        return self.cloud.operations.start(
            result=None, polls=len(b.steps) + 4, metadata=meta,
            on_done=lambda: cloudbuild_v1.Build(self.builds[b.id].build))

    @rpc("cloudbuild.builds.list")
    def list_builds(self, request: Any, context: Any) -> Any:
        self.check_project(f"projects/{request.project_id}")
        tag = None
        if request.filter:
            match = _TAG_FILTER_RE.match(request.filter.strip())
            if not match:
                raise invalid(f"the fake supports only tags=\"T\" filters, not {request.filter!r}")
            tag = match.group(1)
        with self.lock:
            found = [cloudbuild_v1.Build(fb.build) for fb in reversed(list(self.builds.values()))
                     if tag is None or tag in fb.build.tags]
        return cloudbuild_v1.ListBuildsResponse(builds=found)

    @rpc("cloudbuild.builds.get")
    def get_default_service_account(self, request: Any, context: Any) -> Any:
        project = self.check_project(request.name)
        return cloudbuild_v1.DefaultServiceAccount(
            name=request.name,
            service_account_email=f"projects/{project}/serviceAccounts/"
                                  f"{self.default_service_account}")

    @rpc("cloudbuild.builds.get")
    def get_build(self, request: Any, context: Any) -> Any:
        self.check_project(f"projects/{request.project_id}")
        with self.lock:
            fb = self.builds.get(request.id)
            if fb is None:
                raise not_found(f"build {request.id}")
            self._advance(fb)
            self._write_log(fb)
            return cloudbuild_v1.Build(fb.build)


SERVICES = [CloudBuildFake]
