"""`orpheus local up`, run as a user runs it: the console script, real servers, a real WAV, Ctrl-C.

The model is the tiny Orpheus GGUF, the decoder the tiny SNAC ONNX; everything else (the backend
launcher, the inference server, the frontend) is the code that runs in production.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.fixtures.orpheus_gguf import DEFAULT_FRAMES
from tests.fixtures.plugin_llama import free_port

ORPHEUS = str(Path(sys.executable).with_name("orpheus"))
SAMPLES_PER_FRAME = 2048


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str
    key: str
    output: list[str]


def _read_lines(stream: io.TextIOBase, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _start(args: list[str], env: dict[str, str], timeout: float = 120) -> Running:
    process = subprocess.Popen([ORPHEUS, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    url = key = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (output and "Ctrl-C" in output[-1]):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        output.append(line)
        if line.startswith("URL: "):
            url = line.split()[1]
        elif line.startswith("API key: "):
            key = line.split()[2]
    if url is None or key is None:
        process.kill()
        pytest.fail("orpheus local up did not print a URL and key:\n" + "".join(output))
    return Running(process, url, key, output)


@pytest.fixture
def local_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORPHEUS_", "LLAMA_"))}
    env["ORPHEUS_CACHE_DIR"] = str(tmp_path / "cache")
    env["HOME"] = str(tmp_path)
    yield env


def _engine_env(engine: str, env: dict[str, str], request: pytest.FixtureRequest) -> None:
    if engine == "llama-server":
        env["LLAMA_SERVER_BIN"] = str(request.getfixturevalue("llama_server_bin"))
    else:
        pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")


@pytest.mark.parametrize("engine", ["llama-server", "llama-cpp-python"])
def test_local_up_speaks_and_ctrl_c_stops_everything(
    engine: str, tiny_gguf_q8: Path, tiny_snac_onnx: Path, local_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    pytest.importorskip("runtime.frontend.app", reason="the frontend is not there yet")
    _engine_env(engine, local_env, request)
    port = free_port()
    running = _start(["local", "up", "--model", str(tiny_gguf_q8), "--snac", str(tiny_snac_onnx),
                      "--port", str(port), "--engine", engine,
                      # CI's 2 shared cores: one inference thread avoids spin-waiting on the other.
                      "--threads", "1"], local_env)
    try:
        assert running.url == f"http://127.0.0.1:{port}"
        assert any(f"-H 'X-API-Key: {running.key}'" in line for line in running.output)
        assert f"Playground: {running.url}/playground (in a browser, with the key)\n" \
            in running.output
        page = httpx.get(f"{running.url}/playground", timeout=30)
        assert page.status_code == 200 and "Orpheus TTS playground" in page.text
        tree = psutil.Process(running.process.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in tree]
        assert any("runtime.backend" in c for c in commands), commands
        assert any("runtime.frontend" in c for c in commands), commands
        server = "llama-server" if engine == "llama-server" else "llama_cpp.server"
        assert any(server in c for c in commands), commands

        body = {"model": "orpheus", "input": "Hello from the local stack.", "voice": "tara",
                "response_format": "wav"}
        denied = httpx.post(f"{running.url}/v1/audio/speech", json=body,
                            headers={"X-API-Key": running.key + "x"}, timeout=60)
        assert denied.status_code == 401
        response = httpx.post(f"{running.url}/v1/audio/speech", json=body,
                              headers={"X-API-Key": running.key}, timeout=120)
        assert response.status_code == 200, response.text
        audio = response.content
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
        with wave.open(io.BytesIO(audio)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
            # A streamed WAV cannot know its length up front: count the bytes after the header.
            data = audio[audio.index(b"data") + 8:]
        samples = len(data) // 2
        assert samples > 0 and samples % SAMPLES_PER_FRAME == 0
        assert samples <= DEFAULT_FRAMES * SAMPLES_PER_FRAME

        pids = [running.process.pid, *(p.pid for p in tree)]
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        if running.process.poll() is None:
            running.process.kill()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_wrong_model_path_is_a_clear_error(tmp_path: Path, tiny_snac_onnx: Path,
                                             local_env: dict[str, str]) -> None:
    result = subprocess.run(
        [ORPHEUS, "local", "up", "--model", str(tmp_path / "nope.gguf"), "--snac",
         str(tiny_snac_onnx)], capture_output=True, text=True, env=local_env, timeout=60,
    )
    assert result.returncode == 2
    assert f"model file not found: {tmp_path / 'nope.gguf'}" in result.stderr


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, tiny_snac_onnx: Path,
                                            local_env: dict[str, str]) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_text("not a model")
    result = subprocess.run(
        [ORPHEUS, "local", "up", "--model", str(bogus), "--snac", str(tiny_snac_onnx)],
        capture_output=True, text=True, env=local_env, timeout=60,
    )
    assert result.returncode == 2
    assert "is not a GGUF model" in result.stderr
