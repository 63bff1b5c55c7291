"""``python -m runtime.backend``: the backend container's command (see runtime/backend/Dockerfile).

Environment (design section 3): MODEL_PATH (required), PORT (1234), N_GPU_LAYERS (all),
N_PARALLEL (4), N_CTX (N_PARALLEL x 4096; raised if a slot would get less than MIN_SLOT_CTX, 2560).
Also: ORPHEUS_ENGINE (llama-server | llama-cpp-python), LLAMA_SERVER_BIN (else PATH),
ORPHEUS_BACKEND_HOST (0.0.0.0), MODEL_STAGING (auto | always | never), MODEL_STAGING_DIR
(/dev/shm), MODEL_STAGING_THREADS (16), N_THREADS (CPU threads; default: the engine's).
Several models: MODEL_FILES (JSON name -> file under MODELS_DIR, MODEL_PATH among them) and
MODELS_MAX run llama-server as a router (runtime/backend/router.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runtime.backend.engines import EngineError, engine_command
from runtime.backend.model_file import ModelError, filesystem_type, resolve_model
from runtime.backend.router import link_model, write_presets
from runtime.backend.settings import ENGINES, BackendSettings, ConfigError, load_settings
from runtime.backend.staging import parallel_copy, release, should_stage
from runtime.backend.supervisor import StepClock, configure_logging, run_engine

log = logging.getLogger("orpheus.backend")

# Exit codes: distinct so that a crash-looping revision's logs and exit status say which step.
EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_ENGINE = 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.backend", description=__doc__)
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="inference server to run (default: $ORPHEUS_ENGINE or llama-server)")
    args = parser.parse_args(argv)
    configure_logging()
    clock = StepClock()
    try:
        settings, notes = load_settings(engine=args.engine)
    except ConfigError as exc:
        log.error("fatal: %s", exc)
        return EXIT_CONFIG
    for note in notes:
        log.warning("%s", note)

    try:
        model = resolve_model(settings.model_path)
        others = {name: resolve_model(path) for name, path in settings.model_files.items()
                  if path != settings.model_path}
    except ModelError as exc:
        log.error("fatal: %s", exc)
        return EXIT_MODEL
    size = model.stat().st_size
    fstype = filesystem_type(model)
    clock.step(f"model visible: {model} ({size / 1e9:.2f} GB, {fstype or 'unknown'} filesystem)")
    for name, path in others.items():
        log.info("model %s: %s (%.2f GB), loaded on demand", name, path,
                 path.stat().st_size / 1e9)

    staged_copy = _stage(settings, model, fstype, size, clock)
    with contextlib.ExitStack() as cleanup:
        presets: Path | None = None
        # The staged copy is memory (/dev/shm) that the loaded server no longer reads.
        on_ready = functools.partial(release, staged_copy) if staged_copy is not None else None
        if settings.router:  # the links and the preset file live as long as the router
            scratch = Path(cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="orpheus-router-")))
            targets = {settings.default_model: staged_copy or model, **others}
            links = {name: link_model(scratch, name, path) for name, path in targets.items()}
            if staged_copy is not None:
                # Once loaded, a reload (after an eviction) reads the mount, not the copy.
                on_ready = functools.partial(_back_to_mount, scratch, settings.default_model,
                                             model, staged_copy)
            presets = write_presets(scratch, links, settings.default_model)
        try:
            command = engine_command(settings, staged_copy or model, presets)
        except EngineError as exc:
            log.error("fatal: %s", exc)
            return EXIT_ENGINE
        if presets is not None:
            log.info("engine %s: %d models (%s), at most %d loaded at once, default %s; "
                     "%d parallel slots of %d tokens each, %d GPU layers, port %d",
                     command.name, len(settings.model_files), ", ".join(settings.model_files),
                     settings.models_max, settings.default_model, settings.n_parallel,
                     settings.slot_ctx, settings.n_gpu_layers, settings.port)
        else:
            log.info("engine %s: %d parallel slots of %d tokens, %d GPU layers, port %d",
                     command.name, settings.n_parallel if command.name == "llama-server" else 1,
                     settings.slot_ctx, settings.n_gpu_layers, settings.port)
        return run_engine(command, settings.port, clock, on_ready)


def _stage(settings: BackendSettings, model: Path, fstype: str, size: int,
           clock: StepClock) -> Path | None:
    """Copy the (default) model to memory first when that is faster (runtime/backend/staging.py);
    the copy's path, or None to load it in place."""
    stage, why = should_stage(settings.staging, fstype, size, settings.staging_dir)
    if not stage:
        log.info("loading the model in place (%s)", why)
        return None
    try:
        staged = parallel_copy(model, settings.staging_dir, settings.staging_threads)
    except OSError as exc:
        log.warning("copying the model to %s failed (%s); loading it in place",
                    settings.staging_dir, exc)
        return None
    clock.step(f"model read: copied to {staged.path} ({why}) at {staged.mb_per_s:.0f} MB/s "
               f"with {settings.staging_threads} threads")
    return staged.path


def _back_to_mount(scratch: Path, name: str, model: Path, staged_copy: Path) -> None:
    link_model(scratch, name, model)
    release(staged_copy)


if __name__ == "__main__":
    sys.exit(main())
