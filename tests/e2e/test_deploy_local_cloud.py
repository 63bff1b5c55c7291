"""Issue 6 acceptance: the whole path without Google.

`orpheus setup`, `upload-model`, `build`, `deploy --all` and `test --key` against the local cloud,
where each ready revision is the real app started from its Dockerfile's command (the backend:
the launcher running llama-server on the uploaded tiny GGUF; the frontend: the FastAPI app with
the key from Secret Manager, calling the backend with real ID tokens through google-auth). Every
name, port, variable and secret the CLI writes into a service spec must be what the apps read,
or a step here fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.orpheus_gguf import DEFAULT_FRAMES
from tests.frontend.audio import SAMPLES_PER_FRAME, assert_speaks, model_pcm, wav_samples

pytestmark = pytest.mark.llama_server

FRONTEND_SA = "orpheus-frontend@test-project.iam.gserviceaccount.com"


def ok(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.everything
    return dict(json.loads(result.stdout))


def test_setup_upload_build_deploy_test_redeploy_destroy(local_cloud: LocalCloud,
                                                         tiny_gguf_q8: Path) -> None:
    lc = local_cloud
    ok(lc.cli("--json", "setup"))
    ok(lc.cli("--json", "upload-model", str(tiny_gguf_q8)))
    ok(lc.cli("--json", "build"))
    deployed = ok(lc.cli("--json", "deploy", "--all"))
    assert deployed["smoke_test"]["ok"] is True, deployed
    assert deployed["playground_url"] == f"{lc.frontend_url}/playground"

    # The services report local URLs: each is a router in front of a running process.
    backend, frontend = lc.service("orpheus-backend"), lc.service("orpheus-frontend")
    assert backend.uri.startswith("http://127.0.0.1:") and frontend.uri.startswith("http://127.0.0.1:")
    runner = lc.runner
    assert runner is not None
    backend_instance = runner.instance("orpheus-backend")
    frontend_instance = runner.instance("orpheus-frontend")
    env = frontend_instance.container.env
    assert env["ORPHEUS_API_URL"] == f"{backend.uri}/v1/completions"
    assert env["ORPHEUS_BACKEND_AUTH"] == "google-id-token"
    # The keys: a file of the secret volume that follows the secret's latest version.
    assert Path(env["API_KEY_FILE"]).read_text() == lc.secret_versions()[-1].decode()
    assert backend_instance.container.env["MODEL_PATH"].endswith(f"/{tiny_gguf_q8.name}")
    assert "step: weights loaded, ready" in backend_instance.log.read_text()

    # `orpheus test --key`: 401 without and with a wrong key, 200 and audio with the right one.
    tested = ok(lc.cli("--json", "test", "--key", lc.api_key))
    assert {c["name"]: c["status"] for c in tested["checks"]} == {
        "no key": 401, "wrong key": 401, "right key": 200}
    assert tested["audio_s"] == pytest.approx(DEFAULT_FRAMES * SAMPLES_PER_FRAME / 24000,
                                              abs=1e-3)

    # The same through the OpenAI SDK: every frame the model generated comes back as audio.
    import openai

    client = openai.OpenAI(base_url=f"{frontend.uri}/v1", api_key=lc.api_key, max_retries=0)
    with client.audio.speech.with_streaming_response.create(
            model="orpheus", voice="tara", input="End to end.", response_format="wav") as resp:
        audio = resp.read()
    assert wav_samples(audio, streaming=True).size == DEFAULT_FRAMES * SAMPLES_PER_FRAME

    # The backend took only ID tokens for its own URL, for the frontend's account.
    issued = runner.issuer.issued
    assert issued and {(t["aud"], t["email"]) for t in issued} == {(backend.uri, FRONTEND_SA)}
    # Internal ingress: from outside the VPC nothing gets in, with or without a token.
    outside = httpx.post(f"{backend.uri}/v1/completions", json={"prompt": "x"}, timeout=10)
    assert outside.status_code == 404
    # And the frontend's own URL is public but still needs the key.
    assert httpx.get(f"{frontend.uri}/v1/models", timeout=10).status_code == 401

    # A second deploy finds everything as desired: not one mutating call, same processes.
    lc.cloud.clear_log()
    again = ok(lc.cli("--json", "deploy", "--all"))
    assert again["smoke_test"]["ok"] is True
    assert [repr(c) for c in lc.cloud.mutating_calls()] == []
    assert runner.instance("orpheus-backend") is backend_instance
    assert runner.instance("orpheus-frontend") is frontend_instance
    assert backend_instance.alive() and frontend_instance.alive()

    # Destroy: the services are deleted, their processes are gone, their URLs refuse.
    ok(lc.cli("--json", "--yes", "destroy"))
    assert lc.service("orpheus-backend") is None and lc.service("orpheus-frontend") is None
    assert runner.routers == {}
    assert runner.leftover_pids() == set()
    assert not backend_instance.alive() and not frontend_instance.alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{frontend.uri}/health", timeout=5)
    # The model and the key are kept (destroy keeps the bucket unless --delete-model).
    assert lc.model_object(tiny_gguf_q8.name) is not None


def test_two_models_deployed_each_voice_spoken_by_its_own(local_cloud: LocalCloud,
                                                          tiny_gguf_factory: Any,
                                                          tiny_snac_decoder: Any) -> None:
    """Issue 14: a second language registered with its voices; one deploy serves both through
    llama-server's router, and each voice is spoken by its own model."""
    lc = local_cloud
    french = tiny_gguf_factory("Q8_0", code_offset=1000)
    ok(lc.cli("--json", "setup"))
    ok(lc.cli("--json", "upload-model", str(tiny_gguf_factory("Q8_0"))))
    ok(lc.cli("--json", "upload-model", str(french), "--name", "fr.gguf",
              "--voices", "pierre,amelie,marie", "--language", "fr"))
    deployed = ok(lc.cli("--json", "deploy", "--all"))
    assert deployed["smoke_test"]["ok"] is True
    backend = lc.runner.instance("orpheus-backend") if lc.runner else None
    assert backend is not None and "MODEL_FILES" in backend.container.env

    import openai

    frontend = lc.service("orpheus-frontend")
    client = openai.OpenAI(base_url=f"{frontend.uri}/v1", api_key=lc.api_key, max_retries=0)
    voices = client.get("/audio/voices", cast_to=object)
    assert {d["id"]: d["model"] for d in voices["details"]}["pierre"] == "fr"
    for voice, offset in (("pierre", 1000), ("tara", 0)):
        with client.audio.speech.with_streaming_response.create(
                model="orpheus", voice=voice, input="Bonjour.", response_format="pcm") as resp:
            audio = np.frombuffer(resp.read(), dtype="<i2")
        expected = model_pcm(tiny_snac_decoder, DEFAULT_FRAMES, offset)
        assert_speaks(audio, expected)
    log = backend.log.read_text()
    assert "step: default model orpheus loaded, ready" in log and "model fr: loaded in" in log

    # `status` learns from the frontend what the GPU holds now (both fit: models_max 3).
    status = ok(lc.cli("--json", "status"))
    assert {m["name"]: m["resident"] for m in status["models"]} == {"orpheus": "loaded",
                                                                     "fr": "loaded"}
