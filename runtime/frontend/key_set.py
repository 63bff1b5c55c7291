"""The API keys as they are stored: one Secret Manager secret whose latest version is the whole
set of named keys, as a small JSON document.

    {"format": "orpheus-api-keys/1",
     "keys": [{"name": "default", "key": "ok_…", "created": "2026-11-30T10:00:00Z"},
              {"name": "old-ci", "last4": "x9Qa", "created": "…", "revoked": "…"}]}

Why one secret holding the whole set, rather than one secret per key: the frontend mounts that
secret as a file that references ``latest``, so creating or revoking a key is one new version
that every running instance picks up by re-reading the file (key_store.py); a secret per key
would need a new volume, i.e. a redeploy, for every new key. Why the keys themselves rather than
hashes: the CLI's smoke test (and anything that calls the service for the operator) reads a
usable key from the same secret; Secret Manager is the vault, and each read is audited. A revoked
key stays in the document as a tombstone without its key (name, last four characters, times) so
that `orpheus keys revoke` can say "already revoked" and `list` can show history.

The payload of a deployment from before named keys is one key, or several separated by commas
(API_KEY_SECRET's old format): it reads as keys named "default", "key-2", "key-3", ... A set that
is only the "default" key is still stored that way. A key can never start with "{" (setup's
alphabet), so the two formats cannot be confused.

Nothing here prints or logs a key: errors name the problem and never quote the content, and the
reprs leave the keys out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

__all__ = ["FORMAT", "KeySet", "KeySetError", "NamedKey", "validate_name"]

FORMAT = "orpheus-api-keys/1"
DEFAULT_NAME = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


class KeySetError(ValueError):
    """A malformed key document or a change that cannot be made; the message has no key in it."""


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeySetError(f"{name!r} is not a valid key name: use 1-40 lowercase letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class NamedKey:
    name: str
    key: str | None  # None once revoked
    created: str | None = None  # RFC 3339, UTC; None for keys from the old comma format
    revoked: str | None = None
    tail: str = ""  # the last four characters, kept after revocation

    @property
    def active(self) -> bool:
        return self.key is not None and self.revoked is None

    @property
    def last4(self) -> str:
        return self.key[-4:] if self.key else self.tail

    def __repr__(self) -> str:  # never show the key, even in a traceback
        state = "active" if self.active else "revoked"
        return f"NamedKey(name={self.name!r}, {state}, last4={self.last4!r})"


@dataclass(frozen=True)
class KeySet:
    keys: tuple[NamedKey, ...] = ()

    # -- reading -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> KeySet:
        """The document, or the old comma-separated list."""
        body = text.strip()
        if not body.startswith("{"):
            raw = [k.strip() for k in body.split(",") if k.strip()]
            return cls(tuple(NamedKey(DEFAULT_NAME if i == 0 else f"key-{i + 1}", k)
                             for i, k in enumerate(raw)))
        try:
            document = json.loads(body)
        except ValueError:
            raise KeySetError("the key document is not valid JSON") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise KeySetError(f"the key document is not in the {FORMAT} format")
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise KeySetError("the key document has no list of keys")
        keys = []
        for i, item in enumerate(entries):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KeySetError(f"key entry {i} has no name")
            key = item.get("key")
            if key is not None and (not isinstance(key, str) or not key):
                raise KeySetError(f"key {item['name']!r} is not a string")
            keys.append(NamedKey(item["name"], key, item.get("created"), item.get("revoked"),
                                 str(item.get("last4", ""))))
        names = [k.name for k in keys if k.active]
        if len(set(names)) != len(names):
            raise KeySetError("the key document names a key twice")
        return cls(tuple(keys))

    @property
    def active(self) -> tuple[NamedKey, ...]:
        return tuple(k for k in self.keys if k.active)

    def get(self, name: str) -> NamedKey | None:
        """The active key, else the newest tombstone, of that name."""
        for key in self.keys:
            if key.name == name and key.active:
                return key
        revoked = [k for k in self.keys if k.name == name]
        return revoked[-1] if revoked else None

    def named_keys(self) -> tuple[tuple[str, bytes], ...]:
        """What the frontend's key check takes: ``(name, key bytes)`` of every active key."""
        return tuple((k.name, k.key.encode()) for k in self.active if k.key)

    # -- changing (new sets; the stored one changes only by adding a secret version) --------
    def with_created(self, created: str) -> KeySet:
        """Keys from the old format get ``created`` (the secret version's time)."""
        return KeySet(tuple(k if k.created else replace(k, created=created) for k in self.keys))

    def with_key(self, name: str, key: str, created: str) -> KeySet:
        validate_name(name)
        if (current := self.get(name)) is not None and current.active:
            raise KeySetError(f"a key named {name!r} already exists")
        kept = tuple(k for k in self.keys if k.name != name)  # a tombstone of that name goes
        return KeySet((*kept, NamedKey(name, key, created)))

    def without(self, name: str, revoked: str) -> KeySet:
        current = self.get(name)
        if current is None:
            raise KeySetError(f"there is no key named {name!r}")
        if not current.active:
            raise KeySetError(f"the key {name!r} was already revoked ({current.revoked})")
        tombstone = NamedKey(name, None, current.created, revoked, current.last4)
        return KeySet(tuple(tombstone if k is current else k for k in self.keys))

    def replace_key(self, name: str, key: str, created: str) -> KeySet:
        """The key of ``name`` replaced (setup's --rotate-key on "default"), or added."""
        validate_name(name)
        if self.get(name) is None or not self.get(name).active:  # type: ignore[union-attr]
            return self.with_key(name, key, created)
        return KeySet(tuple(replace(k, key=key, created=created) if k.name == name and k.active
                            else k for k in self.keys))

    def dumps(self) -> str:
        """The document; a set that is just one active key named "default" (what `orpheus
        setup` stores) stays the bare key, the format every deployment has used so far."""
        [only] = self.keys if len(self.keys) == 1 else [None]
        if only is not None and only.name == DEFAULT_NAME and only.active and only.key:
            return only.key
        entries = []
        for k in self.keys:
            item: dict[str, str] = {"name": k.name}
            if k.active and k.key:
                item["key"] = k.key
            else:
                item["last4"] = k.last4
            if k.created:
                item["created"] = k.created
            if k.revoked:
                item["revoked"] = k.revoked
            entries.append(item)
        lines = ",\n".join(f"  {json.dumps(item)}" for item in entries)  # a key per line
        return f'{{"format": "{FORMAT}", "keys": [\n{lines}\n]}}\n'

    def __repr__(self) -> str:
        return f"KeySet({list(self.keys)!r})"
