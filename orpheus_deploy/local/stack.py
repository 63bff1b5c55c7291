"""Starting, watching and stopping the local backend and frontend processes.

Both run the same commands as their containers (``python -m runtime.backend`` and
``python -m runtime.frontend``), with the environment of design section 3, on 127.0.0.1. Each
child gets its own process group, so that a terminal's Ctrl-C reaches it once, from us, as an
orderly SIGTERM (the backend passes it on to the inference server); and each is told by the
kernel to die with us, so that no server outlives a killed ``orpheus local up``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orpheus_deploy.errors import OrpheusError
from runtime.backend.processes import death_signal, http_status

ENGINES = ("auto", "llama-server", "llama-cpp-python")
STOP_GRACE_S = 12.0


class StackError(OrpheusError):
    pass


@dataclass(frozen=True)
class StackConfig:
    model: Path
    snac: Path
    api_key: str
    port: int = 5005
    backend_port: int = 0  # 0: any free port
    host: str = "127.0.0.1"
    engine: str = "auto"
    parallel: int = 2
    threads: int | None = None  # inference CPU threads; None: the engine's default
    log_dir: Path = field(default_factory=lambda: Path.cwd())


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_url: str

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def choose_engine(requested: str) -> str:
    """``llama-server`` when there is one (parallel slots), else llama-cpp-python."""
    if requested != "auto":
        return requested
    if os.environ.get("LLAMA_SERVER_BIN") or shutil.which("llama-server"):
        return "llama-server"
    if importlib.util.find_spec("llama_cpp") is not None:
        return "llama-cpp-python"
    raise StackError(
        "no inference engine found: neither llama-server on PATH nor llama-cpp-python",
        "install llama.cpp (llama-server), or pip install 'orpheus-deploy[backend]'",
    )






class LocalStack:
    """The two servers. ``start()`` returns once both answer; ``stop()`` is idempotent."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.engine = choose_engine(config.engine)
        self.backend_port = config.backend_port or free_port()
        self.children: list[Child] = []

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], ready_url: str) -> Child:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.config.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, start_new_session=True,
                preexec_fn=death_signal(signal.SIGTERM),
            )
        child = Child(name, process, log_path, ready_url)
        self.children.append(child)
        return child

    def _wait_ready(self, child: Child, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_status(child.ready_url) == 200:
                return
            if child.process.poll() is not None:
                raise StackError(
                    f"the {child.name} exited with code {child.process.returncode} while starting;"
                    f" last lines of {child.log_path}:\n{child.log_tail()}",
                    "fix the cause shown above and run `orpheus local up` again",
                )
            time.sleep(0.2)
        raise StackError(f"the {child.name} did not become ready in {timeout:.0f}s "
                         f"(log: {child.log_path})", "see the log for what it is doing")

    def start(self, backend_timeout: float = 900.0, frontend_timeout: float = 120.0) -> None:
        cfg = self.config
        health = "/health" if self.engine == "llama-server" else "/v1/models"
        backend = self._spawn(
            "backend",
            [sys.executable, "-m", "runtime.backend", "--engine", self.engine],
            {
                "MODEL_PATH": str(cfg.model),
                "PORT": str(self.backend_port),
                "ORPHEUS_BACKEND_HOST": "127.0.0.1",
                "N_PARALLEL": str(cfg.parallel),
                # The model is on a local disk: copying it to memory first would only cost time.
                "MODEL_STAGING": "never",
                **({"N_THREADS": str(cfg.threads)} if cfg.threads else {}),
            },
            f"{self.backend_url}{health}",
        )
        try:
            self._wait_ready(backend, backend_timeout)
            frontend = self._spawn(
                "frontend",
                [sys.executable, "-m", "runtime.frontend"],
                {
                    "PORT": str(cfg.port),
                    "ORPHEUS_HOST": cfg.host,
                    "ORPHEUS_API_URL": f"{self.backend_url}/v1/completions",
                    "ORPHEUS_BACKEND_AUTH": "none",
                    "API_KEY_SECRET": cfg.api_key,
                    "SNAC_MODEL_PATH": str(cfg.snac),
                    # Requests beyond the backend's parallel slots wait in the frontend's queue.
                    "ORPHEUS_BACKEND_SLOTS": str(cfg.parallel),
                },
                f"http://127.0.0.1:{cfg.port}/health",
            )
            self._wait_ready(frontend, frontend_timeout)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children}

    def exited(self) -> Child | None:
        """A child that has stopped on its own, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM both (frontend first, so no request starts on a dying backend), then wait."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
