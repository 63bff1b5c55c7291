"""The backend's settings, all from the environment (design section 3), validated up front.

Several models (issue 14): MODEL_FILES (JSON name -> file under MODELS_DIR) and MODELS_MAX turn on
llama-server's router mode; MODEL_PATH stays the default model, loaded at start-up. Without them
the launcher runs one llama-server on MODEL_PATH exactly as before.

Stdlib only: the backend image carries no Python packages besides the launcher itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

ENGINES = ("llama-server", "llama-cpp-python")
STAGING_MODES = ("auto", "always", "never")

DEFAULT_PORT = 1234
DEFAULT_PARALLEL = 4
# Per slot: an Orpheus prompt (well under 512 tokens) plus the frontend's default max_tokens (2000),
# rounded up. A smaller slot would cut long utterances off mid-sentence.
DEFAULT_MIN_SLOT_CTX = 2560
DEFAULT_SLOT_CTX = 4096
# More layers than any Orpheus model has: llama.cpp clamps it, i.e. "offload everything".
ALL_LAYERS = 999
# Model names become llama-server router preset sections and the completions' `model` field.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class BackendSettings:
    model_path: Path
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    n_gpu_layers: int = ALL_LAYERS
    n_parallel: int = DEFAULT_PARALLEL
    n_ctx: int = DEFAULT_PARALLEL * DEFAULT_SLOT_CTX
    engine: str = "llama-server"
    llama_server_bin: str | None = None
    staging: str = "auto"
    staging_dir: Path = Path("/dev/shm")
    staging_threads: int = 16
    n_threads: int | None = None  # CPU threads; None: the engine's default
    # Several models (MODEL_FILES): name -> file, at least two, the default (MODEL_PATH) among
    # them; empty for the single-model deployment (load_settings leaves a one-model MODEL_FILES
    # out). At most ``models_max`` are loaded at once.
    model_files: dict[str, Path] = field(default_factory=dict)
    models_max: int = 1

    @property
    def slot_ctx(self) -> int:
        """Context of one parallel slot: llama-server splits ``n_ctx`` evenly between slots."""
        return self.n_ctx // self.n_parallel

    @property
    def router(self) -> bool:
        """Several models: llama-server runs as a router (runtime/backend/router.py)."""
        return bool(self.model_files)

    @property
    def default_model(self) -> str:
        """The name of MODEL_PATH's model in ``model_files`` (loaded at start-up); its file's
        stem for a single-model deployment, which has no ``model_files``."""
        for name, path in self.model_files.items():
            if path == self.model_path:
                return name
        return self.model_path.stem


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


def load_settings(
    env: Mapping[str, str] | None = None, *, engine: str | None = None
) -> tuple[BackendSettings, list[str]]:
    """Settings from ``env`` (default: os.environ), and notes worth logging about adjustments.

    ``engine`` (from the command line) wins over ``ORPHEUS_ENGINE``.
    """
    env = os.environ if env is None else env
    notes: list[str] = []
    model = env.get("MODEL_PATH", "").strip()
    if not model:
        raise ConfigError(
            "MODEL_PATH is not set: set it to the .gguf file, e.g. /models/Orpheus-3b-FT-Q8_0.gguf"
        )
    n_gpu_layers_raw = env.get("N_GPU_LAYERS", "").strip().lower()
    n_gpu_layers = (
        ALL_LAYERS if n_gpu_layers_raw in ("all", "-1")
        else _int(env, "N_GPU_LAYERS", ALL_LAYERS, 0)
    )
    n_parallel = _int(env, "N_PARALLEL", DEFAULT_PARALLEL, 1)
    min_slot = _int(env, "MIN_SLOT_CTX", DEFAULT_MIN_SLOT_CTX, 256)
    n_ctx = _int(env, "N_CTX", n_parallel * DEFAULT_SLOT_CTX, 256)
    if n_ctx // n_parallel < min_slot:
        raised = n_parallel * min_slot
        notes.append(
            f"N_CTX={n_ctx} gives each of the {n_parallel} slots only {n_ctx // n_parallel} tokens,"
            f" less than a prompt plus max tokens ({min_slot}); using N_CTX={raised}"
        )
        n_ctx = raised
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} must be one of: {', '.join(ENGINES)}")
    settings = BackendSettings(
        model_path=Path(model),
        port=_int(env, "PORT", DEFAULT_PORT, 1),
        host=env.get("ORPHEUS_BACKEND_HOST", "").strip() or "0.0.0.0",
        n_gpu_layers=n_gpu_layers,
        n_parallel=n_parallel,
        n_ctx=n_ctx,
        engine=engine or _choice(env, "ORPHEUS_ENGINE", "llama-server", ENGINES),
        llama_server_bin=env.get("LLAMA_SERVER_BIN", "").strip() or None,
        staging=_choice(env, "MODEL_STAGING", "auto", STAGING_MODES),
        staging_dir=Path(env.get("MODEL_STAGING_DIR", "").strip() or "/dev/shm"),
        staging_threads=_int(env, "MODEL_STAGING_THREADS", 16, 1),
        n_threads=_int(env, "N_THREADS", 0, 1) or None,
    )
    if settings.port > 65535:
        raise ConfigError(f"PORT={settings.port} is not a TCP port")
    files = _model_files(env, settings.model_path)
    if len(files) > 1:
        if settings.engine != "llama-server":
            raise ConfigError(f"MODEL_FILES names {len(files)} models; serving several needs "
                              "the llama-server engine (its router mode), not llama-cpp-python")
        settings = replace(settings, model_files=files,
                           models_max=_int(env, "MODELS_MAX", len(files), 1))
    return settings, notes


def _model_files(env: Mapping[str, str], model_path: Path) -> dict[str, Path]:
    """MODEL_FILES: a JSON object of model name -> file, relative to MODELS_DIR (default: the
    directory of MODEL_PATH; an absolute path stands for itself); MODEL_PATH must be one of them
    (the default model)."""
    raw = env.get("MODEL_FILES", "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise ConfigError('MODEL_FILES must be a JSON object of model name -> .gguf file, e.g. '
                          '{"orpheus": "en.gguf", "orpheus-fr": "fr.gguf"}')
    bad = [k for k in data if not _MODEL_NAME.match(k)]
    if bad:
        raise ConfigError(f"MODEL_FILES: invalid model name(s) {', '.join(map(repr, bad))}: use "
                          "letters, digits, '.', '_' or '-'")
    directory = Path(env.get("MODELS_DIR", "").strip() or model_path.parent)
    files = {name: directory / rel for name, rel in data.items()}
    if model_path not in files.values():
        raise ConfigError(f"MODEL_PATH={model_path} is not one of MODEL_FILES (under "
                          f"{directory}): the default model must be served too")
    return files
