"""Fair use under load: per-key limits answered with 429 and Retry-After (another key is still
served), and a bounded queue in front of the backend's slots (503, never a hang)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest

from runtime.frontend.limits import BackendSlots, KeyLimits, TooBusy, TooManyRequests
from tests.fixtures.fake_backend import Behavior

BODY = {"model": "orpheus", "input": "Fair share.", "voice": "tara", "response_format": "pcm"}
KEY_A, KEY_B = "sk-limits-a", "sk-limits-b"
LONG = Behavior.stream(2000, tokens_per_second=200)  # 70 s unless the client leaves


def post(app, key: str, timeout: float | httpx.Timeout = 30) -> httpx.Response:
    return httpx.post(f"{app.base_url}/v1/audio/speech", headers={"X-API-Key": key},
                      json=BODY, timeout=timeout)


def assert_limited(response: httpx.Response, code: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("requests", code)
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


@contextmanager
def streaming(app, key: str) -> Iterator[httpx.Response]:
    """A speech response that has started (first audio read) and is still streaming."""
    with httpx.stream("POST", f"{app.base_url}/v1/audio/speech", headers={"X-API-Key": key},
                      json=BODY, timeout=30) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # kept: a discarded iterator would close the connection
        next(chunks)
        yield response


def test_requests_per_minute_per_key(frontend_factory, fake_backend):
    app = frontend_factory(API_KEY_SECRET=f"{KEY_A},{KEY_B}",
                           ORPHEUS_KEY_REQUESTS_PER_MINUTE="2")
    assert post(app, KEY_A).status_code == 200
    assert post(app, KEY_A).status_code == 200
    retry_after = assert_limited(post(app, KEY_A), "rate_limit_exceeded")
    assert 20 <= retry_after <= 31  # a token comes back every 30 s
    assert len(fake_backend.completions) == 2  # the refused request cost the backend nothing
    assert post(app, KEY_B).status_code == 200  # the other key is served
    # The OpenAI SDK sees its RateLimitError (and would honour Retry-After when retrying).
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=f"{app.base_url}/v1", api_key=KEY_A, max_retries=0) \
            .audio.speech.create(model="orpheus", voice="tara", input="Again.")


def test_concurrent_streams_per_key(frontend_factory, fake_backend):
    app = frontend_factory(API_KEY_SECRET=f"{KEY_A},{KEY_B}", ORPHEUS_KEY_MAX_STREAMS="1")
    fake_backend.script(LONG)
    with streaming(app, KEY_A):
        assert_limited(post(app, KEY_A), "concurrency_limit_exceeded")
        assert post(app, KEY_B).status_code == 200  # served while A holds its one stream
    # A's stream ended with the response: A may start another.
    wait_until(lambda: not app.app.state.key_limits.streams("default"))
    assert post(app, KEY_A).status_code == 200


def test_a_full_queue_or_a_wait_that_runs_out_is_503_never_a_hang(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_BACKEND_SLOTS="1", ORPHEUS_QUEUE_SIZE="1",
                           ORPHEUS_QUEUE_TIMEOUT="1.5")
    slots: BackendSlots = app.app.state.backend_slots
    fake_backend.script(LONG)
    with streaming(app, app.api_key):
        queued: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: queued.append(post(app, app.api_key)))
        waiter.start()
        wait_until(lambda: slots.waiting == 1)
        full = post(app, app.api_key)  # the queue holds one: this one is refused at once
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "queue_full"
        assert "ORPHEUS_QUEUE_SIZE" in full.json()["error"]["message"]
        assert int(full.headers["retry-after"]) >= 1
        waiter.join(20)
        (timed_out,) = queued
        assert timed_out.status_code == 503
        assert timed_out.json()["error"]["code"] == "queue_timeout"
        assert "1.5 s" in timed_out.json()["error"]["message"]
        # Nothing piled onto the backend: it only ever saw the stream holding the slot.
        assert len(fake_backend.completions) == 1
    wait_until(lambda: slots.busy == 0)
    assert post(app, app.api_key).status_code == 200  # the slot is free again


def test_a_queued_client_that_hangs_up_leaves_the_queue(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_BACKEND_SLOTS="1", ORPHEUS_QUEUE_TIMEOUT="60")
    slots: BackendSlots = app.app.state.backend_slots
    fake_backend.script(LONG)
    with streaming(app, app.api_key):
        with pytest.raises(httpx.ReadTimeout):
            post(app, app.api_key, timeout=httpx.Timeout(30, read=0.5))
        wait_until(lambda: slots.waiting == 0)
        assert len(fake_backend.completions) == 1
    wait_until(lambda: slots.busy == 0)


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- the pieces, without a server ---------------------------------------------------------------

def test_token_bucket_refills_continuously():
    now = [0.0]
    limits = KeyLimits(requests_per_minute=60, clock=lambda: now[0])
    for _ in range(60):  # a minute's worth at once
        limits.admit("k").release()
    with pytest.raises(TooManyRequests) as caught:
        limits.admit("k")
    assert caught.value.retry_after == 1
    now[0] += 1.0
    limits.admit("k").release()
    limits.admit("other").release()  # every key has its own bucket


def test_slots_go_first_come_first_served_and_cancelled_waiters_leave():
    async def scenario() -> None:
        slots = BackendSlots(1, queue_size=5, queue_timeout=10)
        held = await slots.acquire()
        order: list[str] = []

        async def wait(name: str) -> None:
            lease = await slots.acquire()
            order.append(name)
            await asyncio.sleep(0.01)
            lease.release()

        tasks = {name: asyncio.create_task(wait(name)) for name in ("b", "c", "d")}
        await asyncio.sleep(0.01)
        assert slots.waiting == 3
        tasks["c"].cancel()  # a client that left while queued
        await asyncio.sleep(0.01)
        assert slots.waiting == 2
        held.release()
        await asyncio.gather(tasks["b"], tasks["d"])
        assert order == ["b", "d"]
        assert (slots.busy, slots.waiting) == (0, 0)
        held.release()  # releasing twice changes nothing
        assert slots.busy == 0

        no_queue = BackendSlots(1, queue_size=0, queue_timeout=1)
        await no_queue.acquire()
        with pytest.raises(TooBusy) as full:
            await no_queue.acquire()
        assert full.value.code == "queue_full"
        short = BackendSlots(1, queue_size=1, queue_timeout=0.05)
        await short.acquire()
        with pytest.raises(TooBusy) as late:
            await short.acquire()
        assert late.value.code == "queue_timeout" and short.waiting == 0

    asyncio.run(scenario())
