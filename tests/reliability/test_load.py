"""Short load profile (CI): concurrent streaming clients through the deployed stack on loopback
(frontend -> router -> backend launcher -> llama-server), for a fixed time; every response must
be a whole WAV. Figures are printed, not asserted: timings belong to bench/reliability.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.plugin_localcloud import DEPLOYED_FRAMES
from tests.frontend.audio import SAMPLES_PER_FRAME
from tests.reliability.load import run_load

pytestmark = [pytest.mark.llama_server, pytest.mark.reliability]

CLIENTS = 3
SECONDS = 3.0


def test_concurrent_streams_for_a_fixed_time_all_complete(deployed_cloud: LocalCloud) -> None:
    report = asyncio.run(run_load(
        deployed_cloud.frontend_url, deployed_cloud.api_key, concurrency=CLIENTS,
        duration_s=SECONDS, expected_samples=DEPLOYED_FRAMES * SAMPLES_PER_FRAME))
    print("load:", report.summary())
    assert report.problems == []
    assert len(report.outcomes) >= CLIENTS  # every client finished at least one request
    # The clients really overlapped (each held a stream while others did).
    assert report.max_concurrent >= 2
