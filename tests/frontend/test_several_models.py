"""Several models behind one frontend (issue 14), against the real llama-server router.

The backend is the launcher (`python -m runtime.backend`) with the manifest's environment: two
tiny fixture GGUFs whose frames differ (``code_offset``), at most one on the "GPU" at a time, so
every change of language is a real unload and load. The frontend gets ORPHEUS_MODELS as the
CLI renders it. What comes back is decoded audio, compared with the SNAC decode of each model's
own frames: a voice that reached the wrong model would sound like the other one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from orpheus_deploy.models import ModelEntry, frontend_models_env
from runtime.backend.router import model_states
from tests.fixtures.orpheus_gguf import DEFAULT_FRAMES
from tests.fixtures.plugin_llama import free_port, spawn, stop
from tests.frontend.audio import SAMPLES_PER_FRAME, model_pcm, pcm_samples

pytestmark = pytest.mark.llama_server

REPO = Path(__file__).resolve().parents[2]
FR_OFFSET = 1000
FRENCH = ("pierre", "amelie", "marie")
MANIFEST = [ModelEntry(name="orpheus", object="en.gguf", default=True),
            ModelEntry(name="orpheus-fr", object="fr.gguf", language="fr", voices=FRENCH)]


@pytest.fixture(scope="module")
def router(llama_server_bin: Path, tiny_gguf_factory: Callable[..., Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The backend launcher serving both models; base URL. MODELS_MAX=1: one resident."""
    tmp = tmp_path_factory.mktemp("router")
    models = tmp / "models"
    models.mkdir()
    (models / "en.gguf").symlink_to(tiny_gguf_factory("Q8_0"))
    (models / "fr.gguf").symlink_to(tiny_gguf_factory("Q8_0", code_offset=FR_OFFSET))
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "PORT": str(port),
           "ORPHEUS_BACKEND_HOST": "127.0.0.1", "LLAMA_SERVER_BIN": str(llama_server_bin),
           "MODEL_PATH": str(models / "en.gguf"), "MODELS_DIR": str(models),
           "MODEL_FILES": json.dumps({m.name: m.object for m in MANIFEST}), "MODELS_MAX": "1",
           "N_CTX": "5120", "N_PARALLEL": "2", "N_THREADS": "1"}
    log = tmp / "backend.log"
    process = spawn([sys.executable, "-m", "runtime.backend"], log, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while (model_states(port) or {}).get("orpheus") != _loaded():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def _loaded() -> Any:
    from runtime.backend.router import ModelState

    return ModelState("loaded")


@pytest.fixture
def app(router: str, frontend_factory: Callable[..., Any]) -> Any:
    return frontend_factory(ORPHEUS_API_URL=f"{router}/v1/completions",
                            ORPHEUS_MODELS=frontend_models_env(MANIFEST),
                            ORPHEUS_MAX_TOKENS="200", ORPHEUS_API_TIMEOUT="60",
                            # Exact audio from the first sample, to compare with each model's
                            # whole decode (the fast start's first 21 ms are approximate).
                            ORPHEUS_FAST_START="false")


def speak(app: Any, voice: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{app.base_url}/v1/audio/speech", headers=app.headers(), timeout=90,
                      json={"input": "Bonjour, hello.", "voice": voice,
                            "response_format": "pcm", **body})


def test_each_voice_reaches_its_own_model(app: Any, tiny_snac_decoder: Any) -> None:
    english = model_pcm(tiny_snac_decoder, DEFAULT_FRAMES)
    french = model_pcm(tiny_snac_decoder, DEFAULT_FRAMES, FR_OFFSET)
    assert np.abs(english.astype(int) - french).max() > 1000  # the two are told apart
    for voice, expected in (("pierre", french), ("tara", english), ("Amelie", french),
                            ("zoe", english)):
        response = speak(app, voice)
        assert response.status_code == 200, response.text
        audio = pcm_samples(response.content)
        assert audio.size == DEFAULT_FRAMES * SAMPLES_PER_FRAME
        assert np.abs(audio.astype(int) - expected).max() <= 2, voice


def test_the_voices_endpoint_lists_every_voice_with_its_language_and_model(app: Any) -> None:
    body = httpx.get(f"{app.base_url}/v1/audio/voices", headers=app.headers()).json()
    assert body["voices"][:8] == ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]
    assert body["voices"][8:] == list(FRENCH) and body["default"] == "tara"
    assert "<laugh>" in body["emotion_tags"]
    details = {d["id"]: (d["language"], d["model"]) for d in body["details"]}
    assert details["marie"] == ("fr", "orpheus-fr") and details["leo"] == ("en", "orpheus")
    assert len(details) == 11


def test_an_unknown_voice_is_a_400_that_lists_the_valid_ones(app: Any) -> None:
    response = speak(app, "jacques")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("voice", "invalid_voice")
    assert error["message"].startswith("unknown voice 'jacques'; valid voices: tara, ")
    assert all(v in error["message"] for v in (*FRENCH, "zoe"))
    # A model named explicitly must be the one that speaks the voice.
    wrong = speak(app, "tara", model="orpheus-fr")
    assert wrong.status_code == 400
    assert "spoken by model 'orpheus', not 'orpheus-fr'" in wrong.json()["error"]["message"]
    assert speak(app, "marie", model="orpheus-fr").status_code == 200


def test_models_are_listed_with_what_the_gpu_holds(app: Any) -> None:
    def statuses() -> dict[str, tuple[str, str | None, list[str]]]:
        cards = httpx.get(f"{app.base_url}/v1/models", headers=app.headers()).json()["data"]
        return {c["id"]: (c["status"], c["language"], c["voices"]) for c in cards}

    assert {k: v[0] for k, v in statuses().items()} == {"orpheus": "unknown",
                                                        "orpheus-fr": "unknown"}
    assert speak(app, "marie").status_code == 200
    listed = statuses()
    # One model resident at a time (MODELS_MAX=1): French in, English out.
    assert listed["orpheus-fr"] == ("loaded", "fr", list(FRENCH))
    assert listed["orpheus"][0] == "unloaded"


def test_the_access_log_says_how_long_a_model_switch_took(
        app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orpheus.frontend.access")

    def logged() -> dict[str, Any]:
        # The access line is written once the response has ended, just after the client has
        # read the last byte: wait for it.
        deadline = time.monotonic() + 10
        while True:
            found = [r for r in caplog.records if r.name == "orpheus.frontend.access"
                     and getattr(r, "path", "") == "/v1/audio/speech"]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        [record] = found
        caplog.clear()
        return vars(record)

    assert speak(app, "tara").status_code == 200
    logged()
    assert speak(app, "pierre").status_code == 200  # English was resident: French loads
    switch = logged()
    assert switch["model"] == "orpheus-fr" and switch["model_was"] in ("unloaded", "loading")
    assert switch["model_load_ms"] > 0
    assert speak(app, "marie").status_code == 200  # same model: no load, nothing said
    same = logged()
    assert same["model"] == "orpheus-fr" and "model_load_ms" not in same


def test_each_model_gets_its_own_prompt_format(fake_backend: Any,
                                               frontend_factory: Callable[..., Any]) -> None:
    manifest = [MANIFEST[0], ModelEntry(name="mine", object="mine.gguf", voices=("nova",),
                                        prompt="{text}")]
    app = frontend_factory(ORPHEUS_MODELS=frontend_models_env(manifest))
    for voice in ("nova", "leo"):
        assert speak(app, voice, input="Hi {voice} {text}").status_code == 200
    sent = [(r.body["model"], r.body["prompt"]) for r in fake_backend.requests
            if r.path == "/v1/completions"]
    assert sent == [("mine", "<|audio|>Hi {voice} {text}<|eot_id|>"),
                    ("orpheus", "<|audio|>leo: Hi {voice} {text}<|eot_id|>")]
