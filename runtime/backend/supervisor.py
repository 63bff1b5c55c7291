"""Running the engine as a child process: start-up steps with durations, readiness, shutdown.

The launcher stays the container's PID 1 parent of the server so that it can log when the model
is ready and turn Cloud Run's SIGTERM into the server's clean shutdown. The child runs in its own
process group (so a terminal's Ctrl-C reaches it once, through us, not twice: llama-server aborts
on a second interrupt) and is told by the kernel to die with us (nothing outlives a killed
launcher).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from runtime.backend.engines import EngineCommand
from runtime.backend.processes import death_signal, http_status
from runtime.backend.router import RouterWatch

log = logging.getLogger("orpheus.backend")

# Cloud Run allows 10 s between SIGTERM and SIGKILL; leave the server most of it.
SHUTDOWN_GRACE_S = 8.0


class StepClock:
    """Logs each start-up step with the time since the previous one and since launch."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()

    def step(self, what: str) -> None:
        now = time.monotonic()
        log.info("step: %s (+%.2fs, %.2fs since launch)", what, now - self._last, now - self._start)
        self._last = now






def _watch_readiness(url: str, clock: StepClock, child: subprocess.Popen[bytes],
                     stop: threading.Event, on_ready: Callable[[], None] | None) -> None:
    listening = False
    while not stop.is_set() and child.poll() is None:
        code = http_status(url)
        if code is not None and not listening:
            listening = True
            if code != 200:
                clock.step(f"listening, loading weights (GET {url} -> {code})")
        if code == 200:
            clock.step(f"weights loaded, ready (GET {url} -> 200)")
            if on_ready is not None:
                on_ready()
            return
        stop.wait(0.1)


def run_engine(command: EngineCommand, port: int, clock: StepClock,
               on_ready: Callable[[], None] | None = None) -> int:
    """Run the engine until it exits; return the launcher's exit code.

    ``on_ready`` runs once, in the readiness thread, when the engine first reports ready (for
    the router: when its default model is loaded).
    """
    log.info("starting %s: %s", command.name, " ".join(command.argv))
    child = subprocess.Popen(command.argv, start_new_session=True,
                             preexec_fn=death_signal(signal.SIGTERM))
    clock.step(f"{command.name} started (pid {child.pid})")
    stop = threading.Event()
    stop_requested_at: list[float] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop_requested_at.append(time.monotonic())
        log.info("received %s, stopping %s", signal.Signals(signum).name, command.name)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    if command.default_model is not None:
        router = RouterWatch(port, command.default_model, clock.step, on_ready)
        watcher = threading.Thread(target=router.run, name="router-watch", daemon=True,
                                   args=(child, stop))
    else:
        watcher = threading.Thread(
            target=_watch_readiness, name="readiness", daemon=True,
            args=(f"http://127.0.0.1:{port}{command.health_path}", clock, child, stop,
                  on_ready),
        )
    watcher.start()
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                waited = time.monotonic() - stop_requested_at[0] if stop_requested_at else 0.0
                if waited > SHUTDOWN_GRACE_S:
                    log.warning("%s did not stop in %.0fs; killing it", command.name,
                                SHUTDOWN_GRACE_S)
                    child.kill()
    finally:
        stop.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    if stop_requested_at:
        log.info("%s stopped (exit code %s)", command.name, code)
        return 0
    log.error("%s exited with code %s", command.name, code)
    return code if code > 0 else 1


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s orpheus-backend %(levelname)s %(message)s",
    )
