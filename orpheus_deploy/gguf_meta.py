"""The dimensions of a GGUF model that decide its GPU memory, read from the file's header.

Standard library only, so that `upload-model` can record them before sending a byte and the CLI
needs neither numpy nor the ``gguf`` package. A GGUF file starts with a key/value section
(``general.architecture``, ``llama.block_count``, ...) before the tensors; only that section is
read, skipping over the tokenizer's 157k-entry arrays without keeping them.

Format (GGUF versions 2 and 3, little-endian): magic ``GGUF``, u32 version, u64 tensor count,
u64 key/value count, then per key: a u64-length UTF-8 name, a u32 value type, the value.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from orpheus_deploy.errors import InputError

# Value types of the GGUF key/value section: struct format of the fixed-size ones.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING = 8
_ARRAY = 9
# A header this large is not a model header: stop rather than read a corrupt length for ever.
_MAX_STRING = 1 << 20


@dataclass(frozen=True)
class GgufDims:
    """What the KV cache and the weights' size depend on."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int  # per head
    value_length: int  # per head
    n_ctx_train: int
    n_vocab: int

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """K and V of one token in every layer, with llama.cpp's default F16 cache."""
        return self.n_layer * self.n_head_kv * (self.key_length + self.value_length) \
            * bytes_per_element

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GgufDims | None:
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


# Orpheus 3B is a Llama-3.2-3B fine-tune; every released language model shares these dimensions.
# Used for a model recorded before dimensions were (an older state file), and said so.
ORPHEUS_3B = GgufDims(architecture="llama", n_layer=28, n_embd=3072, n_head=24, n_head_kv=8,
                      key_length=128, value_length=128, n_ctx_train=131072, n_vocab=156940)


def read_dims(path: Path) -> GgufDims | None:
    """The model's dimensions, None when its header does not describe a language model (the
    budget then assumes Orpheus 3B's and says so); InputError if the header is damaged."""
    try:
        with path.open("rb") as f:
            meta = _read_metadata(f)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} has a damaged GGUF header ({exc})",
                         "re-download or re-convert the model") from None
    arch = str(meta.get("general.architecture", ""))

    def number(key: str, default: int | None = None) -> int | None:
        value = meta.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer values (some architectures): the largest counts
            value = max(value) if value else default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return int(value)

    n_embd, n_head, n_layer = (number("embedding_length"), number("attention.head_count"),
                               number("block_count"))
    if not (n_embd and n_head and n_layer):
        return None
    head_dim = n_embd // n_head
    n_head_kv = number("attention.head_count_kv", n_head) or n_head
    tokens = meta.get("tokenizer.ggml.tokens")
    return GgufDims(
        architecture=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        key_length=number("attention.key_length", head_dim) or head_dim,
        value_length=number("attention.value_length", head_dim) or head_dim,
        n_ctx_train=number("context_length", 0) or 0,
        n_vocab=tokens if isinstance(tokens, int) else 0,
    )


def _read_metadata(f: BinaryIO) -> dict[str, Any]:
    magic, version = struct.unpack("<4sI", f.read(8))
    if magic != b"GGUF":
        raise ValueError("not a GGUF file")
    if version not in (2, 3):
        return {}  # a layout this reader does not know: no dimensions (the budget assumes)
    _tensors, count = struct.unpack("<QQ", f.read(16))
    out: dict[str, Any] = {}
    for _ in range(count):
        key = _string(f)
        (kind,) = struct.unpack("<I", f.read(4))
        # Arrays of strings (the vocabulary) are only counted: their length is what matters.
        out[key] = _value(f, kind, keep_strings=not key.startswith("tokenizer."))
    return out


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    if length > _MAX_STRING:
        raise ValueError(f"a header string of {length} bytes")
    return f.read(length).decode("utf-8")


def _value(f: BinaryIO, kind: int, keep_strings: bool = True) -> Any:
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind, n = struct.unpack("<IQ", f.read(12))
        if item_kind in _SCALARS and n > 64:
            f.seek(n * struct.calcsize("<" + _SCALARS[item_kind]), 1)  # e.g. token scores
            return n
        if item_kind == _STRING and not keep_strings:
            for _ in range(n):
                (length,) = struct.unpack("<Q", f.read(8))
                f.seek(length, 1)
            return n
        return [_value(f, item_kind) for _ in range(n)]
    raise ValueError(f"unknown GGUF value type {kind}")
