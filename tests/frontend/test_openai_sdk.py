"""The official OpenAI SDK against the real app and the scripted backend: what users run."""

from __future__ import annotations

import httpx
import pytest

from runtime.codec.token_budget import token_budget
from tests.fixtures.fake_backend import Behavior
from tests.frontend.audio import SAMPLES_PER_FRAME, decoded_seconds, pcm_samples, wav_samples

FRAMES = 10


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_streaming_response_holds_every_frame(frontend, fake_backend, fmt):
    client = frontend.openai()
    with client.audio.speech.with_streaming_response.create(
        model="orpheus", voice="tara", input="Hello there.", response_format=fmt
    ) as response:
        assert response.headers["content-type"] == {"wav": "audio/wav", "pcm": "audio/pcm"}[fmt]
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = list(response.iter_bytes())
    data = b"".join(chunks)
    samples = wav_samples(data, streaming=True) if fmt == "wav" else pcm_samples(data)
    assert samples.size == FRAMES * SAMPLES_PER_FRAME
    assert np_abs_max(samples) > 0  # real decoded audio, not silence
    (request,) = fake_backend.completions
    assert request.body["stream"] is True
    assert request.body["prompt"] == "<|audio|>tara: Hello there.<|eot_id|>"


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_non_streaming_create(frontend, fmt):
    client = frontend.openai()
    # `stream: false` asks for the whole file at once, with a Content-Length.
    audio = client.audio.speech.create(
        model="tts-1", voice="leo", input="Hi.", response_format=fmt, extra_body={"stream": False}
    )
    assert audio.response.headers["content-length"] == str(len(audio.content))
    samples = (
        wav_samples(audio.content, streaming=False) if fmt == "wav" else pcm_samples(audio.content)
    )
    assert samples.size == FRAMES * SAMPLES_PER_FRAME


def test_default_call_of_the_sdk_streams_audio(frontend):
    # Plain `create` (no stream flag): the app streams, the SDK reads it all.
    audio = frontend.openai().audio.speech.create(
        model="orpheus", voice="tara", input="Hey.", response_format="pcm"
    )
    assert pcm_samples(audio.content).size == FRAMES * SAMPLES_PER_FRAME


def test_same_audio_streamed_or_not(frontend):
    client = frontend.openai()
    streamed = client.audio.speech.create(
        model="orpheus", voice="tara", input="Same.", response_format="pcm"
    ).content
    whole = client.audio.speech.create(
        model="orpheus",
        voice="tara",
        input="Same.",
        response_format="pcm",
        extra_body={"stream": False},
    ).content
    assert streamed == whole


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "aac"])
def test_compressed_formats_decode_to_the_right_length(frontend, fmt):
    audio = frontend.openai().audio.speech.create(
        model="orpheus", voice="tara", input="Compressed.", response_format=fmt
    )
    expected = FRAMES * SAMPLES_PER_FRAME / 24000
    # Codec priming and padding add or trim a few milliseconds, never a frame's worth.
    assert abs(decoded_seconds(audio.content) - expected) < 0.08


def test_default_format_is_mp3_like_openai(frontend_factory):
    app = frontend_factory(ORPHEUS_DEFAULT_FORMAT="mp3")
    response = httpx.post(
        f"{app.base_url}/v1/audio/speech", headers=app.headers(), json={"input": "Hi."}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"


def test_many_tokens_per_event_and_stray_text(frontend, fake_backend):
    # llama-server may pack several tokens into one event; text that is not audio is skipped.
    fake_backend.script(Behavior.stream(FRAMES, tokens_per_event=5, preamble="<custom_token_1>"))
    audio = frontend.openai().audio.speech.create(
        model="orpheus", voice="tara", input="Packed.", response_format="pcm"
    )
    assert pcm_samples(audio.content).size == FRAMES * SAMPLES_PER_FRAME


def test_end_of_speech_token_ends_the_audio(frontend, fake_backend):
    # A server that does not honour `stop` sends <custom_token_2>; audio ends there.
    fake_backend.script(Behavior.stream(4, end_of_speech=True))
    audio = frontend.openai().audio.speech.create(
        model="orpheus", voice="tara", input="Short.", response_format="pcm"
    )
    assert pcm_samples(audio.content).size == 4 * SAMPLES_PER_FRAME


def test_long_input_is_generated_in_segments(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="40")
    text = "This is the first sentence here. And this is the second one, also long."
    audio = app.openai().audio.speech.create(
        model="orpheus", voice="zoe", input=text, response_format="pcm"
    )
    prompts = [r.body["prompt"] for r in fake_backend.completions]
    assert prompts == [
        "<|audio|>zoe: This is the first sentence here.<|eot_id|>",
        "<|audio|>zoe: And this is the second one, also long.<|eot_id|>",
    ]
    crossfade = 480  # 20 ms at 24 kHz, one join
    assert pcm_samples(audio.content).size == 2 * FRAMES * SAMPLES_PER_FRAME - crossfade


def test_generation_settings_reach_the_backend(frontend_factory, fake_backend):
    app = frontend_factory(
        ORPHEUS_MODEL_NAME="orpheus-3b-q4",
        ORPHEUS_TEMPERATURE="0.4",
        ORPHEUS_TOP_P="0.8",
        ORPHEUS_REPETITION_PENALTY="1.3",
        ORPHEUS_MAX_TOKENS="1200",
    )
    app.openai().audio.speech.create(
        model="orpheus-3b-q4", voice="Dan", input="Settings.", response_format="pcm"
    )
    (request,) = fake_backend.completions
    assert request.body == {
        "model": "orpheus-3b-q4",
        "prompt": "<|audio|>dan: Settings.<|eot_id|>",
        # The segment's own budget (slow speech of "Settings."), under the configured ceiling.
        "max_tokens": token_budget("Settings."),
        "temperature": 0.4,
        "top_p": 0.8,
        "repeat_penalty": 1.3,
        "stop": ["<custom_token_2>"],
        "stream": True,
    }
    assert token_budget("Settings.") < 1200
    assert "authorization" not in request.headers  # ORPHEUS_BACKEND_AUTH=none


def test_voices_models_and_health(frontend):
    client = frontend.openai()
    models = client.models.list()
    assert [m.id for m in models.data] == ["orpheus"]
    voices = httpx.get(f"{frontend.base_url}/v1/audio/voices", headers=frontend.headers()).json()
    assert voices["voices"][:8] == ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]
    assert "<laugh>" in voices["emotion_tags"]
    health = httpx.get(f"{frontend.base_url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_concurrent_requests_stream_concurrently(frontend, fake_backend):
    # Paced at 200 tokens/s each, four requests take ~1 s apiece; if the app serialised them
    # the backend would never have all four open at once. No timing threshold: overlap is asserted.
    from concurrent.futures import ThreadPoolExecutor

    frames = 30
    fake_backend.default = Behavior.stream(frames, tokens_per_second=200)
    client = frontend.openai()

    def one(i: int) -> int:
        audio = client.audio.speech.create(
            model="orpheus", voice="tara", input=f"Number {i}.", response_format="pcm"
        )
        return pcm_samples(audio.content).size

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(one, range(4)))
    assert sizes == [frames * SAMPLES_PER_FRAME] * 4
    requests = fake_backend.completions
    assert len(requests) == 4
    first_done = min(r.finished_at for r in requests)
    assert all(r.started < first_done for r in requests)


def np_abs_max(samples) -> int:
    return int(abs(samples.astype("int32")).max())


def test_every_model_name_the_sdk_offers_is_accepted(frontend):
    # The SDK's SpeechModel names (what users copy from its types and docs) all mean "the
    # deployed Orpheus model", as GET /v1/models' id does.
    from typing import get_args

    from openai.types.audio.speech_model import SpeechModel

    client = frontend.openai(max_retries=0)
    for model in get_args(SpeechModel):
        audio = client.audio.speech.create(
            model=model, voice="tara", input="Hi.", response_format="pcm"
        )
        assert pcm_samples(audio.content).size == FRAMES * SAMPLES_PER_FRAME, model
