"""Several models behind one port: llama-server's router mode, prepared and watched.

Why the router and not one llama-server per model under this launcher: the pinned llama.cpp
(tools/server/server-models.cpp) already does what a per-model launcher would have to: one
child server per model on a loopback port, the request's ``model`` field choosing the child,
models loaded on demand, at most ``--models-max`` resident with the least recently used one
unloaded (never one that is serving), requests for a model that is loading held until it is
ready (and cancelled if the caller hangs up), and every child started with the router's own
flags (``--load-mode none``, ``--ctx-size``, ``--parallel``, ``--n-gpu-layers``). Measured here
with the tiny fixtures: routing, eviction, the held requests and a clean SIGTERM (children
stopped) all work, and no Python sits in the token stream. What does not fit Cloud Run as is,
and what this module adds:

- health: the router answers ``/health`` 200 as soon as it listens, before any model is
  loaded. The startup probe would pass with the GPU still empty. So the launcher copies the
  default model's bytes out of the Cloud Storage mount (the slow part of a cold start) *before*
  it starts the router, while nothing listens and the probe keeps failing; the router then loads
  it from memory in seconds at start-up (``load-on-startup``), and a request arriving in those
  seconds waits inside the router. A default model that fails to load stops the container, as a
  failed single-model load does.
- staging: the router starts children itself, from the paths in its preset file, so the
  launcher cannot hand each load a fresh copy. Each preset points at a symlink in the
  launcher's directory: the default model's first points at the copy in /dev/shm, and once that
  model is loaded it is turned to the mount and the copy deleted (a later reload after an
  eviction reads the mount). Models loaded on demand read the mount directly.
- names: a generated ``--models-preset`` file rather than ``--models-dir /models``, so that the
  router serves exactly the manifest's models under the manifest's names, not every GGUF that
  happens to be in the bucket under its file name.

The launcher logs every model's load and unload with its duration (from ``GET /models``), so a
deploy's logs show what a model switch costs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("orpheus.backend")

POLL_S = 0.25
LOADED = "loaded"
LOADING = "loading"
UNLOADED = "unloaded"


@dataclass(frozen=True)
class ModelState:
    status: str  # loaded | loading | unloaded | sleeping | ...
    failed: bool = False
    exit_code: int | None = None


def link_model(directory: Path, name: str, target: Path) -> Path:
    """``directory/name.gguf`` -> ``target``; replaced atomically when it exists."""
    link = directory / f"{name}.gguf"
    temporary = directory / f".{name}.gguf.new"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)
    return link


def write_presets(directory: Path, links: dict[str, Path], default: str) -> Path:
    """The router's preset file: one section per model, the default loaded at start-up."""
    lines = ["version = 1", ""]
    for name, link in links.items():
        lines += [f"[{name}]", f"model = {link}"]
        if name == default:
            lines.append("load-on-startup = true")
        lines.append("")
    path = directory / "models.ini"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def model_states(port: int, timeout: float = 2.0) -> dict[str, ModelState] | None:
    """The router's view of every model (``GET /models``), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=timeout) as r:
            data = json.load(r)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    out: dict[str, ModelState] = {}
    for model in data.get("data", []) if isinstance(data, dict) else []:
        status = model.get("status") if isinstance(model, dict) else None
        if isinstance(status, dict) and "id" in model:
            out[str(model["id"])] = ModelState(str(status.get("value", "")),
                                               bool(status.get("failed", False)),
                                               status.get("exit_code"))
    return out


class RouterWatch:
    """Follows the router's models: readiness of the default one, then every load and unload.

    ``on_ready`` runs once the default model is loaded; a default model that fails to load
    before that terminates the router (the container then exits, as a failed load does in
    single-model mode).
    """

    def __init__(self, port: int, default: str, step: Callable[[str], None],
                 on_ready: Callable[[], None] | None = None) -> None:
        self.port = port
        self.default = default
        self._step = step
        self._on_ready = on_ready
        self._since: dict[str, float] = {}
        self._last: dict[str, str] = {}
        self.ready = False

    def run(self, child: subprocess.Popen[bytes], stop: threading.Event) -> None:
        while not stop.is_set() and child.poll() is None:
            states = model_states(self.port)
            if states is not None:
                self._observe(states, child)
            stop.wait(POLL_S)

    def _observe(self, states: dict[str, ModelState], child: subprocess.Popen[bytes]) -> None:
        now = time.monotonic()
        for name, state in states.items():
            previous = self._last.get(name)
            if state.status == previous:
                continue
            self._last[name] = state.status
            if state.status == LOADING:
                self._since[name] = now
                log.info("model %s: loading", name)
            elif state.status == LOADED and name in self._since:
                log.info("model %s: loaded in %.2fs", name, now - self._since.pop(name))
            elif state.status == LOADED:
                log.info("model %s: loaded", name)  # its load began between two looks
            elif state.status == UNLOADED and previous is not None:
                if state.failed:
                    log.error("model %s: failed to load (exit code %s)", name, state.exit_code)
                else:
                    log.info("model %s: unloaded", name)
        default = states.get(self.default)
        if self.ready or default is None:
            return
        if default.status == LOADED:
            self.ready = True
            self._step(f"default model {self.default} loaded, ready")
            if self._on_ready is not None:
                self._on_ready()
        elif default.failed:
            log.error("fatal: the default model %s failed to load; stopping", self.default)
            child.terminate()
