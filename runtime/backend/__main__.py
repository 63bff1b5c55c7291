"""``python -m runtime.backend``: the backend container's command (see runtime/backend/Dockerfile).

Environment (design section 3): MODEL_PATH (required), PORT (1234), N_GPU_LAYERS (all),
N_PARALLEL (4), N_CTX (N_PARALLEL x 4096; raised if a slot would get less than MIN_SLOT_CTX, 2560).
Also: ORPHEUS_ENGINE (llama-server | llama-cpp-python), LLAMA_SERVER_BIN (else PATH),
ORPHEUS_BACKEND_HOST (0.0.0.0), MODEL_STAGING (auto | always | never), MODEL_STAGING_DIR
(/dev/shm), MODEL_STAGING_THREADS (16), N_THREADS (CPU threads; default: the engine's).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.backend.engines import EngineError, engine_command
from runtime.backend.model_file import ModelError, filesystem_type, resolve_model
from runtime.backend.settings import ENGINES, ConfigError, load_settings
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
    except ModelError as exc:
        log.error("fatal: %s", exc)
        return EXIT_MODEL
    size = model.stat().st_size
    fstype = filesystem_type(model)
    clock.step(f"model visible: {model} ({size / 1e9:.2f} GB, {fstype or 'unknown'} filesystem)")

    stage, why = should_stage(settings.staging, fstype, size, settings.staging_dir)
    staged_copy: Path | None = None
    if stage:
        try:
            staged = parallel_copy(model, settings.staging_dir, settings.staging_threads)
        except OSError as exc:
            log.warning("copying the model to %s failed (%s); loading it in place",
                        settings.staging_dir, exc)
        else:
            model = staged_copy = staged.path
            clock.step(f"model read: copied to {model} ({why}) at {staged.mb_per_s:.0f} MB/s "
                       f"with {settings.staging_threads} threads")
    else:
        log.info("loading the model in place (%s)", why)

    try:
        command = engine_command(settings, model)
    except EngineError as exc:
        log.error("fatal: %s", exc)
        return EXIT_ENGINE
    log.info("engine %s: %d parallel slots of %d tokens, %d GPU layers, port %d",
             command.name, settings.n_parallel if command.name == "llama-server" else 1,
             settings.slot_ctx, settings.n_gpu_layers, settings.port)
    # The staged copy is memory (/dev/shm) that the loaded server no longer reads.
    on_ready = functools.partial(release, staged_copy) if staged_copy is not None else None
    return run_engine(command, settings.port, clock, on_ready)


if __name__ == "__main__":
    sys.exit(main())
