"""The backend image's build stage, checked against the pinned source it compiles.

No Docker engine runs here, so the CUDA build itself cannot run; what can be checked is that it
asks the pinned llama.cpp for options that llama.cpp has, and installs what the build needs.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.dockerfile import stage_instructions
from tests.fixtures.llama_build import build_cache
from tests.fixtures.plugin_llama import LLAMA_CPP_PYTHON_VERSION

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "runtime" / "backend" / "Dockerfile"


@pytest.fixture(scope="module")
def build() -> list[tuple[str, str]]:
    return stage_instructions(DOCKERFILE, "build")


def _arg(build: list[tuple[str, str]], name: str) -> str:
    for keyword, rest in build:
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.partition("=")[2]
    raise KeyError(name)


def _cmake_configure(build: list[tuple[str, str]]) -> list[str]:
    for keyword, rest in build:
        if keyword == "RUN" and rest.startswith("cmake -S"):
            return shlex.split(rest.split("&&")[0])
    raise AssertionError("no cmake configure step in the build stage")


def test_the_build_stage_installs_a_compiler_and_make(build: list[tuple[str, str]]) -> None:
    # cmake only *recommends* gcc and make, and the install uses --no-install-recommends.
    installs = " ".join(rest for kw, rest in build if kw == "RUN" and "apt-get install" in rest)
    assert "--no-install-recommends" in installs
    assert "build-essential" in installs.split()


@pytest.fixture(scope="module")
def sdist() -> Path:
    path = build_cache() / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not path.is_file():
        pytest.skip("the pinned sdist is not downloaded: run .ci/build_llama.sh")
    return path


def test_the_image_builds_the_archive_ci_tests(build: list[tuple[str, str]], sdist: Path) -> None:
    assert _arg(build, "LLAMA_CPP_PYTHON_VERSION") == LLAMA_CPP_PYTHON_VERSION
    assert _arg(build, "LLAMA_CPP_PYTHON_SHA256") == hashlib.sha256(sdist.read_bytes()).hexdigest()


def test_every_cmake_option_exists_in_the_pinned_llama_cpp(
    build: list[tuple[str, str]], sdist: Path
) -> None:
    """A misspelt or retired option is silently ignored by CMake (a warning at most), so an
    "off" switch that does nothing would only show as a surprise in the built image."""
    with tarfile.open(sdist) as tar:
        cmake_text = "\n".join(
            tar.extractfile(member).read().decode(errors="replace")  # type: ignore[union-attr]
            for member in tar.getmembers()
            if "/vendor/llama.cpp/" in member.name and member.isfile()
            and (member.name.endswith("CMakeLists.txt") or member.name.endswith(".cmake"))
        )
    deprecated = set(re.findall(r"llama_option_depr\(\s*\w+\s+(\w+)", cmake_text))
    argv = _cmake_configure(build)
    options = [a[2:].partition("=")[0] for a in argv if a.startswith("-D")]
    assert {"GGML_CUDA", "LLAMA_USE_PREBUILT_UI", "LLAMA_OPENSSL"} <= set(options)
    for name in options:
        if name.startswith("CMAKE_") or name == "BUILD_SHARED_LIBS":
            continue  # CMake's own variables
        assert name not in deprecated, f"-D{name}: deprecated in the pinned llama.cpp"
        declared = re.search(rf"(option|set)\(\s*{name}\b", cmake_text)
        assert declared, f"-D{name}: no such option in the pinned llama.cpp"
    assert "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" in argv
    assert _arg(build, "CUDA_ARCHITECTURES") == "89-real"  # the L4 (compute capability 8.9)


# Switches that compile instructions beyond the x86-64-v3 baseline (or the build machine's own).
_CPU_SPECIFIC = re.compile(r"-DGGML_(NATIVE=ON|AVX512\w*|AVX_VNNI|AMX\w*|AVXVNNI\w*)\b")


def test_every_llama_cpp_build_is_portable(build: list[tuple[str, str]]) -> None:
    """The build machine's CPU is not the run machine's (issue 10: SIGILL on AMD CI machines)."""
    configure = " ".join(_cmake_configure(build))
    assert "-DGGML_NATIVE=OFF" in configure
    assert not _CPU_SPECIFIC.search(configure), configure
    for script in (REPO / ".ci" / "build_llama.sh", REPO / "bench" / "gpu_backend.sh"):
        text = script.read_text()
        assert "-DGGML_NATIVE=OFF" in text, script
        assert not _CPU_SPECIFIC.search(text), f"{script}: {_CPU_SPECIFIC.search(text)}"


def test_base_images_are_pinned_by_digest() -> None:
    for dockerfile in (DOCKERFILE, REPO / "runtime" / "frontend" / "Dockerfile"):
        images = re.findall(r"^ARG \w+_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
        assert images, dockerfile
        for image in images:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_cuda_compile_parallelism_follows_memory(build: list[tuple[str, str]]) -> None:
    compile_step = next(rest for kw, rest in build if kw == "RUN" and "cmake --build" in rest)
    assert "MemTotal" in compile_step
    assert '-j "$(nproc)"' not in compile_step
