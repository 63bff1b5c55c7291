"""The image's start command, run natively as the Dockerfile runs it.

No Docker engine runs in CI, so the test reads the final stage's WORKDIR, COPY, ENV and CMD from
the Dockerfile (tests/fixtures/dockerfile.py), lays out the same files in a temporary /app, and
runs the same command with the same environment and port. A frontend that imports something the
image does not copy fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.dockerfile import FinalStage, final_stage, lay_out
from tests.fixtures.plugin_llama import free_port
from tests.frontend.audio import SAMPLES_PER_FRAME, wav_samples

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "runtime" / "frontend" / "Dockerfile"
KEY = "sk-container-test-5f1e2d"


@pytest.fixture(scope="module")
def image() -> FinalStage:
    return final_stage(DOCKERFILE)


def test_final_image_is_slim_non_root_and_torch_free(image: FinalStage) -> None:
    assert re.search(r"slim", DOCKERFILE.read_text().split("FROM")[0] + f"FROM {image.base}")
    assert image.values("USER") == ["10001"]
    assert json.loads(image.values("CMD")[0]) == ["python", "-m", "runtime.frontend"]
    assert image.values("WORKDIR") == ["/app"]
    assert image.env["SNAC_MODEL_PATH"] == "/opt/snac/snac_decoder.onnx"
    # Both graphs the export writes (whole and step) reach the final image.
    assert "--from=export /opt/snac/ /opt/snac/" in image.values("COPY")
    requirements = [
        re.split(r"[=<>\[ ]", ln.strip().lower())[0]
        for ln in (ROOT / "runtime/frontend/requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert "fastapi" in requirements and "onnxruntime" in requirements
    assert "torch" not in requirements and "snac" not in requirements
    assert "torch" not in " ".join(image.values("RUN"))
    export = DOCKERFILE.read_text().split("FROM")[1]
    assert "torch==${TORCH_VERSION}" in export and "TORCH_VERSION=2.13.0" in export
    assert "python -m runtime.codec.export_snac --checkpoint" in re.sub(r"\\\n\s*", " ", export)


def test_start_command_serves_requests(image: FinalStage, tmp_path, fake_backend, tiny_snac_onnx):
    app_dir = lay_out(image, ROOT, tmp_path / "image")
    assert not (app_dir / "runtime" / "backend").exists()

    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **image.env,
        # What the Cloud Run service spec and Cloud Run itself set:
        "PORT": str(port),
        "API_KEY_SECRET": KEY,
        "ORPHEUS_API_URL": fake_backend.url,
        "ORPHEUS_BACKEND_AUTH": "none",
        "SNAC_MODEL_PATH": str(tiny_snac_onnx),  # the image's file, built in stage 1
        "ORPHEUS_DEFAULT_FORMAT": "wav",
    }
    argv = list(image.cmd)
    argv[0] = sys.executable  # `python` of the image = this interpreter
    log_path = tmp_path / "frontend.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

        import openai

        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
        with client.audio.speech.with_streaming_response.create(
            model="orpheus",
            voice="tara",
            input="From the container command.",
            response_format="wav",
        ) as response:
            data = response.read()
        assert wav_samples(data, streaming=True).size == 10 * SAMPLES_PER_FRAME
        assert httpx.post(f"{base}/v1/audio/speech", json={"input": "x"}).status_code == 401
        # The playground's files are in the image's layout (the Dockerfile's COPY).
        for path in ("/playground", "/playground/playground.js", "/playground/playground.css"):
            assert httpx.get(f"{base}{path}").status_code == 200, path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    # SIGTERM from Cloud Run is a graceful shutdown (uvicorn re-raises the signal once done).
    assert code in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete." in log_path.read_text()

    # Structured logs: every line is a JSON object; the access line has the request's numbers.
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"severity", "message", "time"} <= set(e) for e in entries)
    access = [e for e in entries if e.get("logger") == "orpheus.frontend.access"]
    speech = next(e for e in access if e["path"] == "/v1/audio/speech" and e["status"] == 200)
    assert speech["severity"] == "INFO"
    assert speech["request_id"] and speech["latency_ms"] > 0 and speech["ttfb_ms"] > 0
    assert speech["audio_seconds"] == pytest.approx(10 * SAMPLES_PER_FRAME / 24000, abs=1e-3)
    assert speech["frames"] == 10 and speech["outcome"] == "complete"
    assert any(e["status"] == 401 for e in access)
    assert KEY not in log_path.read_text()


@pytest.mark.parametrize(
    ("missing", "message"),
    [("API_KEY_SECRET", "API_KEY_SECRET is not set"), ("SNAC_MODEL_PATH", "SNAC_MODEL_PATH"),
     ("key file content", "cannot read API_KEY_FILE: the key file holds no active key"),
     ("key file", "API_KEY_FILE: Value error, no key file at")],
)
def test_start_command_refuses_to_start_without_key_or_decoder(tmp_path, missing, message):
    env = {
        "PATH": os.environ["PATH"],
        "PORT": str(free_port()),
        "API_KEY_SECRET": KEY,
        "SNAC_MODEL_PATH": str(tmp_path / "absent.onnx"),
    }
    if missing != "SNAC_MODEL_PATH":
        env.pop("API_KEY_SECRET")
        env["SNAC_MODEL_PATH"] = str(DOCKERFILE)  # exists; only the key is missing
    if missing.startswith("key file"):
        # Every key revoked (a tombstone keeps the last four characters, never the key).
        (tmp_path / "keys").write_text(
            '{"format": "orpheus-api-keys/1", "keys": [{"name": "default", "last4": "'
            + KEY[-4:] + '", "revoked": "2026-11-30T10:00:00Z"}]}')
        env["API_KEY_FILE"] = str(tmp_path / ("keys" if missing.endswith("content") else "nope"))
    result = subprocess.run(
        [sys.executable, "-m", "runtime.frontend"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    assert line["severity"] == "CRITICAL" and message in line["message"]
    assert KEY not in result.stdout + result.stderr
