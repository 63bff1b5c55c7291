"""The backend image's build stage, checked against the pinned source it compiles.

No Docker engine runs here, so the CUDA build itself cannot run; what can be checked is that it
asks the pinned llama.cpp for options that llama.cpp has, and installs what the build needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.dockerfile import stage_instructions

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "runtime" / "backend" / "Dockerfile"


@pytest.fixture(scope="module")
def build() -> list[tuple[str, str]]:
    return stage_instructions(DOCKERFILE, "build")


def test_the_build_stage_installs_a_compiler_and_make(build: list[tuple[str, str]]) -> None:
    # cmake only *recommends* gcc and make, and the install uses --no-install-recommends.
    installs = " ".join(rest for kw, rest in build if kw == "RUN" and "apt-get install" in rest)
    assert "--no-install-recommends" in installs
    assert "build-essential" in installs.split()
