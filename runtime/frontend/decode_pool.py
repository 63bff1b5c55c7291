"""Worker threads for the blocking audio work (ONNX decode, tempo, encoding), shared by requests,
with two priorities: work that stands between a request and its first audio byte goes first.

Why not a plain ThreadPoolExecutor: it is FIFO, so when the CPU is saturated a request that has just
arrived waits behind the steady-state chunks of every stream already playing, and its time to first
byte grows with the number of streams. Streams already playing have audio ahead of the listener
(the backend runs faster than real time), so they can afford a short wait; a silent new stream
cannot. Within a priority, work runs in arrival order, so no stream starves.

Size: one worker per CPU the process may use, each call single-threaded in ONNX Runtime, so that
decodes do not time-slice against each other (which would delay every stream's chunk at once).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["FIRST_AUDIO", "STEADY", "DecodePool", "default_workers"]

T = TypeVar("T")

FIRST_AUDIO = 0
STEADY = 1


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class DecodePool:
    def __init__(self, workers: int, name: str = "orpheus-decode") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        if self._closed:
            raise RuntimeError("the decode pool is shut down")
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), (fn, future)))
        return future

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue  # the request went away before its turn
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Stop after the queued work (the lifespan calls this once requests are drained)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put((99, next(self._order), None))
        for thread in self._threads:
            thread.join(5)
