"""The Cloud Build source archive: .gcloudignore semantics and a reproducible tar."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from orpheus_deploy.build_context import (
    is_excluded,
    is_ignored,
    list_files,
    pack,
    parse_ignore,
    project_root,
)
from orpheus_deploy.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def make_tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")


TREE = [
    "cloudbuild.yaml", "README.md", "notes.txt",
    "runtime/__init__.py", "runtime/backend/Dockerfile", "runtime/backend/launch.py",
    "runtime/backend/__pycache__/launch.cpython-311.pyc", "runtime/frontend/app.py",
    "runtime/frontend/snac.onnx", "runtime/frontend/static/keep.onnx",
    "tests/test_x.py", ".venv/bin/python", "models/big.gguf", "docs/a/b/c.md",
    "build/out.bin", "runtime/build/keep.txt",
]

# Patterns exercising each gitignore rule: anchoring, directory-only, negation, **, classes.
PATTERNS = [
    "# comment", "", "*.gguf", "/build/", "__pycache__/", "*.py[cod]", "docs/**/c.md",
    "**/static/*.onnx", "!runtime/frontend/static/keep.onnx", "runtime/frontend/*.onnx",
    "/notes.txt", "tests", ".venv/", "\\#literal", "README.md   ",
]


def git_ignored(root: Path, paths: list[str]) -> set[str]:
    """Oracle: what git itself ignores for the same .gitignore."""
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=root,
                          input="\n".join(paths), capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return set(proc.stdout.split())


def test_matcher_agrees_with_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    make_tree(tmp_path, TREE)
    (tmp_path / ".gitignore").write_text("\n".join(PATTERNS) + "\n")
    rules = parse_ignore(PATTERNS)
    # Ask about every directory and file of the tree; a file under an ignored directory is out.
    candidates = sorted({"/".join(p.split("/")[:i + 1]) for p in TREE
                         for i in range(len(p.split("/")))})
    ours = {p for p in candidates if is_excluded(rules, p, (tmp_path / p).is_dir())}
    assert ours == git_ignored(tmp_path, candidates)
    assert ours  # the table does ignore things


def test_list_files_does_not_reinclude_under_an_excluded_directory(tmp_path: Path) -> None:
    make_tree(tmp_path, ["keep/a.txt", "gone/b.txt"])
    (tmp_path / ".gcloudignore").write_text("gone/\n!gone/b.txt\n")
    assert list_files(tmp_path) == [".gcloudignore", "keep/a.txt"]


def test_include_directive_and_default_without_gcloudignore(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.py", "secret.env", ".git/config", "sub/x.log"])
    (tmp_path / ".gitignore").write_text("*.env\n*.log\n")
    # No .gcloudignore: gcloud's default ignores .git, .gitignore and what .gitignore ignores.
    assert list_files(tmp_path) == ["a.py"]
    (tmp_path / ".gcloudignore").write_text("#!include:.gitignore\n.gcloudignore\n.gitignore\n")
    assert list_files(tmp_path) == [".git/config", "a.py"]


def test_repository_context_is_runtime_and_cloudbuild_only() -> None:
    files = list_files(REPO)
    assert "cloudbuild.yaml" in files
    assert any(f.startswith("runtime/") for f in files)
    outside = [f for f in files if not f.startswith("runtime/") and f != "cloudbuild.yaml"]
    assert outside == []
    assert not any("__pycache__" in f or f.endswith((".gguf", ".onnx", ".pyc")) for f in files)


def test_archive_is_reproducible_and_owned_by_root(tmp_path: Path) -> None:
    make_tree(tmp_path, ["cloudbuild.yaml", "runtime/run.sh", "runtime/app.py", "skip.gguf"])
    (tmp_path / ".gcloudignore").write_text("*.gguf\n.gcloudignore\n")
    os.chmod(tmp_path / "runtime/run.sh", 0o775)
    first = pack(tmp_path)
    # Touching files (new mtimes) and odd permission bits must not change the bytes.
    os.utime(tmp_path / "runtime/app.py", (1, 1))
    os.chmod(tmp_path / "runtime/app.py", 0o600)
    second = pack(tmp_path)
    assert first.data == second.data
    assert first.sha256 == second.sha256
    with tarfile.open(fileobj=io.BytesIO(first.data), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["cloudbuild.yaml", "runtime/app.py", "runtime/run.sh"]
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        modes = {m.name: m.mode for m in members}
        assert modes["runtime/run.sh"] == 0o755
        assert modes["runtime/app.py"] == 0o644
        assert tar.extractfile("runtime/app.py").read() == b"content of runtime/app.py\n"
    (tmp_path / "runtime/app.py").write_text("changed\n")
    assert pack(tmp_path).sha256 != first.sha256


@pytest.mark.parametrize(("pattern", "path", "ignored"), [
    ("*.txt", "a/b/c.txt", True),
    ("/a.txt", "sub/a.txt", False),
    ("a/*.txt", "a/b/c.txt", False),
    ("a/**/c.txt", "a/c.txt", True),
    ("logs/", "logs", True),
    ("f?o", "foo", True),
    ("f?o", "f/o", False),
    ("[!a]bc", "xbc", True),
    ("[!a]bc", "abc", False),
])
def test_single_patterns(pattern: str, path: str, ignored: bool) -> None:
    assert is_ignored(parse_ignore([pattern]), path, is_dir=path == "logs") is ignored


def test_project_root_is_the_checkout_and_never_an_arbitrary_directory(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert project_root() == repo  # tests run from the checkout
    # An installed wheel has no cloudbuild.yaml next to it: refuse rather than pack (and upload)
    # whatever directory happens to be there.
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "runtime").mkdir()
    with pytest.raises(InputError, match="no source tree to build"):
        project_root([tmp_path / "site-packages", tmp_path])
    assert project_root([tmp_path / "site-packages", repo]) == repo
