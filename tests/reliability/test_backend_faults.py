"""Faults at the backend of the deployed stack: killed mid-stream, paused mid-stream, restarted.

The strike happens inside the backend's router (Cloud Run's front end) after a given number of
completion events have been relayed to the frontend, so it lands in the middle of a stream
rather than at a moment picked by a timer. Expected outcomes (design section 3, issue 4):
- killed: the response already streaming is cut visibly (no final chunk), the frontend logs the
  abort with the request id, and the next request is served by a new instance (a cold start);
- paused (SIGSTOP, then SIGCONT): the stream completes, every frame delivered;
- instance retired (scale to zero) between requests: the next request cold-starts and completes.
"""

from __future__ import annotations

import signal

import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.plugin_localcloud import DEPLOYED_FRAMES
from tests.frontend.audio import SAMPLES_PER_FRAME
from tests.reliability.faults import STRIKE_AFTER_EVENTS, Pause, Strike, speak

pytestmark = [pytest.mark.llama_server, pytest.mark.reliability]

FULL_SAMPLES = DEPLOYED_FRAMES * SAMPLES_PER_FRAME


def test_backend_killed_mid_stream_cuts_the_response_then_a_new_instance_serves(
        deployed_cloud: LocalCloud) -> None:
    router = deployed_cloud.runner.router("orpheus-backend")  # type: ignore[union-attr]
    victim = router.instance
    assert victim is not None and victim.alive()
    strike = Strike(STRIKE_AFTER_EVENTS, lambda: victim.signal_group(signal.SIGKILL))
    router.on_forwarded = strike
    try:
        cut = speak(deployed_cloud)
    finally:
        router.on_forwarded = None
    assert strike.fired.is_set()
    # Audio had started (200), then the transfer broke: a client cannot take it for complete.
    assert cut.status == 200
    assert "RemoteProtocolError" in cut.error, cut.error
    assert 0 < cut.samples < FULL_SAMPLES
    frontend_log = deployed_cloud.runner.instance("orpheus-frontend").log.read_text()
    aborted = [line for line in frontend_log.splitlines()
               if cut.request_id in line and "aborted" in line]
    assert aborted, frontend_log[-2000:]
    victim.process.wait(10)
    assert victim.running_pids() == set()

    # Cloud Run replaces the dead instance on the next request; the frontend's retries cover
    # the cold start, and the answer is whole.
    again = speak(deployed_cloud)
    assert (again.status, again.error, again.samples) == (200, "", FULL_SAMPLES)
    assert router.instance is not victim and router.instance is not None
    assert router.instance.alive()


def test_backend_paused_mid_stream_still_delivers_every_frame(deployed_cloud: LocalCloud) -> None:
    router = deployed_cloud.runner.router("orpheus-backend")  # type: ignore[union-attr]
    instance = router.instance
    assert instance is not None
    pause = Pause(instance, 1.5)
    router.on_forwarded = Strike(STRIKE_AFTER_EVENTS, pause)
    try:
        slow = speak(deployed_cloud)
    finally:
        router.on_forwarded = None
        pause.join()
    assert pause.timer is not None, "the pause never happened"
    assert (slow.status, slow.error, slow.samples) == (200, "", FULL_SAMPLES)
    assert router.instance is instance and instance.alive()  # slowed, not replaced


def test_slow_network_to_the_backend_still_delivers_every_frame(
        deployed_cloud: LocalCloud) -> None:
    router = deployed_cloud.runner.router("orpheus-backend")  # type: ignore[union-attr]
    router.chunk_delay_s = 0.01
    try:
        slow = speak(deployed_cloud)
    finally:
        router.chunk_delay_s = 0.0
    assert (slow.status, slow.error, slow.samples) == (200, "", FULL_SAMPLES)


def test_both_services_scaled_to_zero_cold_start_on_the_next_request(
        deployed_cloud: LocalCloud) -> None:
    runner = deployed_cloud.runner
    assert runner is not None
    old = {name: runner.instance(name) for name in ("orpheus-backend", "orpheus-frontend")}
    for name in old:
        runner.router(name).retire()  # SIGTERM, as Cloud Run stops an idle instance
    for instance in old.values():
        assert not instance.alive() and instance.running_pids() == set()
    tokens_before = len(runner.issuer.issued)

    fresh = speak(deployed_cloud)
    assert (fresh.status, fresh.error, fresh.samples) == (200, "", FULL_SAMPLES)
    for name, instance in old.items():
        assert runner.instance(name) is not instance and runner.instance(name).alive()
    # The new frontend process fetched its own ID token for the backend.
    assert len(runner.issuer.issued) == tokens_before + 1
