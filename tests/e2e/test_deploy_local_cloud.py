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
import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.orpheus_gguf import DEFAULT_FRAMES
from tests.frontend.audio import SAMPLES_PER_FRAME, wav_samples

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
    assert env["API_KEY_SECRET"] == lc.api_key  # resolved from Secret Manager, not a copy
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
