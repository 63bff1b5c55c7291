"""The frontend against real inference servers on the tiny Orpheus GGUF (tests/fixtures/
orpheus_gguf.py): `llama_cpp.server` (the local engine) and llama.cpp's `llama-server` (the image's
engine). The GGUF always speaks `DEFAULT_FRAMES` frames and then end-of-speech, so the audio length
is known exactly; the prompt, the stop string and SSE parsing are whatever the real servers do.
"""

from __future__ import annotations

import logging

import pytest

from tests.fixtures.orpheus_gguf import DEFAULT_FRAMES
from tests.fixtures.plugin_llama import free_port, spawn, stop, wait_http
from tests.frontend.audio import SAMPLES_PER_FRAME, pcm_samples, wav_samples
from tests.frontend.logs import access_records

EXPECTED = DEFAULT_FRAMES * SAMPLES_PER_FRAME


def speak(app, fmt: str, streaming: bool) -> bytes:
    client = app.openai(max_retries=0)
    if streaming:
        with client.audio.speech.with_streaming_response.create(
            model="orpheus", voice="tara", input="Hello from llama.", response_format=fmt
        ) as response:
            assert response.status_code == 200
            return b"".join(response.iter_bytes())
    return client.audio.speech.create(
        model="orpheus",
        voice="tara",
        input="Hello from llama.",
        response_format=fmt,
        extra_body={"stream": False},
    ).content


def samples(data: bytes, fmt: str, streaming: bool):
    return wav_samples(data, streaming=streaming) if fmt == "wav" else pcm_samples(data)


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_llama_cpp_server(llama_cpp_server, frontend_factory, fmt, streaming):
    app = frontend_factory(
        ORPHEUS_API_URL=f"{llama_cpp_server}/v1/completions",
        ORPHEUS_MAX_TOKENS="200",
        ORPHEUS_API_TIMEOUT="60",
    )
    assert samples(speak(app, fmt, streaming), fmt, streaming).size == EXPECTED


@pytest.fixture(scope="module")
def llama_server(llama_server_bin, tiny_gguf_q8, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    process = spawn(
        [
            str(llama_server_bin),
            "-m",
            str(tiny_gguf_q8),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "2048",
            "-np",
            "2",
            "--alias",
            "orpheus",
        ],
        log_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", 60, process, log_path)
        yield base
    finally:
        stop(process)


@pytest.mark.llama_server
@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_llama_server(llama_server, frontend_factory, fmt, streaming):
    app = frontend_factory(
        ORPHEUS_API_URL=f"{llama_server}/v1/completions",
        ORPHEUS_MAX_TOKENS="200",
        ORPHEUS_API_TIMEOUT="60",
    )
    assert samples(speak(app, fmt, streaming), fmt, streaming).size == EXPECTED



@pytest.mark.parametrize(
    "server", ["llama_cpp_server", pytest.param("llama_server", marks=pytest.mark.llama_server)]
)
def test_a_segment_cut_by_the_token_limit_is_reported(server, request, frontend_factory, caplog):
    # The servers' own way to say a request reached max_tokens (finish_reason "length") is what
    # the frontend reports; the answer still ends cleanly, with whole frames.
    caplog.set_level(logging.INFO)
    app = frontend_factory(
        ORPHEUS_API_URL=f"{request.getfixturevalue(server)}/v1/completions",
        ORPHEUS_MAX_TOKENS="40",
        ORPHEUS_API_TIMEOUT="60",
    )
    pcm = samples(speak(app, "pcm", True), "pcm", True)
    assert 0 < pcm.size < EXPECTED and pcm.size % SAMPLES_PER_FRAME == 0
    access = access_records(caplog)[-1]
    assert access.__dict__["truncated_segments"] == 1
    assert access.__dict__["outcome"] == "complete"
