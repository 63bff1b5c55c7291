"""Named API keys: the stored document (key_set.py) and the frontend re-reading its key file
(key_store.py), the way it reads Cloud Run's secret volume."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import httpx
import pytest

from runtime.frontend.key_set import KeySet, KeySetError
from runtime.frontend.key_store import KeyStore

CI = "ok_ci-0123456789abcdefghijKLMN"
WEB = "ok_web-9876543210zyxwvutsrqPONM"
NEW = "ok_new-aaaabbbbccccddddeeeeFFFF"
T0 = "2026-11-30T10:00:00Z"


def document(*pairs: tuple[str, str]) -> str:
    keys = KeySet()
    for name, key in pairs:
        keys = keys.with_key(name, key, T0)
    return keys.dumps()


def write_atomically(path: Path, text: str) -> None:
    # A new secret version replaces the whole file at once, never half of it.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- the document -------------------------------------------------------------------------------
def test_document_round_trip_and_tombstones() -> None:
    keys = KeySet.parse(document(("ci", CI), ("web", WEB)))
    assert keys.named_keys() == (("ci", CI.encode()), ("web", WEB.encode()))
    revoked = KeySet.parse(keys.without("ci", "2026-12-01T00:00:00Z").dumps())
    assert revoked.named_keys() == (("web", WEB.encode()),)
    tombstone = revoked.get("ci")
    assert tombstone is not None and not tombstone.active
    assert tombstone.last4 == CI[-4:] and tombstone.revoked == "2026-12-01T00:00:00Z"
    assert CI not in revoked.dumps()  # a revoked key is gone from the document
    # The name can be used again; the tombstone makes way.
    again = revoked.with_key("ci", NEW, T0)
    assert dict(again.named_keys())["ci"] == NEW.encode() and len(again.keys) == 2
    with pytest.raises(KeySetError, match="already revoked"):
        revoked.without("ci", T0)
    with pytest.raises(KeySetError, match="no key named 'nobody'"):
        keys.without("nobody", T0)
    with pytest.raises(KeySetError, match="already exists"):
        keys.with_key("web", NEW, T0)
    rotated = keys.replace_key("ci", NEW, T0)
    assert dict(rotated.named_keys()) == {"ci": NEW.encode(), "web": WEB.encode()}


def test_the_old_comma_separated_payload_reads_as_named_keys() -> None:
    assert KeySet.parse(f" {CI} , {WEB}\n").named_keys() == (
        ("default", CI.encode()), ("key-2", WEB.encode()))


@pytest.mark.parametrize(("text", "message"), [
    ("{" + CI, "not valid JSON"),
    ('{"format": "other", "keys": []}', "format"),
    ('{"format": "orpheus-api-keys/1"}', "no list of keys"),
    ('{"format": "orpheus-api-keys/1", "keys": [{"key": "' + CI + '"}]}', "no name"),
    ('{"format": "orpheus-api-keys/1", "keys": [{"name": "a", "key": "' + CI + '"}, '
     '{"name": "a", "key": "' + WEB + '"}]}', "twice"),
])
def test_malformed_documents_are_refused_without_quoting_them(text: str, message: str) -> None:
    with pytest.raises(KeySetError, match=message) as caught:
        KeySet.parse(text)
    assert CI not in str(caught.value) and WEB not in str(caught.value)


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "has space", "x" * 41, "a/b"])
def test_key_names_are_checked(name: str) -> None:
    with pytest.raises(KeySetError, match="not a valid key name"):
        KeySet().with_key(name, CI, T0)


def test_reprs_never_show_a_key() -> None:
    keys = KeySet.parse(document(("ci", CI)))
    assert CI not in repr(keys) and CI not in repr(keys.active[0])
    assert CI[-4:] in repr(keys)


# -- the store ----------------------------------------------------------------------------------
def test_store_rereads_only_when_stale_and_keeps_the_last_good_set(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture
                                                                    ) -> None:
    path = tmp_path / "keys"
    path.write_text(document(("ci", CI), ("web", WEB)))
    now = [0.0]
    store = KeyStore(KeyStore.from_file(path, 30).keys, path, 30, clock=lambda: now[0])

    async def names() -> list[str]:
        return [name for name, _ in await store.current()]

    write_atomically(path, document(("web", WEB)))
    now[0] = 29.9
    assert asyncio.run(names()) == ["ci", "web"]  # not stale yet: no read
    now[0] = 30.0
    caplog.set_level(logging.INFO, "orpheus.frontend.keys")
    assert asyncio.run(names()) == ["web"]
    [changed] = [r for r in caplog.records if r.getMessage() == "API keys changed"]
    assert changed.__dict__["removed"] == ["ci"] and changed.__dict__["added"] == []

    path.write_text("{broken")
    now[0] = 61.0
    assert asyncio.run(names()) == ["web"]  # a bad read keeps the set in force...
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "not valid JSON" in error.getMessage() and "broken" not in error.getMessage()
    path.unlink()
    now[0] = 62.0
    assert asyncio.run(names()) == ["web"]  # ...and is not retried before the interval
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert CI not in logged and WEB not in logged


def test_concurrent_requests_share_one_read(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(document(("ci", CI)))
    now = [0.0]
    store = KeyStore(KeyStore.from_file(path, 1).keys, path, 1, clock=lambda: now[0])
    reads = []
    original = store._reload

    def counted() -> None:
        reads.append(1)
        time.sleep(0.05)
        original()

    store._reload = counted  # type: ignore[method-assign]
    now[0] = 5.0

    async def many() -> None:
        await asyncio.gather(*(store.current() for _ in range(20)))

    asyncio.run(many())
    assert len(reads) == 1


# -- a served frontend --------------------------------------------------------------------------
def status(frontend, key: str) -> int:  # type: ignore[no-untyped-def]
    return httpx.get(f"{frontend.base_url}/v1/models", headers={"X-API-Key": key}).status_code


def test_revoked_key_fails_within_the_refresh_while_the_other_works(
        frontend_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "keys"
    path.write_text(document(("ci", CI), ("web", WEB)))
    refresh = 0.3
    frontend = frontend_factory(API_KEY_FILE=path, ORPHEUS_API_KEY_REFRESH_S=refresh)
    assert status(frontend, CI) == 200 and status(frontend, WEB) == 200
    assert status(frontend, NEW) == 401

    write_atomically(path, KeySet.parse(path.read_text()).without("ci", T0)
                     .with_key("new", NEW, T0).dumps())
    # Poll up to a generous multiple of the interval (no timing assertion: a loaded machine).
    deadline = time.monotonic() + 50 * refresh
    while status(frontend, CI) != 401 and time.monotonic() < deadline:
        time.sleep(refresh / 3)
    assert status(frontend, CI) == 401
    assert status(frontend, WEB) == 200 and status(frontend, NEW) == 200

    names = [r.__dict__.get("key") for r in caplog.records if r.name == "orpheus.frontend.access"]
    assert {"ci", "web", "new", None} <= set(names)  # the access log records NAMES
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for key in (CI, WEB, NEW):
        assert key not in logged


def test_the_websocket_checks_keys_like_every_other_route(
        frontend_factory, fake_backend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The speech WebSocket uses the app's key store too: while the key file cannot be read (a
    passing Secret Manager error) the last good keys stay in force on the socket as on HTTP, and
    a revoked key is refused there within the same interval."""
    from tests.fixtures.fake_backend import Behavior
    from tests.fixtures.socket_client import Send, converse

    path = tmp_path / "keys"
    path.write_text(document(("ci", CI), ("web", WEB)))
    refresh = 0.3
    frontend = frontend_factory(API_KEY_FILE=path, ORPHEUS_API_KEY_REFRESH_S=refresh)
    fake_backend.default = Behavior.stream(4, tokens_per_second=100)
    url = frontend.base_url.replace("http://", "ws://") + "/v1/audio/speech/stream"

    def socket_close(key: str) -> int | None:
        script = [Send({"type": "start", "response_format": "pcm"}),
                  Send({"type": "text", "text": "Hi."}), Send({"type": "end"})]
        talk = asyncio.run(converse(url, script, headers={"X-API-Key": key}))
        return talk.close_code

    write_atomically(path, '{"format": "orpheus-api-keys/1", "keys": ')  # cut short
    time.sleep(2 * refresh)  # the copy is stale: the next check re-reads, fails, keeps the set
    assert status(frontend, WEB) == 200
    assert socket_close(WEB) == 1000 and socket_close(CI) == 1000

    write_atomically(path, document(("web", WEB)))
    deadline = time.monotonic() + 50 * refresh
    while socket_close(CI) != 4401 and time.monotonic() < deadline:
        time.sleep(refresh / 3)
    assert socket_close(CI) == 4401 and socket_close(WEB) == 1000
