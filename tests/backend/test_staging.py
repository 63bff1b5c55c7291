"""The copy to memory-backed disk: byte-exact, atomic, and only where it pays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.backend.staging import is_network_filesystem, parallel_copy, should_stage


def test_parallel_copy_is_byte_exact(tmp_path: Path) -> None:
    source = tmp_path / "src" / "model.gguf"
    source.parent.mkdir()
    data = os.urandom(1_000_003)  # not a multiple of the chunk size
    source.write_bytes(data)
    result = parallel_copy(source, tmp_path / "shm", threads=4, chunk=64 * 1024)
    assert result.path == tmp_path / "shm" / "model.gguf"
    assert result.path.read_bytes() == data
    assert result.size == len(data)
    assert not list((tmp_path / "shm").glob(".*partial"))


def test_a_failed_copy_leaves_no_partial_file(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" * 1000)
    target = tmp_path / "shm"
    target.mkdir()
    (target / "model.gguf").mkdir()  # os.replace onto a directory fails after the copy
    with pytest.raises(OSError):
        parallel_copy(source, target, threads=2, chunk=512)
    assert sorted(p.name for p in target.iterdir()) == ["model.gguf"]
    assert (target / "model.gguf").is_dir()


@pytest.mark.parametrize(
    ("mode", "fstype", "expected"),
    [
        ("auto", "fuse.gcsfuse", True),
        ("auto", "fuse", True),
        ("auto", "nfs4", True),
        ("auto", "ext4", False),
        ("auto", "overlay", False),
        ("always", "ext4", True),
        ("never", "fuse", False),
    ],
)
def test_should_stage(tmp_path: Path, mode: str, fstype: str, expected: bool) -> None:
    stage, why = should_stage(mode, fstype, 1000, tmp_path)
    assert stage is expected
    assert why


def test_no_staging_without_room(tmp_path: Path) -> None:
    stage, why = should_stage("always", "fuse", 10**18, tmp_path)
    assert not stage
    assert "GB free" in why


def test_network_filesystems() -> None:
    assert is_network_filesystem("fuse.gcsfuse")
    assert not is_network_filesystem("tmpfs")
