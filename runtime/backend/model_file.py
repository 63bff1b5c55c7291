"""Finding and checking the model file before any server is started.

A server handed a wrong path fails after seconds of start-up noise, or (with a bucket mount that is
not there) keeps a Cloud Run revision crash-looping with an unhelpful log. Checking here gives one
line that says what is wrong and what *is* under the model directory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

GGUF_MAGIC = b"GGUF"
_LISTING_LIMIT = 40


class ModelError(Exception):
    """The model is missing or is not a GGUF file; the message lists what is there instead."""


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def describe_directory(directory: Path) -> str:
    """``'<dir>' contains: a.gguf (3.5 GB), notes.txt (1 KB)``, or why it cannot be listed.

    Walks up to the nearest existing parent so that a wrong mount path still shows something.
    """
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    prefix = "" if probe == directory else f"'{directory}' does not exist; "
    try:
        entries = sorted(probe.iterdir())
    except OSError as exc:
        return f"{prefix}'{probe}' cannot be listed ({exc.strerror or exc})"
    if not entries:
        return f"{prefix}'{probe}' is empty"
    shown = []
    for entry in entries[:_LISTING_LIMIT]:
        try:
            shown.append(f"{entry.name}/" if entry.is_dir() else
                         f"{entry.name} ({_size(entry.stat().st_size)})")
        except OSError:
            shown.append(entry.name)
    more = f", ... ({len(entries) - _LISTING_LIMIT} more)" if len(entries) > _LISTING_LIMIT else ""
    return f"{prefix}'{probe}' contains: {', '.join(shown)}{more}"


def resolve_model(path: Path) -> Path:
    """The GGUF file to load: ``path``, or the only ``.gguf`` in ``path`` if it is a directory.

    Raises ModelError with a listing of the directory when there is no such file or it is not GGUF.
    """
    if path.is_dir():
        ggufs = sorted(p for p in path.iterdir() if p.suffix == ".gguf" and p.is_file())
        if len(ggufs) != 1:
            what = "no .gguf file" if not ggufs else f"{len(ggufs)} .gguf files"
            raise ModelError(
                f"MODEL_PATH={path} is a directory with {what}; set MODEL_PATH to the file. "
                f"{describe_directory(path)}"
            )
        path = ggufs[0]
    if not path.is_file():
        raise ModelError(f"model file not found: {path}. {describe_directory(path.parent)}")
    check_gguf(path)
    return path


def check_gguf(path: Path) -> int:
    """Check the GGUF header; return the format version."""
    try:
        with path.open("rb") as f:
            header = f.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    if len(header) < 8 or header[:4] != GGUF_MAGIC:
        start = header[:4]
        raise ModelError(
            f"{path} is not a GGUF model (it starts with {start!r}, a GGUF file with b'GGUF'; "
            f"{_size(path.stat().st_size)}). {describe_directory(path.parent)}"
        )
    (version,) = struct.unpack("<I", header[4:8])
    if version not in (2, 3):
        raise ModelError(f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3")
    return version


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` lives on (``fuse``, ``ext4``, ``tmpfs``...), or ''."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, fstype = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[2]
    return fstype
