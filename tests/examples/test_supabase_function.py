"""The Supabase Edge Function example (examples/supabase/functions/orpheus-tts) run for real.

`deno check` type-checks it, and `deno run` serves it exactly as written (Deno.serve; the address
comes from DENO_SERVE_ADDRESS) in front of the real frontend and the scripted backend. Deno runs
with no remote or npm resolution and network access to 127.0.0.1 only, so the example works
offline. Every answer is searched for the key: it lives in the function's environment and must
never reach the caller.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.fake_backend import Behavior, FakeBackend
from tests.fixtures.plugin_frontend import RunningFrontend
from tests.fixtures.plugin_llama import free_port, spawn, stop, wait_http
from tests.frontend.audio import SAMPLES_PER_FRAME, pcm_samples, wav_samples

FUNCTION = (Path(__file__).resolve().parents[2]
            / "examples/supabase/functions/orpheus-tts/index.ts")
# Offline, and only what the function needs: its two settings and the frontend on loopback.
DENO_RUN = ["run", "--no-remote", "--no-npm", "--allow-net=127.0.0.1",
            "--allow-env=ORPHEUS_URL,ORPHEUS_API_KEY"]


@dataclass
class EdgeFunction:
    url: str
    key: str | None

    def post(self, **kw: object) -> httpx.Response:
        response = httpx.post(self.url, timeout=60, **kw)  # type: ignore[arg-type]
        self.assert_no_key(response)
        return response

    def assert_no_key(self, response: httpx.Response) -> None:
        if self.key:
            assert self.key not in str(response.headers)
            assert self.key.encode() not in response.content


@pytest.fixture
def edge_function(deno_bin: Path, deno_env: dict[str, str], tmp_path: Path
                  ) -> Iterator[Callable[[str | None, str | None], EdgeFunction]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(orpheus_url: str | None, key: str | None) -> EdgeFunction:
        port = free_port()
        env = {**deno_env, "DENO_SERVE_ADDRESS": f"tcp:127.0.0.1:{port}"}
        if orpheus_url is not None:
            env["ORPHEUS_URL"] = orpheus_url
        if key is not None:
            env["ORPHEUS_API_KEY"] = key
        log = tmp_path / f"deno-{port}.log"
        process = spawn([str(deno_bin), *DENO_RUN, str(FUNCTION)], log, env=env)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(url, 60, process, log, expect=405)  # it answers GET with "use POST"
        return EdgeFunction(url, key)

    yield start
    for process in started:
        stop(process)


def test_the_function_type_checks(deno_bin: Path, deno_env: dict[str, str]) -> None:
    checked = subprocess.run([str(deno_bin), "check", "--no-remote", "--no-npm", str(FUNCTION)],
                             env=deno_env, capture_output=True, text=True, timeout=180)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_text_in_audio_streamed_out(frontend: RunningFrontend, fake_backend: FakeBackend,
                                    edge_function: Callable[..., EdgeFunction]) -> None:
    fn = edge_function(frontend.base_url, frontend.api_key)
    frames, held_at = 24, 12
    release = threading.Event()
    fake_backend.script(Behavior.stream(frames=frames, hold=release, hold_after_frames=held_at))
    with httpx.stream("POST", fn.url, json={"text": "Hello there <laugh>", "voice": "leo"},
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        chunks = response.iter_bytes()
        first = next(chunks)
        # Audio reached the caller while the backend is still holding back half the speech.
        assert first[:4] == b"RIFF" and not fake_backend.completions[-1].finished
        release.set()
        body = first + b"".join(chunks)
        assert frontend.api_key not in str(response.headers)
    assert wav_samples(body, streaming=True).size == frames * SAMPLES_PER_FRAME
    assert frontend.api_key.encode() not in body
    assert "leo: Hello there <laugh>" in fake_backend.completions[-1].body["prompt"]

    pcm = fn.post(json={"text": "Raw samples, please.", "format": "pcm"})
    assert pcm.status_code == 200, pcm.text
    assert pcm.headers["content-type"] == "audio/L16;rate=24000;channels=1"
    assert pcm_samples(pcm.content).size == 10 * SAMPLES_PER_FRAME


def test_bad_input_gets_its_4xx_before_any_speech(
        frontend: RunningFrontend, fake_backend: FakeBackend,
        edge_function: Callable[..., EdgeFunction]) -> None:
    fn = edge_function(frontend.base_url, frontend.api_key)
    cases = [
        ({"content": b"not json", "headers": {"Content-Type": "application/json"}}, 400,
         'body must be JSON: {"text": "...", "voice": "tara"}'),
        ({"json": {"voice": "tara"}}, 400, "text is required"),
        ({"json": {"text": "   "}}, 400, "text is required"),
        ({"json": {"text": "Hi.", "voice": "bob"}}, 400, "unknown voice bob"),
        ({"json": {"text": "Hi.", "format": "ogg"}}, 400, "unknown format ogg"),
        ({"json": {"text": "x" * 4001}}, 413, "text is longer than 4000 characters"),
    ]
    for request, status, message in cases:
        response = fn.post(**request)
        assert (response.status_code, response.json()) == (status, {"error": {"message": message}})
    assert httpx.get(fn.url, timeout=10).status_code == 405
    preflight = httpx.options(fn.url, timeout=10)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert fake_backend.completions == []  # nothing was spoken for any of them


def test_service_errors_are_passed_on_without_the_key(
        frontend_factory: Callable[..., RunningFrontend], fake_backend: FakeBackend,
        edge_function: Callable[..., EdgeFunction]) -> None:
    fe = frontend_factory(ORPHEUS_API_TIMEOUT="1")

    # A key the service does not hold: the caller learns the function is misconfigured (502),
    # with the service's words, and nothing of either key.
    wrong = edge_function(fe.base_url, "sk-wrong-0123456789abcdef")
    refused = wrong.post(json={"text": "Hello."})
    assert (refused.status_code, refused.json()["error"]["message"]) == (
        502, "incorrect API key provided")
    assert fe.api_key.encode() not in refused.content

    # A backend that is still starting: the service's 503 and its message.
    fn = edge_function(fe.base_url, fe.api_key)
    fake_backend.default = Behavior.status_code(503)
    cold = fn.post(json={"text": "Hello."})
    assert cold.status_code == 503
    assert cold.json()["error"]["message"].startswith("the backend answered 503")

    unreachable = edge_function(f"http://127.0.0.1:{free_port()}", fe.api_key)
    down = unreachable.post(json={"text": "Hello."})
    assert down.status_code == 504
    assert down.json()["error"]["message"].startswith("speech service unreachable")

    unset = edge_function(None, None).post(json={"text": "Hello."})
    assert unset.status_code == 500
    assert "supabase secrets set" in unset.json()["error"]["message"]
