"""The engines' command lines: what production asks of llama-server and llama_cpp.server."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.backend.engines import (
    EngineError,
    find_llama_server,
    llama_cpp_python_command,
    llama_server_command,
)
from runtime.backend.settings import load_settings

MODEL = Path("/models/Orpheus-3b-FT-Q8_0.gguf")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_llama_server_gets_full_offload_slots_and_no_mmap(llama_server_bin: Path) -> None:
    settings, _ = load_settings({"MODEL_PATH": str(MODEL), "PORT": "8080", "N_PARALLEL": "4",
                                 "N_CTX": "16384"})
    command = llama_server_command(settings, MODEL, str(llama_server_bin))
    argv = command.argv
    assert argv[0] == str(llama_server_bin)
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("0.0.0.0", "8080")
    assert _flag(argv, "--n-gpu-layers") == "999"
    assert (_flag(argv, "--parallel"), _flag(argv, "--ctx-size")) == ("4", "16384")
    assert "--cont-batching" in argv
    # The pinned llama.cpp has no --no-mmap; its help lists --load-mode.
    assert _flag(argv, "--load-mode") == "none"
    assert "--threads" not in argv  # the engine's default unless N_THREADS says otherwise
    assert command.health_path == "/health"


def test_threads_when_asked(llama_server_bin: Path) -> None:
    settings, _ = load_settings({"MODEL_PATH": str(MODEL), "N_THREADS": "3"})
    assert _flag(llama_server_command(settings, MODEL, str(llama_server_bin)).argv,
                 "--threads") == "3"
    assert _flag(llama_cpp_python_command(settings, MODEL).argv, "--n_threads") == "3"


def test_llama_cpp_python_gets_one_slot_of_the_same_size() -> None:
    settings, _ = load_settings({"MODEL_PATH": str(MODEL), "N_PARALLEL": "4", "N_CTX": "16384"})
    command = llama_cpp_python_command(settings, MODEL)
    argv = command.argv
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert _flag(argv, "--n_ctx") == "4096"
    assert _flag(argv, "--use_mmap") == "False"
    assert _flag(argv, "--interrupt_requests") == "False"
    assert command.health_path == "/v1/models"


def test_llama_server_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="llama-server was not found on PATH"):
        find_llama_server(None)
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_llama_server(None) == str(binary)
