"""The backend's environment contract (design section 3), parsed without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.backend.settings import (
    ALL_LAYERS,
    DEFAULT_MIN_SLOT_CTX,
    ConfigError,
    load_settings,
)


def test_defaults_offload_everything_with_four_slots() -> None:
    settings, notes = load_settings({"MODEL_PATH": "/models/m.gguf"})
    assert settings.model_path == Path("/models/m.gguf")
    assert (settings.port, settings.host) == (1234, "0.0.0.0")
    assert settings.n_gpu_layers == ALL_LAYERS
    assert settings.n_parallel == 4
    assert settings.slot_ctx == 4096
    assert settings.engine == "llama-server"
    assert notes == []


def test_cloud_run_env_is_read() -> None:
    settings, _ = load_settings({
        "MODEL_PATH": "/models/m.gguf", "PORT": "8080", "N_GPU_LAYERS": "20",
        "N_CTX": "16384", "N_PARALLEL": "2", "ORPHEUS_ENGINE": "llama-cpp-python",
        "LLAMA_SERVER_BIN": "/opt/llama-server", "ORPHEUS_BACKEND_HOST": "127.0.0.1",
    })
    assert (settings.port, settings.n_gpu_layers, settings.n_ctx) == (8080, 20, 16384)
    assert (settings.n_parallel, settings.slot_ctx) == (2, 8192)
    assert settings.engine == "llama-cpp-python"
    assert settings.llama_server_bin == "/opt/llama-server"
    assert settings.host == "127.0.0.1"


def test_command_line_engine_wins_over_env() -> None:
    settings, _ = load_settings({"MODEL_PATH": "m.gguf", "ORPHEUS_ENGINE": "llama-server"},
                                engine="llama-cpp-python")
    assert settings.engine == "llama-cpp-python"


@pytest.mark.parametrize("value", ["all", "-1", "ALL"])
def test_all_layers_spellings(value: str) -> None:
    settings, _ = load_settings({"MODEL_PATH": "m.gguf", "N_GPU_LAYERS": value})
    assert settings.n_gpu_layers == ALL_LAYERS


def test_a_context_too_small_for_a_slot_is_raised_and_said() -> None:
    settings, notes = load_settings({"MODEL_PATH": "m.gguf", "N_CTX": "8192", "N_PARALLEL": "4"})
    assert settings.slot_ctx == DEFAULT_MIN_SLOT_CTX
    assert settings.n_ctx == 4 * DEFAULT_MIN_SLOT_CTX
    assert len(notes) == 1 and "N_CTX=8192" in notes[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MODEL_PATH is not set"),
        ({"MODEL_PATH": "  "}, "MODEL_PATH is not set"),
        ({"MODEL_PATH": "m.gguf", "PORT": "http"}, "PORT='http' is not an integer"),
        ({"MODEL_PATH": "m.gguf", "PORT": "70000"}, "not a TCP port"),
        ({"MODEL_PATH": "m.gguf", "N_PARALLEL": "0"}, "N_PARALLEL=0 must be at least 1"),
        ({"MODEL_PATH": "m.gguf", "ORPHEUS_ENGINE": "vllm"}, "must be one of: llama-server"),
        ({"MODEL_PATH": "m.gguf", "MODEL_STAGING": "maybe"}, "MODEL_STAGING='maybe'"),
    ],
)
def test_bad_settings_say_which_and_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env)


def test_threads_default_to_the_engine_and_can_be_set() -> None:
    assert load_settings({"MODEL_PATH": "m.gguf"})[0].n_threads is None
    assert load_settings({"MODEL_PATH": "m.gguf", "N_THREADS": "2"})[0].n_threads == 2
    with pytest.raises(ConfigError, match="N_THREADS=0 must be at least 1"):
        load_settings({"MODEL_PATH": "m.gguf", "N_THREADS": "0"})
