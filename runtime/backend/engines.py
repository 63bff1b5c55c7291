"""The command line of each inference engine, from the settings.

``llama-server`` (llama.cpp) is the production engine: parallel slots decoded together in one
batch (continuous batching), so that concurrent users share the GPU's memory bandwidth.
``llama_cpp.server`` (llama-cpp-python) speaks the same ``/v1/completions`` and serves one request
at a time; it is the fallback where no llama-server binary is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.backend.settings import BackendSettings


class EngineError(Exception):
    """The engine cannot be started here (no binary); the message says how to get one."""


@dataclass(frozen=True)
class EngineCommand:
    name: str
    argv: list[str]
    health_path: str  # 200 once the model is loaded (single model)
    # Router mode: readiness is this model being loaded (the router's /health is 200 at once).
    default_model: str | None = None


def find_llama_server(configured: str | None) -> str:
    """The llama-server to run: ``LLAMA_SERVER_BIN`` if set, else the one on PATH."""
    if configured:
        path = Path(configured)
        if not (path.is_file() and shutil.which(str(path))):
            raise EngineError(f"LLAMA_SERVER_BIN={configured} is not an executable file")
        return str(path)
    found = shutil.which("llama-server")
    if found is None:
        raise EngineError(
            "llama-server was not found on PATH: set LLAMA_SERVER_BIN to the binary "
            "(.ci/build_llama.sh builds one), or use --engine llama-cpp-python "
            "(pip install 'llama-cpp-python[server]')"
        )
    return found


def _no_mmap_flags(binary: str) -> list[str]:
    """Flags that make llama-server read the weights instead of memory-mapping them.

    The pinned llama.cpp chooses with ``--load-mode none``; older builds (a user's own, for
    ``orpheus local``) only know ``--no-mmap``. The help text tells which one this binary has.
    """
    try:
        help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                   timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        help_text = ""
    if "--load-mode" in help_text:
        return ["--load-mode", "none"]
    if "--no-mmap" in help_text:
        return ["--no-mmap"]
    return []


def _server_flags(settings: BackendSettings, binary: str) -> list[str]:
    """What every llama-server gets; the router passes the same to each model's child."""
    argv = [
        "--host", settings.host,
        "--port", str(settings.port),
        "--n-gpu-layers", str(settings.n_gpu_layers),
        "--ctx-size", str(settings.n_ctx),
        "--parallel", str(settings.n_parallel),
        "--cont-batching",
        "--no-webui",
        *_no_mmap_flags(binary),
    ]
    if settings.n_threads:
        argv += ["--threads", str(settings.n_threads)]
    return argv


def llama_server_command(settings: BackendSettings, model: Path, binary: str) -> EngineCommand:
    argv = [binary, "--model", str(model), "--alias", model.stem,
            *_server_flags(settings, binary)]
    return EngineCommand("llama-server", argv, "/health")


def router_command(settings: BackendSettings, presets: Path, binary: str) -> EngineCommand:
    """llama-server without a model: a router over the preset file's models
    (runtime/backend/router.py)."""
    argv = [binary, "--models-preset", str(presets), "--models-max", str(settings.models_max),
            *_server_flags(settings, binary)]
    return EngineCommand("llama-server router", argv, "/health",
                         default_model=settings.default_model)


def llama_cpp_python_command(settings: BackendSettings, model: Path) -> EngineCommand:
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", model.stem,
        "--host", settings.host,
        "--port", str(settings.port),
        "--n_gpu_layers", str(settings.n_gpu_layers),
        # One request at a time: the whole context is one slot's.
        "--n_ctx", str(settings.slot_ctx),
        "--use_mmap", "False",
        # By default a new request cancels the one streaming; queue it instead.
        "--interrupt_requests", "False",
    ]
    if settings.n_threads:
        argv += ["--n_threads", str(settings.n_threads), "--n_threads_batch",
                 str(settings.n_threads)]
    return EngineCommand("llama-cpp-python", argv, "/v1/models")


def engine_command(settings: BackendSettings, model: Path,
                   presets: Path | None = None) -> EngineCommand:
    """The single-model server on ``model``, or (``presets``, several models) the router."""
    if settings.engine == "llama-cpp-python":
        return llama_cpp_python_command(settings, model)
    binary = find_llama_server(settings.llama_server_bin)
    if presets is not None:
        return router_command(settings, presets, binary)
    return llama_server_command(settings, model, binary)
