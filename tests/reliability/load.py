"""Bounded load on loopback: N clients streaming speech for a fixed time, every answer checked.

Each client loops: POST /v1/audio/speech (wav, streamed), time to the first audio byte, read to
the end, and check that the WAV is whole (header, then exactly the samples the model's frames
make). A failed request (error status, broken stream) or a truncated one (fewer samples) counts
against the run. No client starts a request after the time is up; running ones finish.
Used by tests/reliability/test_load.py (short) and bench/reliability.py (long).
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

WAV_HEADER_BYTES = 44
SAMPLE_BYTES = 2


@dataclass
class Outcome:
    status: int | None
    ttfb_s: float | None
    total_s: float
    audio_bytes: int
    error: str = ""

    def problem(self, expected_samples: int) -> str:
        """Empty when the response is a complete WAV of the expected length."""
        if self.error:
            return self.error
        if self.status != 200:
            return f"status {self.status}"
        samples = (self.audio_bytes - WAV_HEADER_BYTES) // SAMPLE_BYTES
        if samples != expected_samples:
            return f"truncated: {samples} of {expected_samples} samples"
        return ""


@dataclass
class LoadReport:
    concurrency: int
    duration_s: float
    expected_samples: int
    outcomes: list[Outcome] = field(default_factory=list)
    max_concurrent: int = 0  # most responses streaming at the same moment
    wall_s: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [p for o in self.outcomes if (p := o.problem(self.expected_samples))]

    def summary(self) -> dict[str, Any]:
        ttfb = sorted(o.ttfb_s for o in self.outcomes if o.ttfb_s is not None)
        return {
            "requests": len(self.outcomes),
            "failures": len(self.problems),
            "p50_ttfb_ms": _ms(_percentile(ttfb, 50)),
            "p95_ttfb_ms": _ms(_percentile(ttfb, 95)),
            "max_concurrent_streams": self.max_concurrent,
            "clients": self.concurrency,
            "duration_s": round(self.wall_s, 2),
            "audio_s_per_s": round(sum(
                (o.audio_bytes - WAV_HEADER_BYTES) / SAMPLE_BYTES / 24000
                for o in self.outcomes if not o.problem(self.expected_samples))
                / self.wall_s, 2) if self.wall_s else 0.0,
        }


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def wav_is_streaming(header: bytes) -> bool:
    return (header[:4] == b"RIFF" and header[8:12] == b"WAVE"
            and struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF)


async def run_load(url: str, key: str, *, concurrency: int, duration_s: float,
                   expected_samples: int, text: str = "Load on loopback.",
                   request_timeout_s: float = 120) -> LoadReport:
    report = LoadReport(concurrency, duration_s, expected_samples)
    streaming = 0
    deadline = time.monotonic() + duration_s
    body = {"model": "orpheus", "input": text, "voice": "tara", "response_format": "wav"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient) -> Outcome:
        nonlocal streaming
        start = time.monotonic()
        ttfb = None
        received = bytearray()
        held = False
        try:
            async with client.stream("POST", f"{url}/v1/audio/speech", json=body,
                                     headers={"X-API-Key": key}) as response:
                if response.status_code == 200:
                    streaming += 1
                    held = True
                    report.max_concurrent = max(report.max_concurrent, streaming)
                async for chunk in response.aiter_bytes():
                    if ttfb is None and chunk:
                        ttfb = time.monotonic() - start
                    received += chunk
                status = response.status_code
        except httpx.HTTPError as exc:
            return Outcome(None, ttfb, time.monotonic() - start, len(received),
                           f"{type(exc).__name__}: {exc}")
        finally:
            if held:
                streaming -= 1
        if status == 200 and not wav_is_streaming(bytes(received[:WAV_HEADER_BYTES])):
            return Outcome(status, ttfb, time.monotonic() - start, len(received), "not a WAV")
        return Outcome(status, ttfb, time.monotonic() - start, len(received))

    async def client_loop() -> None:
        async with httpx.AsyncClient(timeout=request_timeout_s, limits=limits) as client:
            while time.monotonic() < deadline:
                report.outcomes.append(await one(client))

    began = time.monotonic()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    report.wall_s = time.monotonic() - began
    return report
