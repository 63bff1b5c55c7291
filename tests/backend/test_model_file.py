"""Finding and checking the model before a server starts: the messages a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.backend.model_file import (
    ModelError,
    check_gguf,
    describe_directory,
    filesystem_type,
    resolve_model,
)


def test_the_tiny_model_is_gguf_v3(tiny_gguf_q8: Path) -> None:
    assert check_gguf(tiny_gguf_q8) == 3
    assert resolve_model(tiny_gguf_q8) == tiny_gguf_q8


def test_a_directory_with_one_gguf_resolves_to_it(tmp_path: Path, tiny_gguf_q8: Path) -> None:
    (tmp_path / "model.gguf").symlink_to(tiny_gguf_q8)
    (tmp_path / "README.md").write_text("notes")
    assert resolve_model(tmp_path) == tmp_path / "model.gguf"


def test_missing_file_lists_the_directory(tmp_path: Path) -> None:
    (tmp_path / "Orpheus-3b-FT-Q4_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ModelError) as err:
        resolve_model(tmp_path / "Orpheus-3b-FT-Q8_0.gguf")
    message = str(err.value)
    assert "model file not found" in message
    assert "Orpheus-3b-FT-Q4_K_M.gguf (8 B)" in message


def test_missing_directory_lists_the_nearest_parent(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ModelError, match=r"does not exist.*contains: elsewhere/"):
        resolve_model(tmp_path / "models" / "m.gguf")


def test_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>Access denied</html>")
    with pytest.raises(ModelError, match=r"not a GGUF model \(it starts with b'<htm'"):
        resolve_model(bad)


def test_empty_file_is_not_gguf(tmp_path: Path) -> None:
    empty = tmp_path / "model.gguf"
    empty.touch()
    with pytest.raises(ModelError, match="not a GGUF model"):
        check_gguf(empty)


def test_directory_with_several_ggufs_asks_for_the_file(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ModelError, match=r"is a directory with 2 \.gguf files"):
        resolve_model(tmp_path)


def test_long_listings_are_cut(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i:02}").touch()
    assert describe_directory(tmp_path).endswith("(10 more)")


def test_filesystem_type_of_root_is_known() -> None:
    assert filesystem_type(Path("/")) != ""
