"""Settings: one immutable object from flags > ``ORPHEUS_*`` env > ``orpheus.toml`` > defaults.

Every Google Cloud resource name is derived in one place, :class:`Names` (``settings.names``),
from ``name``, ``project`` and ``region``, so that a different ``name`` gives a disjoint set of
resources. ``load_settings`` records where each value came from (``settings.sources``) for
``orpheus config``. The project falls back to the Application Default Credentials' project,
looked up lazily and only when no other source gives one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpheus_deploy.errors import ConfigError

CONFIG_FILE = "orpheus.toml"
ENV_PREFIX = "ORPHEUS_"
# ORPHEUS_* variables that are test seams or CLI plumbing, not settings.
_NON_SETTING_ENV = {"GRPC_ENDPOINT", "REST_ENDPOINT", "CONFIG", "STATE_DIR", "POLL_INITIAL_S",
                    "POLL_MAX_S", "RETRY_INITIAL_S", "RETRY_MAX_S", "RETRY_DEADLINE_S",
                    "OPERATION_TIMEOUT_S", "UPLOAD_CHUNK_MB", "API_KEY"}

BACKEND_PORT = 1234
FRONTEND_PORT = 5005
MODEL_MOUNT_PATH = "/models"
STATE_OBJECT = "_orpheus/state.json"


@dataclass(frozen=True)
class GlobalOptions:
    """The CLI's global options, stored in ``ctx.obj`` by the Typer callback."""

    project: str | None = None
    region: str | None = None
    config: Path | None = None
    yes: bool = False
    json: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class Names:
    """Every name the deployment uses, derived from ``name``, ``project`` and ``region``."""

    name: str
    project: str
    region: str
    image_tag: str

    @property
    def backend_service(self) -> str:
        return f"{self.name}-backend"

    @property
    def frontend_service(self) -> str:
        return f"{self.name}-frontend"

    @property
    def bucket(self) -> str:
        return f"{self.name}-models-{self.project}"

    @property
    def build_bucket(self) -> str:
        return f"{self.name}-build-{self.project}"

    @property
    def secret(self) -> str:
        return f"{self.name}-api-key"

    @property
    def repo(self) -> str:
        return f"{self.name}-repo"

    @property
    def backend_sa_id(self) -> str:
        return f"{self.name}-backend"

    @property
    def frontend_sa_id(self) -> str:
        return f"{self.name}-frontend"

    @property
    def backend_sa_email(self) -> str:
        return f"{self.backend_sa_id}@{self.project}.iam.gserviceaccount.com"

    @property
    def frontend_sa_email(self) -> str:
        return f"{self.frontend_sa_id}@{self.project}.iam.gserviceaccount.com"

    volume: str = "model-storage"
    mount_path: str = MODEL_MOUNT_PATH
    # The API-key secret, mounted into the frontend as a file that follows its latest version.
    key_volume: str = "api-keys"
    key_mount_path: str = "/secrets/orpheus"
    key_file: str = "api-keys.json"
    backend_port: int = BACKEND_PORT
    frontend_port: int = FRONTEND_PORT
    state_object: str = STATE_OBJECT

    # Fully qualified resource paths, as the APIs spell them.
    @property
    def project_path(self) -> str:
        return f"projects/{self.project}"

    @property
    def location_path(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def secret_path(self) -> str:
        return f"projects/{self.project}/secrets/{self.secret}"

    @property
    def repo_path(self) -> str:
        return f"{self.location_path}/repositories/{self.repo}"

    @property
    def backend_service_path(self) -> str:
        return f"{self.location_path}/services/{self.backend_service}"

    @property
    def frontend_service_path(self) -> str:
        return f"{self.location_path}/services/{self.frontend_service}"

    def service_account_path(self, email: str) -> str:
        return f"projects/{self.project}/serviceAccounts/{email}"

    @property
    def registry_host(self) -> str:
        return f"{self.region}-docker.pkg.dev"

    def image(self, kind: str, tag: str | None = None) -> str:
        """``{region}-docker.pkg.dev/{project}/{repo}/{name}-{kind}:{tag}`` (backend|frontend)."""
        if kind not in ("backend", "frontend"):
            raise ValueError(f"unknown image kind {kind!r}")
        return (f"{self.registry_host}/{self.project}/{self.repo}/{self.name}-{kind}:"
                f"{tag or self.image_tag}")


@dataclass(frozen=True)
class Settings:
    """Effective settings. Build with :func:`load_settings`; never mutate (use ``replace``)."""

    name: str = "orpheus"
    project: str | None = None
    region: str = "us-central1"
    model_object: str | None = None  # None until upload-model records one in the cloud state
    image_tag: str = "latest"
    # Backend (GPU) service.
    gpu_type: str = "nvidia-l4"
    gpu_count: int = 1
    gpu_zonal_redundancy: bool = False
    backend_cpu: str = "4"
    backend_memory: str = "16Gi"
    backend_min_instances: int = 0
    backend_max_instances: int = 1
    backend_concurrency: int = 4
    n_parallel: int = 4
    # Total context across the parallel slots: each slot needs room for an Orpheus prompt plus
    # max_tokens (2000), so 4 slots x 4096.
    n_ctx: int = 16384
    n_gpu_layers: int = 999
    backend_timeout_s: int = 600
    # Several models (languages, custom voices; orpheus_deploy/models.py): the most kept on the
    # GPU at once; another one is loaded on demand in place of the least recently used. Three
    # Q8_0 Orpheus 3B models with their KV caches fit an L4 (orpheus_deploy/gpu_memory.py).
    models_max: int = 3
    # GPU memory for the budget check, GiB; 0: known from gpu_type (nvidia-l4: 24).
    gpu_memory_gib: float = 0.0
    # Frontend (CPU) service.
    frontend_cpu: str = "1"
    frontend_memory: str = "1Gi"
    frontend_min_instances: int = 0
    frontend_max_instances: int = 10
    # Decoding costs ~0.3 s of CPU per second of audio (bench.frontend), so one vCPU holds about
    # three real-time streams; Cloud Run adds instances beyond that instead of slowing everyone.
    frontend_concurrency: int = 3
    # How stale the frontend's copy of the API keys may get: a key created or revoked with
    # `orpheus keys` is in force on every running instance within this many seconds.
    api_key_refresh_s: float = 30.0
    # Cloud Run's request timeout for the frontend: the longest a response, or a WebSocket
    # conversation, may last (Cloud Run allows up to 3600). At least api_timeout_s + 60.
    frontend_timeout_s: int = 360
    # Fair use, enforced by each frontend instance on its own (README "Limits"): per API key,
    # streams at once and requests per minute (0: no limit); and a queue in front of the
    # backend's N_PARALLEL x backend_max_instances slots (its length and longest wait).
    key_max_streams: int = 0
    key_requests_per_minute: int = 0
    queue_size: int = 16
    queue_timeout_s: int = 30
    # Network path from the frontend to the internal backend (Direct VPC egress).
    network: str = "default"
    subnet: str = "default"
    # Generation defaults passed to the frontend.
    temperature: float = 0.6
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    max_tokens: int = 2000
    # The frontend's deadline for the backend's first answer (ORPHEUS_API_TIMEOUT): the first
    # request after idle waits for a cold GPU instance. Budget (README, "First request after
    # idle"): instance with GPU driver ~5 s + image start ~60 s + model copied from Cloud Storage
    # ~35 s (3.5 GB at ~100 MB/s) + weights into GPU memory ~2 s (measured for 3.5 GB) + the
    # backend's 10 s probe period = ~112 s, so 120 s left no margin; 300 s is 2.7x the estimate.
    api_timeout_s: int = 300
    # Where each value came from: "default", "orpheus.toml", "env ORPHEUS_X", "flag", "adc".
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def names(self) -> Names:
        return Names(self.name, self.require_project(), self.region, self.image_tag)

    @property
    def api_key_secret_name(self) -> str:
        return f"{self.name}-api-key"

    def require_project(self) -> str:
        if not self.project:
            raise ConfigError(
                "No Google Cloud project is set",
                "pass --project, set ORPHEUS_PROJECT, add project = \"...\" to orpheus.toml, "
                "or run: gcloud config set project PROJECT",
            )
        return self.project

    def replace(self, **changes: Any) -> Settings:
        sources = dict(self.sources)
        sources.update({k: "override" for k in changes})
        return dataclasses.replace(self, sources=sources, **changes)

    def public_items(self) -> list[tuple[str, Any, str]]:
        """``(field, value, source)`` for every setting, in declaration order."""
        return [(f.name, getattr(self, f.name), self.sources.get(f.name, "default"))
                for f in dataclasses.fields(self) if f.name != "sources"]


SETTING_FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(Settings) if f.name != "sources"
}
_FIELD_TYPES = {
    "str": str, "str | None": str, "int": int, "float": float, "bool": bool,
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}[a-z0-9]$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _coerce(key: str, raw: Any, source: str) -> Any:
    """Convert a value from the environment or orpheus.toml to the field's type."""
    kind = _FIELD_TYPES[str(SETTING_FIELDS[key].type)]
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if isinstance(raw, (dict, list)):
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Invalid value {raw!r} for {key} (from {source})", f"expected {kind.__name__}"
        ) from None


# Cloud Run's longest request timeout (cloud.google.com/run/docs/configuring/request-timeout),
# and how much longer than a backend call the frontend's is (specs.frontend_timeout_s).
CLOUD_RUN_MAX_TIMEOUT_S = 3600
FRONTEND_TIMEOUT_MARGIN_S = 60


@dataclass(frozen=True)
class Bounds:
    """A range of accepted numbers: ``low`` (excluded when ``low_open``) up to ``high``."""

    low: float
    high: float | None = None
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


# The generation defaults the frontend refuses at start-up (the Field bounds of
# runtime/frontend/settings.py; tests/cli/test_config.py checks that both agree): refused here
# first, so that `plan` and `deploy` never roll out a frontend revision that cannot start.
FRONTEND_SAMPLING_BOUNDS = {
    "temperature": Bounds(0.0, 2.0),
    "top_p": Bounds(0.0, 1.0, low_open=True),
    "repetition_penalty": Bounds(0.0, 3.0, low_open=True),
    "max_tokens": Bounds(7),  # one audio frame is 7 tokens
}


def _validate(values: dict[str, Any], sources: dict[str, str]) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"Invalid {key} {values[key]!r} (from {sources.get(key, 'default')})",
                           why)

    if not _NAME_RE.match(values["name"]):
        raise bad("name", "use 2-21 lowercase letters, digits or hyphens, starting with a letter")
    if values.get("project") and not _PROJECT_RE.match(values["project"]):
        raise bad("project", "a project ID is 6-30 lowercase letters, digits or hyphens")
    if not _REGION_RE.match(values["region"]):
        raise bad("region", "a Cloud Run region looks like us-central1")
    if not _TAG_RE.match(values["image_tag"]):
        raise bad("image_tag", "a docker tag is letters, digits, '_', '.', '-'")
    for key in ("gpu_count", "backend_max_instances", "backend_concurrency", "n_parallel",
                "n_ctx", "backend_timeout_s", "frontend_max_instances", "frontend_concurrency",
                "api_timeout_s", "models_max"):
        if values[key] < 1:
            raise bad(key, "must be at least 1")
    for key in ("backend_min_instances", "frontend_min_instances", "n_gpu_layers",
                "gpu_memory_gib", "key_max_streams", "key_requests_per_minute",
                "queue_size"):
        if values[key] < 0:
            raise bad(key, "must not be negative")
    if values["queue_timeout_s"] < 1:
        raise bad("queue_timeout_s", "must be at least 1")
    if not 1 <= values["frontend_timeout_s"] <= CLOUD_RUN_MAX_TIMEOUT_S:
        raise bad("frontend_timeout_s", "Cloud Run's request timeout is 1 to "
                                        f"{CLOUD_RUN_MAX_TIMEOUT_S} seconds")
    if values["api_timeout_s"] + FRONTEND_TIMEOUT_MARGIN_S > CLOUD_RUN_MAX_TIMEOUT_S:
        most = CLOUD_RUN_MAX_TIMEOUT_S - FRONTEND_TIMEOUT_MARGIN_S
        raise bad("api_timeout_s", f"the frontend's Cloud Run request timeout is at least "
                                   f"api_timeout_s + {FRONTEND_TIMEOUT_MARGIN_S} s, and Cloud Run "
                                   f"allows at most {CLOUD_RUN_MAX_TIMEOUT_S}: use at most {most}")
    for key, bounds in FRONTEND_SAMPLING_BOUNDS.items():
        if values[key] not in bounds:
            raise bad(key, f"the frontend accepts {bounds} (it would refuse to start)")
    if values["backend_min_instances"] > values["backend_max_instances"]:
        raise bad("backend_min_instances", "must not exceed backend_max_instances")
    if values["frontend_min_instances"] > values["frontend_max_instances"]:
        raise bad("frontend_min_instances", "must not exceed frontend_max_instances")
    if not 0 < values["api_key_refresh_s"] <= 3600:
        raise bad("api_key_refresh_s", "use a number of seconds between 0 and 3600")
    if values["gpu_count"] != 1:
        raise bad("gpu_count", "Cloud Run allows exactly one GPU per instance")


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse orpheus.toml; unknown keys are an error (a typo should not be silently ignored)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Invalid TOML in {path}: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # Tables are accepted for readability; their keys are the same flat setting names.
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(SETTING_FIELDS))
    if unknown:
        raise ConfigError(f"Unknown setting(s) in {path}: {', '.join(unknown)}",
                          "run `orpheus config` to list the valid names")
    return flat


def adc_project() -> str | None:
    """The project of the Application Default Credentials, or None (never raises)."""
    from orpheus_deploy.gcp.credentials import adc_project as lookup

    return lookup()


def load_settings(opts: GlobalOptions | None = None, **overrides: Any) -> Settings:
    """Build the effective settings: overrides/flags > ORPHEUS_* env > orpheus.toml > defaults."""
    opts = opts or GlobalOptions()
    values: dict[str, Any] = {k: f.default for k, f in SETTING_FIELDS.items()}
    sources: dict[str, str] = {k: "default" for k in SETTING_FIELDS}

    config_path = opts.config or (Path(os.environ[f"{ENV_PREFIX}CONFIG"])
                                  if os.environ.get(f"{ENV_PREFIX}CONFIG") else None)
    if config_path is not None and not config_path.is_file():
        raise ConfigError(f"Config file {config_path} does not exist",
                          "run `orpheus init` to create one")
    path = config_path or Path.cwd() / CONFIG_FILE
    if path.is_file():
        for key, raw in read_config_file(path).items():
            values[key] = _coerce(key, raw, str(path.name))
            sources[key] = path.name if config_path is None else str(path)

    for env_name, raw in os.environ.items():
        if not env_name.startswith(ENV_PREFIX):
            continue
        key = env_name[len(ENV_PREFIX):].lower()
        if key.upper() in _NON_SETTING_ENV:
            continue
        if key in SETTING_FIELDS:
            values[key] = _coerce(key, raw, env_name)
            sources[key] = f"env {env_name}"

    flags = {"project": opts.project, "region": opts.region}
    for key, value in {**flags, **overrides}.items():
        if key not in SETTING_FIELDS:
            raise TypeError(f"load_settings() got an unknown setting {key!r}")
        if value is not None:
            values[key] = _coerce(key, value, "flag")
            sources[key] = "flag"

    if not values["project"]:
        project = adc_project()
        if project:
            values["project"] = project
            sources["project"] = "adc"

    _validate(values, sources)
    return Settings(**values, sources=sources)
