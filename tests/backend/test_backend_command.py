"""The backend image's command, run natively exactly as the image runs it.

The Dockerfile cannot be built here (no Docker engine), so the test lays out the files its COPY
lines put in the image, and runs its CMD in its WORKDIR with its ENV plus what Cloud Run adds (the
service's environment from design section 3, and PORT). Two deviations, both settings the launcher
reads for this purpose: LLAMA_SERVER_BIN names the CPU llama-server built from the same pinned
source (the image has the CUDA one at /usr/local/bin), and ORPHEUS_BACKEND_HOST=127.0.0.1 keeps
the test server off the network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from runtime.backend.settings import DEFAULT_PORT
from tests.fixtures.dockerfile import FinalStage, final_stage, lay_out
from tests.fixtures.orpheus_gguf import audio_token_texts
from tests.fixtures.plugin_llama import free_port, http_status, stop, wait_http

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "runtime" / "backend" / "Dockerfile"
# Long enough (281 tokens) that a second request starts while the first is still decoding.
FRAMES = 40
N_PARALLEL = 4
SLOT_CTX = 4096
PROMPT = "<|audio|>tara: Two requests at once should both be decoded.<|eot_id|>"
SAMPLING = {"temperature": 0.6, "top_p": 0.9, "repeat_penalty": 1.1}


@pytest.fixture(scope="module")
def image() -> FinalStage:
    return final_stage(DOCKERFILE)


def test_image_runs_the_launcher_as_non_root_on_the_backend_port(image: FinalStage) -> None:
    assert image.cmd == ["python3", "-m", "runtime.backend"]
    assert image.user not in (None, "root", "0")
    assert image.env["PORT"] == str(DEFAULT_PORT) and image.expose == [str(DEFAULT_PORT)]
    assert image.env["LLAMA_SERVER_BIN"] == "/usr/local/bin/llama-server"


@pytest.fixture(scope="module")
def app_dir(image: FinalStage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's file system, as far as the launcher sees it: what COPY puts in WORKDIR."""
    return lay_out(image, REPO, tmp_path_factory.mktemp("image"))


def _cloud_run_env(image: FinalStage, tmp: Path, **settings: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), **image.env}
    env.update({"N_GPU_LAYERS": "999", "N_CTX": str(N_PARALLEL * SLOT_CTX),
                "N_PARALLEL": str(N_PARALLEL), "PORT": str(free_port()),
                "ORPHEUS_BACKEND_HOST": "127.0.0.1",
                # CI shares 2 cores between several jobs: llama.cpp's threads spin-wait on each
                # other and a 2-thread decode is ~20x slower than 1 thread there.
                "N_THREADS": "1"})
    env.update(settings)
    return env


def _run(image: FinalStage, app_dir: Path, env: dict[str, str],
         log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(image.cmd, cwd=app_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, line: str, timeout: float
                   ) -> None:
    """Wait until the launcher logs ``line``; fail with its log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while line not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@dataclass
class Backend:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    health: list[int | None] = field(default_factory=list)  # /health from process start


@pytest.fixture(scope="module")
def backend(image: FinalStage, app_dir: Path, llama_server_bin: Path,
            tiny_gguf_factory: Callable[..., Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp("backend")
    models = tmp / "models"  # the bucket mount
    models.mkdir()
    model = shutil.copy(tiny_gguf_factory("Q8_0", frames=FRAMES), models / "orpheus-tiny.gguf")
    env = _cloud_run_env(image, tmp, MODEL_PATH=str(model), LLAMA_SERVER_BIN=str(llama_server_bin))
    running = Backend(f"http://127.0.0.1:{env['PORT']}", _run(image, app_dir, env, tmp / "log"),
                      tmp / "log")
    try:
        # Poll from the moment the process exists, as Cloud Run's startup probe does.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and running.process.poll() is None:
            running.health.append(http_status(f"{running.url}/health", timeout=5))
            if running.health[-1] == 200:
                break
            time.sleep(0.01)
        if running.health[-1:] != [200]:
            pytest.fail(f"backend not ready: {running.health[-5:]}\n{running.log.read_text()}")
        yield running
    finally:
        stop(running.process)


def _stream(url: str, events: list[tuple[float, str]], result: dict[str, object]) -> None:
    body = {"prompt": PROMPT, "max_tokens": 400, "stream": True, **SAMPLING}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        result["status"] = response.status_code
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice.get("text"):
                events.append((time.monotonic(), choice["text"]))
            if choice.get("finish_reason"):
                result["finish_reason"] = choice["finish_reason"]


def test_readiness_is_503_while_loading_then_200(backend: Backend) -> None:
    first_200 = backend.health.index(200)
    before = backend.health[:first_200]
    assert before, "the first probe already saw 200: the load was not observable"
    assert 200 not in before
    assert 503 in before, f"probes before ready: {sorted(set(before), key=str)}"
    # The launcher polls on its own, so its "ready" line may trail our first 200 a little.
    deadline = time.monotonic() + 10
    while "step: weights loaded, ready" not in backend.log.read_text():
        assert time.monotonic() < deadline, backend.log.read_text()
        time.sleep(0.05)
    log = backend.log.read_text()
    for step in ("step: model visible", "step: llama-server started (pid",
                 "step: listening, loading weights (GET", "-> 503)"):
        assert step in log


def test_streams_audio_tokens(backend: Backend) -> None:
    events: list[tuple[float, str]] = []
    result: dict[str, object] = {}
    _stream(backend.url, events, result)
    assert result == {"status": 200, "finish_reason": "stop"}
    assert [text for _, text in events] == audio_token_texts(FRAMES)


def test_slots_have_room_for_a_prompt_and_max_tokens(backend: Backend) -> None:
    slots = httpx.get(f"{backend.url}/slots", timeout=10).json()
    assert len(slots) == N_PARALLEL
    assert {slot["n_ctx"] for slot in slots} == {SLOT_CTX}


def _two_overlapping_streams(url: str) -> tuple[list[list[tuple[float, str]]],
                                                list[dict[str, object]], float]:
    """Two streams, the second sent once the first has streamed a token; and when it was sent."""
    events: list[list[tuple[float, str]]] = [[], []]
    results: list[dict[str, object]] = [{}, {}]
    sent: list[float] = []

    def send_second() -> None:
        sent.append(time.monotonic())
        _stream(url, events[1], results[1])

    first = threading.Thread(target=_stream, args=(url, events[0], results[0]))
    second = threading.Thread(target=send_second)
    first.start()
    deadline = time.monotonic() + 30
    while not events[0] and time.monotonic() < deadline:
        time.sleep(0.001)
    second.start()  # the first is mid-stream now
    first.join(60)
    second.join(60)
    return events, results, sent[0]


def test_two_requests_are_decoded_in_parallel_slots(backend: Backend) -> None:
    # On a loaded machine the second request can leave after the first has already finished,
    # which proves nothing either way: such a round is repeated (a one-request-at-a-time server
    # fails every round in which the second request was sent while the first was streaming).
    for _ in range(5):
        events, results, second_sent = _two_overlapping_streams(backend.url)
        for stream, result in zip(events, results, strict=True):
            assert result == {"status": 200, "finish_reason": "stop"}
            assert [text for _, text in stream] == audio_token_texts(FRAMES)
        if second_sent < events[0][-1][0]:
            break
    else:
        pytest.skip("the second request never left before the first one ended (machine too busy)")
    a_start, a_end = events[0][0][0], events[0][-1][0]
    b_start, b_end = events[1][0][0], events[1][-1][0]
    # Both stream before either ends: a one-request-at-a-time server would start b after a ends.
    assert b_start < a_end and a_start < b_end


def test_sigterm_stops_the_server_cleanly(image: FinalStage, app_dir: Path,
                                          llama_server_bin: Path, tiny_gguf_q8: Path,
                                          tmp_path: Path) -> None:
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tiny_gguf_q8),
                         LLAMA_SERVER_BIN=str(llama_server_bin))
    process = _run(image, app_dir, env, tmp_path / "log")
    try:
        wait_http(f"http://127.0.0.1:{env['PORT']}/health", 60, process, tmp_path / "log")
        children = psutil.Process(process.pid).children(recursive=True)
        assert any(Path(c.exe()).name == "llama-server" for c in children)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        for child in children:
            with pytest.raises(psutil.NoSuchProcess):
                psutil.Process(child.pid).status()
        assert "received SIGTERM, stopping llama-server" in (tmp_path / "log").read_text()
    finally:
        stop(process, signal.SIGKILL)


def test_a_dead_server_ends_the_container_with_an_error(image: FinalStage, app_dir: Path,
                                                       llama_server_bin: Path, tiny_gguf_q8: Path,
                                                       tmp_path: Path) -> None:
    # Cloud Run replaces an instance whose container exits; a launcher that outlived its server
    # (or exited 0) would leave a live instance answering nothing, or hide the crash.
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tiny_gguf_q8),
                         LLAMA_SERVER_BIN=str(llama_server_bin))
    process = _run(image, app_dir, env, tmp_path / "log")
    try:
        wait_http(f"http://127.0.0.1:{env['PORT']}/health", 60, process, tmp_path / "log")
        (server,) = psutil.Process(process.pid).children()
        server.kill()  # as the kernel's OOM killer or a crash would
        assert process.wait(timeout=10) != 0
        assert "llama-server exited with code -9" in (tmp_path / "log").read_text()
    finally:
        stop(process, signal.SIGKILL)


def test_a_staged_copy_is_deleted_once_the_model_is_loaded(
    image: FinalStage, app_dir: Path, llama_server_bin: Path, tiny_gguf_q8: Path, tmp_path: Path
) -> None:
    # On Cloud Run the copy lives in /dev/shm, i.e. in the instance's memory: kept after the
    # load, a 3.5 GB model would hold that much of a 16 GiB instance for nothing.
    shm = tmp_path / "shm"
    shm.mkdir()
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tiny_gguf_q8),
                         LLAMA_SERVER_BIN=str(llama_server_bin), MODEL_STAGING="always",
                         MODEL_STAGING_DIR=str(shm))
    log = tmp_path / "log"
    process = _run(image, app_dir, env, log)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        _wait_for_line(process, log, "deleted the staged model", 60)
        assert f"model read: copied to {shm / tiny_gguf_q8.name}" in log.read_text()
        assert http_status(f"{url}/health") == 200
        assert list(shm.iterdir()) == []
        events: list[tuple[float, str]] = []
        result: dict[str, object] = {}
        _stream(url, events, result)  # the loaded server does not need the file any more
        assert result == {"status": 200, "finish_reason": "stop"}
        assert [text for _, text in events] == audio_token_texts()
    finally:
        stop(process)


def test_llama_cpp_python_engine_serves_the_same_stream(
    image: FinalStage, app_dir: Path, tiny_gguf_q8: Path, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    # The engine runs as `<python> -m llama_cpp.server`: the launcher's own interpreter, so run
    # the launcher with the one that has llama-cpp-python.
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tiny_gguf_q8),
                         ORPHEUS_ENGINE="llama-cpp-python")
    with (tmp_path / "log").open("wb") as out:
        process = subprocess.Popen([sys.executable, *image.cmd[1:]], cwd=app_dir, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 60
        while http_status(f"{url}/v1/models") != 200:
            assert process.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "log").read_text()
            time.sleep(0.05)
        events: list[tuple[float, str]] = []
        result: dict[str, object] = {}
        _stream(url, events, result)
        assert result == {"status": 200, "finish_reason": "stop"}
        assert [text for _, text in events] == audio_token_texts()
    finally:
        stop(process)


BAD_MODELS = {
    "unset": (None, "MODEL_PATH is not set"),
    "missing file": ("models/Orpheus-3b-FT-Q8_0.gguf",
                     "model file not found: {tmp}/models/Orpheus-3b-FT-Q8_0.gguf. "
                     "'{tmp}/models' contains: README.txt (5 B)"),
    "missing mount": ("bucket/model.gguf", "'{tmp}/bucket' does not exist; '{tmp}' contains:"),
    "not gguf": ("models/README.txt", "is not a GGUF model (it starts with b'hell'"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_model_is_a_clear_fatal_error_within_seconds(
    case: str, image: FinalStage, app_dir: Path, tmp_path: Path
) -> None:
    relative, message = BAD_MODELS[case]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "README.txt").write_text("hello")
    env = _cloud_run_env(image, tmp_path, LLAMA_SERVER_BIN="/nonexistent/llama-server")
    if relative is not None:
        env["MODEL_PATH"] = str(tmp_path / relative)
    start = time.monotonic()
    result = subprocess.run(image.cmd, cwd=app_dir, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert time.monotonic() - start < 10
    assert result.returncode != 0
    assert message.format(tmp=tmp_path) in result.stderr
    assert "fatal:" in result.stderr


def test_a_missing_llama_server_is_a_clear_fatal_error(
    image: FinalStage, app_dir: Path, tiny_gguf_q8: Path, tmp_path: Path
) -> None:
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tiny_gguf_q8),
                         LLAMA_SERVER_BIN=str(tmp_path / "llama-server"))
    result = subprocess.run(image.cmd, cwd=app_dir, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode != 0
    expected = f"LLAMA_SERVER_BIN={tmp_path / 'llama-server'} is not an executable file"
    assert expected in result.stderr


# -- several models: llama-server's router (runtime/backend/router.py) --------------------------
FR_OFFSET = 1000  # the second model speaks other frames, so each answer names its model


def _complete(url: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 400, **SAMPLING}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


def test_several_models_are_served_by_the_router_one_resident_at_a_time(
    image: FinalStage, app_dir: Path, llama_server_bin: Path,
    tiny_gguf_factory: Callable[..., Path], tmp_path: Path
) -> None:
    """The manifest's environment (MODEL_FILES, MODELS_MAX=1): each name reaches its own model;
    the default is loaded before ready from a staged copy that is then deleted, and reloaded
    from the mount after another model took its place."""
    models = tmp_path / "models"  # the bucket mount
    (models / "lang").mkdir(parents=True)
    shutil.copy(tiny_gguf_factory("Q8_0"), models / "en.gguf")
    shutil.copy(tiny_gguf_factory("Q8_0", code_offset=FR_OFFSET), models / "lang" / "fr.gguf")
    shm = tmp_path / "shm"
    shm.mkdir()
    env = _cloud_run_env(
        image, tmp_path, MODEL_PATH=str(models / "en.gguf"), MODELS_DIR=str(models),
        MODEL_FILES=json.dumps({"orpheus": "en.gguf", "orpheus-fr": "lang/fr.gguf"}),
        MODELS_MAX="1", LLAMA_SERVER_BIN=str(llama_server_bin), MODEL_STAGING="always",
        MODEL_STAGING_DIR=str(shm))
    log = tmp_path / "log"
    process = _run(image, app_dir, env, log)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        _wait_for_line(process, log, "step: default model orpheus loaded, ready", 120)
        assert list(shm.iterdir()) == []  # the staged copy is gone once loaded

        for model, offset in (("orpheus-fr", FR_OFFSET), ("orpheus", 0),
                              ("orpheus-fr", FR_OFFSET)):
            answer = _complete(url, model)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["text"] == "".join(
                audio_token_texts(code_offset=offset)), model
        states = {m["id"]: m["status"]["value"] for m in httpx.get(f"{url}/models").json()["data"]}
        assert states == {"orpheus": "unloaded", "orpheus-fr": "loaded"}  # MODELS_MAX=1

        unknown = _complete(url, "orpheus-de")
        assert unknown.status_code == 400 and "not found" in unknown.text
        # The launcher watches the router's model states by polling, so its lines may trail.
        _wait_for_line(process, log, "model orpheus-fr: loaded in", 30)
        _wait_for_line(process, log, "model orpheus: unloaded", 30)

        children = psutil.Process(process.pid).children(recursive=True)
        assert len([c for c in children if Path(c.exe()).name == "llama-server"]) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        for child in children:  # the router stopped its model's server too
            with pytest.raises(psutil.NoSuchProcess):
                psutil.Process(child.pid).status()
    finally:
        stop(process, signal.SIGKILL)


def test_a_default_model_that_fails_to_load_stops_the_container(
    image: FinalStage, app_dir: Path, llama_server_bin: Path,
    tiny_gguf_factory: Callable[..., Path], tmp_path: Path
) -> None:
    # The router itself stays up when a model fails; the instance must not look healthy then.
    models = tmp_path / "models"
    models.mkdir()
    broken = models / "en.gguf"
    broken.write_bytes(tiny_gguf_factory("Q8_0").read_bytes()[:1_000_000])  # truncated
    shutil.copy(tiny_gguf_factory("Q8_0", code_offset=FR_OFFSET), models / "fr.gguf")
    env = _cloud_run_env(
        image, tmp_path, MODEL_PATH=str(broken),
        MODEL_FILES=json.dumps({"orpheus": "en.gguf", "orpheus-fr": "fr.gguf"}),
        LLAMA_SERVER_BIN=str(llama_server_bin))
    result = subprocess.run(image.cmd, cwd=app_dir, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode != 0
    assert "fatal: the default model orpheus failed to load; stopping" in result.stderr


@pytest.mark.parametrize(("files", "message"), [
    ('["en.gguf"]', "MODEL_FILES must be a JSON object"),
    ('{"orpheus": "en.gguf", "a b": "fr.gguf"}', "invalid model name(s) 'a b'"),
    ('{"orpheus-fr": "fr.gguf", "orpheus-de": "de.gguf"}', "is not one of MODEL_FILES"),
])
def test_a_bad_model_list_is_a_clear_fatal_error(files: str, message: str, image: FinalStage,
                                                  app_dir: Path, tmp_path: Path) -> None:
    env = _cloud_run_env(image, tmp_path, MODEL_PATH=str(tmp_path / "en.gguf"),
                         MODEL_FILES=files, LLAMA_SERVER_BIN="/nonexistent/llama-server")
    result = subprocess.run(image.cmd, cwd=app_dir, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_several_models_need_llama_server() -> None:
    from runtime.backend.settings import ConfigError, load_settings

    env = {"MODEL_PATH": "/m/en.gguf", "MODEL_FILES": '{"a": "en.gguf", "b": "fr.gguf"}'}
    with pytest.raises(ConfigError, match="needs the llama-server engine"):
        load_settings(env, engine="llama-cpp-python")
    one, _ = load_settings({**env, "MODEL_FILES": '{"a": "en.gguf"}'})
    assert not one.router and one.model_files == {}  # one model: the single-model server
