"""Striking the deployed stack mid-stream, and reading what a client gets.

``Strike(after, action)`` goes in a router's ``on_forwarded``: it runs ``action`` once, when
``after`` server-sent events have been relayed, so a fault lands inside a stream instead of at
a moment a timer picks. ``speak(lc)`` streams one WAV from the frontend and keeps what arrived,
the status, and the transport error if the transfer broke.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.local_cloud import LocalCloud

STRIKE_AFTER_EVENTS = 8 * 7  # eight frames of audio tokens: the frontend is streaming by then


@dataclass
class Speech:
    status: int | None
    audio: bytes
    error: str = ""
    request_id: str = ""

    @property
    def samples(self) -> int:
        return max(len(self.audio) - 44, 0) // 2


def speak(lc: LocalCloud, text: str = "Faults in the middle.") -> Speech:
    received = bytearray()
    status = None
    request_id = ""
    try:
        with httpx.stream("POST", f"{lc.frontend_url}/v1/audio/speech",
                          headers={"X-API-Key": lc.api_key},
                          json={"input": text, "voice": "tara", "response_format": "wav"},
                          timeout=120) as response:
            status = response.status_code
            request_id = response.headers.get("x-request-id", "")
            for chunk in response.iter_bytes():
                received += chunk
    except httpx.HTTPError as exc:
        return Speech(status, bytes(received), f"{type(exc).__name__}: {exc}", request_id)
    return Speech(status, bytes(received), "", request_id)


@dataclass
class Strike:
    """Calls ``action`` once, when ``after`` server-sent events have been relayed."""

    after: int
    action: Callable[[], None]
    events: int = 0
    fired: threading.Event = field(default_factory=threading.Event)

    def __call__(self, chunk: bytes) -> None:
        self.events += chunk.count(b"data: ")
        if self.events >= self.after and not self.fired.is_set():
            self.fired.set()
            self.action()


class Pause:
    """An action for ``Strike``: SIGSTOP every process of an instance, SIGCONT ``seconds`` later
    (a backend that stalls, then carries on). ``join()`` waits for the resume."""

    def __init__(self, instance: Any, seconds: float) -> None:
        self.instance = instance
        self.seconds = seconds
        self.timer: threading.Timer | None = None

    def __call__(self) -> None:
        self.instance.signal_group(signal.SIGSTOP)
        self.timer = threading.Timer(self.seconds, self.instance.signal_group,
                                     (signal.SIGCONT,))
        self.timer.start()

    def join(self) -> None:
        if self.timer is not None:
            self.timer.join()
