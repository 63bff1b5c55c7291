"""Which models the backend's router has on the GPU, as far as this frontend has seen.

The backend cannot be asked "are you up?" without waking it (any request starts a scaled-to-zero
GPU instance), so the frontend learns from its own traffic: when a request goes to another model
than the one before it, or to a model not seen loaded, it asks the router (``GET /v1/models``,
answered by the router itself in a millisecond) at the same time as it sends the completion.
What the router said tells whether the request had to wait for a load; the access log then
records how long the first token took (``model_load_ms``: the load plus the first token), and
``GET /v1/models`` reports each model's last seen status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.frontend.backend_client import BackendClient
    from runtime.frontend.speech import SpeechStats

__all__ = ["LOADED", "UNKNOWN", "LoadWatch", "ModelStatus"]

LOADED = "loaded"
UNKNOWN = "unknown"
# A backend this frontend talked to this recently is still up (Cloud Run keeps an idle instance
# for minutes), so asking it again wakes nothing.
RECENT_CONTACT_S = 60.0


class ModelStatus:
    def __init__(self, backend: BackendClient, clock: Callable[[], float] = time.monotonic):
        self._backend = backend
        self._clock = clock
        self._states: dict[str, str] = {}
        self._last_model: str | None = None
        self._contact: float | None = None  # when the backend last answered
        self._pending: set[asyncio.Task[dict[str, str] | None]] = set()

    def status(self, model: str) -> str:
        return self._states.get(model, UNKNOWN)

    def should_ask(self, model: str) -> bool:
        """A switch of model, or a model not seen loaded: it may have to be loaded now."""
        return model != self._last_model or self._states.get(model) != LOADED

    async def refresh(self) -> dict[str, str] | None:
        states = await self._backend.model_states()
        if states is not None:
            self._states = states
            self._contact = self._clock()
        return states

    async def refresh_if_up(self) -> None:
        """Ask again only when the backend answered recently (it is up; asking wakes nothing)."""
        if self._contact is not None and self._clock() - self._contact < RECENT_CONTACT_S:
            await self.refresh()

    def served(self, model: str) -> None:
        """A request on ``model`` streamed: it is loaded, and it is the current one."""
        self._states[model] = LOADED
        self._last_model = model
        self._contact = self._clock()

    def ask(self) -> asyncio.Task[dict[str, str] | None]:
        task = asyncio.ensure_future(self.refresh())
        self._pending.add(task)  # held until done, so it is not collected mid-flight
        task.add_done_callback(self._pending.discard)
        return task


class LoadWatch:
    """One request's look at a possible model load, for the access log."""

    def __init__(self, status: ModelStatus, model: str, stats: SpeechStats) -> None:
        self._model = model
        self._stats = stats
        self._start = time.monotonic()
        self._task = status.ask() if status.should_ask(model) else None

    def first_token(self) -> None:
        """Call at the model's first token: if the router said the model was not loaded when
        the request went out, the wait until now was (mostly) its load."""
        if self._task is None:
            return
        waited_ms = round((time.monotonic() - self._start) * 1000.0, 1)
        task, self._task = self._task, None

        def record(done: asyncio.Future[dict[str, str] | None]) -> None:
            states = None if done.cancelled() or done.exception() else done.result()
            before = (states or {}).get(self._model)
            if before is not None and before != LOADED:
                self._stats.model_was = before
                self._stats.model_load_ms = waited_ms

        task.add_done_callback(record)
