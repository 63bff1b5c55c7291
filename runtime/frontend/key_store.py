"""The keys the frontend accepts right now, re-read while it runs.

On Cloud Run the key secret is mounted as a file that references the secret's ``latest``
version. Google's "Configure secrets" page (cloud.google.com/run/docs/configuring/services/
secrets): "Reading a volume always fetches the secret value from Secret Manager, so it can be
used with the latest version", whereas a secret in an environment variable is "resolved at
instance startup time". So a created or revoked key reaches a running instance the next time it
reads the file, without a redeploy; this store reads it again when the copy it holds is older
than ``ORPHEUS_API_KEY_REFRESH_S`` (30 s by default). That is the bound: a change is in force on
every instance at most that long (plus one read) after `orpheus keys` has written it.

The read happens on the request that finds the copy stale, not on a timer: with request-based
billing Cloud Run gives an instance almost no CPU between requests, so a background timer could
not keep the bound; a check at request time always does. Concurrent requests share one read.
When a read fails (the secret cannot be reached, a malformed document), the last good set stays
in force and the failure is logged, without the file's content, once per interval: a passing
Secret Manager error must not lock every caller out. Revoking every key is refused by the CLI
for the same reason.

With API_KEY_SECRET instead (the local stack, tests, a deployment from before this), the set is
fixed for the life of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from runtime.frontend.key_set import KeySet, KeySetError

__all__ = ["KeyStore", "NamedKeys", "read_key_file"]

log = logging.getLogger("orpheus.frontend.keys")

NamedKeys = tuple[tuple[str, bytes], ...]


def read_key_file(path: Path) -> NamedKeys:
    """The active keys in ``path``; a KeySetError says why not (never with a key in it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise KeySetError("not UTF-8 text") from None
    except OSError as exc:
        raise KeySetError(exc.strerror or str(exc)) from None
    keys = KeySet.parse(text).named_keys()
    if not keys:
        raise KeySetError("the key file holds no active key")
    return keys


class KeyStore:
    def __init__(self, keys: NamedKeys, path: Path | None = None, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._path = path
        self._refresh_s = refresh_s
        self._clock = clock
        self._read_at = clock()
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_file(cls, path: Path, refresh_s: float) -> KeyStore:
        """Read at start-up: an unreadable or empty file is an error here, not a silent 401."""
        return cls(read_key_file(path), path, refresh_s)

    @property
    def keys(self) -> NamedKeys:
        """The set held now (possibly stale; requests use ``current()``)."""
        return self._keys

    async def current(self) -> NamedKeys:
        """The accepted keys, re-read first when the copy is older than the interval."""
        if self._path is None or self._clock() - self._read_at < self._refresh_s:
            return self._keys
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._clock() - self._read_at >= self._refresh_s:  # not done while we waited
                await asyncio.to_thread(self._reload)
        return self._keys

    def _reload(self) -> None:
        assert self._path is not None
        try:
            keys = read_key_file(self._path)
        except KeySetError as exc:
            log.error("cannot re-read the API keys (%s); the %d keys read before stay in force",
                      exc, len(self._keys), extra={"key_file": str(self._path)})
        else:
            before, after = dict(self._keys), dict(keys)
            replaced = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
            if before.keys() != after.keys() or replaced:
                # Names only: they are what the access log shows; the keys never are.
                log.info("API keys changed", extra={
                    "added": sorted(after.keys() - before.keys()),
                    "removed": sorted(before.keys() - after.keys()), "replaced": replaced})
            self._keys = keys
        finally:
            self._read_at = self._clock()
