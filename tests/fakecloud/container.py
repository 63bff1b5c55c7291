"""What Cloud Run does to start a revision's container, done natively on 127.0.0.1.

From a ``run_v2.Service`` to a running process:

- the image: its digest is looked up in the fake Cloud Build's results; the build step that
  tagged it names the Dockerfile (``--file=``); the build's source archive (the one ``orpheus
  build`` uploaded to the storage emulator) is unpacked and the Dockerfile's final stage is read
  from it (tests/fixtures/dockerfile.py): WORKDIR, ENV, CMD, and COPY lines, which lay out the
  image's files from the archive. So a file the archive lacks or the image forgets is missing
  here too. Files that earlier build stages produce (the CUDA ``llama-server``, the exported SNAC
  decoder) cannot be built without Docker: ``artifacts`` maps their image paths to local builds
  of the same thing, and an environment value naming one is rewritten.
- the environment: image ENV, then the service's env (secret references resolved from the fake
  Secret Manager, which the revision's service account must be allowed to access, as Cloud Run
  checks), then what Cloud Run adds (PORT, K_SERVICE, K_REVISION). PORT is a free local port
  instead of the container port: that is the port mapping.
- volumes: a Cloud Storage volume is a local directory holding a copy of the bucket's objects
  from the emulator (read-only files; the revision's account needs read access to the bucket);
  a secret volume is a directory whose files follow their secret versions as Secret Manager
  changes (the account needs secret access); environment values under the mount path are
  rewritten to that directory.
- identity: the metadata server's job (tokens for the revision's service account) is done by a
  key file from the ID-token issuer (``GOOGLE_APPLICATION_CREDENTIALS``).
- ``ORPHEUS_BACKEND_HOST``/``ORPHEUS_HOST`` = 127.0.0.1: the apps' own settings for the listen
  address, so that nothing listens beyond loopback.

- logs: stdout and stderr go through the logging agent (``logagent.py``) to the fake Cloud
  Logging, one entry per line, and to the instance's log file.

An ``Instance`` is one such process (its own process group, dies with the test process), ready
when the spec's startup probe answers 200.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.fakecloud.idtokens import IdTokenIssuer
from tests.fakecloud.logagent import Revision, start_process
from tests.fakecloud.run import RevisionFailed
from tests.fixtures.dockerfile import FinalStage, final_stage, lay_out
from tests.fixtures.plugin_llama import free_port, http_status

# Roles that let an account read a bucket's objects / a secret's payload (predefined roles only).
BUCKET_READERS = {"roles/storage.objectViewer", "roles/storage.objectAdmin", "roles/storage.admin",
                  "roles/storage.legacyBucketReader"}
SECRET_READERS = {"roles/secretmanager.secretAccessor", "roles/secretmanager.admin"}


@dataclass
class Container:
    """A revision's container, resolved: everything needed to start instances of it."""

    service: str  # full service name
    revision: str  # short revision id
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    probe_path: str | None  # HTTP startup probe path; None: TCP probe on the port
    log_dir: Path
    starts: int = 0
    vpc_egress: bool = False  # all traffic leaves through Direct VPC egress
    on_start: Any = None  # called with each new Instance (the runner tracks VPC instances)
    # Where the logging agent sends each line the instance writes (the fake Cloud Logging).
    log_sink: Callable[[Any], None] | None = None

    def start(self) -> Instance:
        self.starts += 1
        port = free_port()
        env = {**self.env, "PORT": str(port)}
        log = self.log_dir / f"{self.revision}-{self.starts}.log"
        process = start_process(self.argv, log, Revision.of(self.service, self.revision),
                                self.log_sink, env=env, cwd=self.cwd)
        instance = Instance(self, process, port, log)
        if self.on_start is not None:
            self.on_start(instance)
        return instance


@dataclass
class Instance:
    container: Container
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    pids: set[int] = field(default_factory=set)  # every process seen in its group
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def age_s(self) -> float:
        return time.monotonic() - self.started_at

    def owns_connection_from(self, port: int) -> bool:
        """Whether one of the instance's processes holds the local end ``127.0.0.1:port`` of
        a TCP connection (how a router tells which instance is calling it)."""
        pids = {self.process.pid}
        with contextlib.suppress(psutil.Error):
            pids |= {c.pid for c in psutil.Process(self.process.pid).children(recursive=True)}
        for pid in pids:
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.laddr and c.laddr.port == port for c in connections):
                return True
        return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _remember_children(self) -> None:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.pids.update(c.pid for c in children)

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the startup probe as Cloud Run does; RevisionFailed if the container exits or
        never passes (with the container's last log lines, as the console shows them)."""
        self.pids.add(self.process.pid)
        deadline = time.monotonic() + timeout_s
        path = self.container.probe_path
        while time.monotonic() < deadline:
            if not self.alive():
                self.stop()
                raise RevisionFailed(
                    "The user-provided container failed to start and listen on the port defined "
                    f"provided by the PORT={self.port} environment variable (exit code "
                    f"{self.process.returncode}). Logs:\n{self.log_tail()}")
            if path is None:
                if _tcp_open(self.port):
                    break
            elif http_status(f"{self.url}{path}", timeout=2) == 200:
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RevisionFailed(f"The user-provided container did not pass its startup probe "
                                 f"within {timeout_s:.0f} s. Logs:\n{self.log_tail()}")
        self._remember_children()

    def signal_group(self, sig: int) -> None:
        """Signal every process of the instance: its group, and each descendant seen (a server
        child may have a group of its own)."""
        self._remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        for pid in self.running_pids() - {self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM, as Cloud Run does when it retires an instance; SIGKILL after ``timeout_s``."""
        self._remember_children()
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait()
        # The group's other members (a server child) may outlive the leader by a moment.
        deadline = time.monotonic() + timeout_s
        while self.running_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.running_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def running_pids(self) -> set[int]:
        alive = set()
        for pid in self.pids | {self.process.pid}:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                continue
        return alive


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ContainerFactory:
    """Resolves a service spec into a ``Container`` (image, env, volumes, identity)."""

    def __init__(self, cloud: Any, storage: Any, work_dir: Path, issuer: IdTokenIssuer,
                 artifacts: dict[str, Path]) -> None:
        self.cloud = cloud
        self.storage = storage  # tests.fakecloud.storage.StorageEmulator
        self.work_dir = work_dir
        self.issuer = issuer
        self.artifacts = {k: str(v) for k, v in artifacts.items()}
        self._images: dict[str, tuple[FinalStage, Path]] = {}
        self._lock = threading.Lock()

    # -- image ---------------------------------------------------------------------------------
    def _build_of(self, image: str) -> tuple[Any, str]:
        """The fake Cloud Build build that pushed ``image`` (by digest) and its Dockerfile."""
        name, _, digest = image.partition("@")
        builds = self.cloud.services["cloudbuild"].builds
        for fb in list(builds.values()):
            for built in fb.build.results.images:
                if built.digest != digest or built.name.rsplit(":", 1)[0] != name:
                    continue
                for step in fb.build.steps:
                    args = [self.cloud.services["cloudbuild"]._substitute(fb.build, a)
                            for a in step.args]
                    if not any(a in (f"--tag={built.name}", built.name) for a in args):
                        continue
                    dockerfile = _flag(args, "--file", "-f") or "Dockerfile"
                    return fb.build, dockerfile
        raise RevisionFailed(f"Image '{image}' not found.")

    def _image(self, image: str) -> tuple[FinalStage, Path]:
        """The image's final stage and its root file system (made once per digest)."""
        with self._lock:
            if image in self._images:
                return self._images[image]
            build, dockerfile = self._build_of(image)
            src = build.source.storage_source
            archive = self.storage.storage.get_file(src.bucket, src.object_)
            root = self.work_dir / "images" / image.rsplit(":", 1)[-1][:16]
            context = root / "context"
            shutil.rmtree(root, ignore_errors=True)
            context.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                tar.extractall(context, filter="data")
            stage = final_stage(context / dockerfile)
            try:
                workdir = lay_out(stage, context, root / "rootfs")
            except FileNotFoundError as exc:
                raise RevisionFailed(f"Image '{image}': {exc}") from exc
            self._images[image] = (stage, workdir)
            return stage, workdir

    # -- the revision --------------------------------------------------------------------------
    def container(self, service: Any) -> Container:
        template = service.template
        [spec] = template.containers  # our services have one container each
        stage, workdir = self._image(spec.image)
        account = template.service_account
        mounts = self._volumes(template, spec, account)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work_dir / "home"),
            "LANG": "C.UTF-8",
            **stage.env,
        }
        for i, var in enumerate(spec.env):
            if var.value_source.secret_key_ref.secret:
                env[var.name] = self._secret(var.value_source.secret_key_ref, account, i)
            else:
                env[var.name] = var.value
        for name, value in list(env.items()):
            env[name] = self._local_path(value, mounts)
        service_id = service.name.rsplit("/", 1)[-1]
        revision = service.latest_created_revision.rsplit("/", 1)[-1]
        env.update({
            "K_SERVICE": service_id, "K_REVISION": revision, "K_CONFIGURATION": service_id,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.issuer.key_file(account,
                                                                       self.cloud.project)),
            "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            "ORPHEUS_BACKEND_HOST": "127.0.0.1", "ORPHEUS_HOST": "127.0.0.1",
        })
        argv = list(stage.cmd)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the image's interpreter = this one, with its packages
        probe = spec.startup_probe.http_get.path or None
        port = spec.ports[0].container_port if spec.ports else 8080
        probe_port = spec.startup_probe.http_get.port or port
        if probe_port != port:
            # Cloud Run probes the container, which listens on $PORT = the container port.
            raise RevisionFailed(f"spec.template.spec.containers[0].startupProbe: port "
                                 f"{probe_port} is not the container port {port}.")
        log_dir = self.work_dir / "logs" / service_id
        log_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "home").mkdir(exist_ok=True)
        (log_dir / f"{revision}.cmd").write_text(shlex.join(argv) + "\n")
        logging = self.cloud.services.get("logging")
        return Container(service.name, revision, argv, workdir, env, probe, log_dir,
                         log_sink=logging.ingest if logging is not None else None)

    def _local_path(self, value: str, mounts: dict[str, Path]) -> str:
        if value in self.artifacts:
            return self.artifacts[value]
        for mount, local in mounts.items():
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(local) + value[len(mount.rstrip("/")):]
        return value

    def _secret_name(self, secret: str) -> str:
        return f"projects/{self.cloud.project_number}/secrets/{secret.rsplit('/', 1)[-1]}"

    def _may_read(self, account: str, name: str) -> bool:
        # Effective members: a binding younger than the IAM propagation delay does not count.
        return any(f"serviceAccount:{account}" in self.cloud.iam.effective_members(name, role)
                   for role in SECRET_READERS)

    def _secret(self, ref: Any, account: str, index: int) -> str:
        secrets = self.cloud.services["secretmanager"]
        name = self._secret_name(ref.secret)
        allowed = self._may_read(account, name)
        where = f"spec.template.spec.containers[0].env[{index}].value_from.secret_key_ref.name"
        if not allowed:
            raise RevisionFailed(
                f"{where}: Permission denied on secret: {ref.secret}/versions/{ref.version} for "
                f"Revision service account {account}. The service account used must be granted "
                "the 'Secret Manager Secret Accessor' role (roles/secretmanager.secretAccessor) "
                "at the secret, project or higher level.")
        try:
            with secrets.lock:
                entry = secrets._version(f"{name}/versions/{ref.version or 'latest'}")
                secrets._check_enabled(entry)
        except Exception as exc:
            raise RevisionFailed(f"{where}: Secret {ref.secret}/versions/{ref.version} was not "
                                 f"found ({exc})") from exc
        return bytes(entry["data"]).decode()

    def _volumes(self, template: Any, spec: Any, account: str) -> dict[str, Path]:
        """Mount path -> local directory with the bucket's objects or the secret's files."""
        by_name = {v.name: v for v in template.volumes}
        mounts: dict[str, Path] = {}
        for mount in spec.volume_mounts:
            volume = by_name.get(mount.name)
            if volume is not None and volume.secret.secret:
                mounts[mount.mount_path] = self._secret_volume(volume, mount.mount_path, account)
                continue
            if volume is None or not volume.gcs.bucket:
                raise RevisionFailed(f"volume {mount.name!r} is mounted but not defined")
            bucket = volume.gcs.bucket
            readers = self.storage.effective_bucket_members(bucket, BUCKET_READERS)
            if f"serviceAccount:{account}" not in readers:
                raise RevisionFailed(f"Cloud Storage volume {mount.name!r}: the revision's "
                                     f"service account {account} cannot read gs://{bucket}.")
            mounts[mount.mount_path] = self._sync_bucket(bucket)
        return mounts

    def _secret_volume(self, volume: Any, mount_path: str, account: str) -> Path:
        """A secret volume as Google's "Configure secrets" page describes it
        (cloud.google.com/run/docs/configuring/services/secrets): files whose content is the
        referenced version, where "reading a volume always fetches the secret value from Secret
        Manager" (so a file that follows ``latest`` changes with each new version, and reading
        fails once the secret is inaccessible: the file disappears here). Access is checked when
        the revision deploys; a mount under /dev, /proc or /sys is refused."""
        source = volume.secret
        name = self._secret_name(source.secret)
        if mount_path.rstrip("/") in ("", "/dev", "/proc", "/sys") or mount_path.startswith(
                ("/dev/", "/proc/", "/sys/")):
            raise RevisionFailed(f"Secret volume {volume.name!r}: the mount path {mount_path} is "
                                 "not allowed (/dev, /proc and /sys are reserved).")
        if not source.items:
            raise RevisionFailed(f"Secret volume {volume.name!r}: the fake Cloud Run needs the "
                                 "items (path and version) to be listed.")
        if not self._may_read(account, name):
            raise RevisionFailed(
                f"spec.template.spec.volumes[{volume.name}].secret: Permission denied on secret: "
                f"{source.secret} for Revision service account {account}. The service account "
                "used must be granted the 'Secret Manager Secret Accessor' role "
                "(roles/secretmanager.secretAccessor) at the secret, project or higher level.")
        secrets = self.cloud.services["secretmanager"]
        local = self.work_dir / "secret-volumes" / uuid.uuid4().hex[:12]
        local.mkdir(parents=True)

        def sync(changed: str) -> None:
            if changed != name:
                return
            for item in source.items:
                target = local / item.path
                try:
                    if not self._may_read(account, name):
                        raise PermissionError(name)
                    data = secrets.payload(f"{name}/versions/{item.version or 'latest'}")
                except Exception:
                    target.unlink(missing_ok=True)
                    continue
                staged = target.with_name(f".{target.name}.new")
                staged.write_bytes(data)
                staged.chmod(0o444)  # Cloud Run's default mode for secret files
                os.replace(staged, target)  # a reader sees the old or the new value, whole

        sync(name)
        secrets.watch(sync)
        return local

    def _sync_bucket(self, bucket: str) -> Path:
        local = self.work_dir / "volumes" / urllib.parse.quote(bucket, safe="")
        local.mkdir(parents=True, exist_ok=True)
        objects, _ = self.storage.storage.get_file_list(bucket)
        for obj in objects:
            target = local / obj["name"]
            stamp = f"{obj.get('generation')}:{obj.get('size')}"
            marker = target.with_name(f".{target.name}.generation")
            if target.exists() and marker.exists() and marker.read_text() == stamp:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.chmod(0o600)
            target.write_bytes(self.storage.storage.get_file(bucket, obj["name"]))
            target.chmod(0o444)  # the volume is mounted read-only
            marker.write_text(stamp)
        return local


def _flag(args: list[str], long: str, short: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
        if arg in (long, short) and i + 1 < len(args):
            return args[i + 1]
    return None
