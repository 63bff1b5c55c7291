"""Request and response bodies of the HTTP API (OpenAI's speech schema plus `stream`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "SpeechAudioDelta",
    "SpeechAudioDone",
    "SpeechCapabilities",
    "SpeechRequest",
    "SpeechStreamError",
    "VoiceInfo",
    "VoiceList",
    "VoiceRef",
]

# OpenAI allows 0.25..4.0; PyAV's atempo chain covers the same range.
MIN_SPEED = 0.25
MAX_SPEED = 4.0


class VoiceRef(BaseModel):
    """OpenAI's voice object (`{"id": ...}`, its custom voices); here the id names a voice."""

    id: str


class SpeechRequest(BaseModel):
    # Unknown fields are ignored (SDKs add new optional ones), but every field we accept is honoured
    # or rejected: nothing is silently dropped.
    model_config = ConfigDict(extra="ignore")

    model: str = Field("orpheus", description="Model name; see GET /v1/models.")
    input: str = Field(..., description="The text to speak; emotion tags such as <laugh> allowed.")
    voice: str | VoiceRef = Field(
        "tara",
        description='One of GET /v1/audio/voices (case-insensitive), or {"id": <that name>}.',
    )
    response_format: str | None = Field(
        None,
        description="wav, pcm (s16le 24 kHz mono), mp3, opus, flac or aac; "
        "default ORPHEUS_DEFAULT_FORMAT (mp3, as OpenAI).",
    )
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, description="Tempo, 0.25 to 4.0.")
    stream: bool = Field(
        True,
        description="true: chunked audio as it is decoded; false: the whole file with a length "
        "(a WAV then carries its exact sizes).",
    )
    stream_format: str | None = Field(
        None,
        description="audio (default): the file itself; sse: OpenAI's server-sent events "
        "(speech.audio.delta with base64 audio, then speech.audio.done with usage).",
    )
    instructions: str | None = Field(None, description="Not supported by Orpheus; must be empty.")


class VoiceInfo(BaseModel):
    id: str
    language: str = Field(description="Language code of the model that speaks it, e.g. en, fr.")
    model: str = Field(description="The model (GET /v1/models) that speaks it.")


class VoiceList(BaseModel):
    voices: list[str] = Field(description="Every voice, the default model's first.")
    default: str
    emotion_tags: list[str]
    details: list[VoiceInfo] = Field(
        default_factory=list, description="Each voice with its language and model."
    )


class SpeechCapabilities(BaseModel):
    """What this deployment accepts in POST /v1/audio/speech (the playground reads it)."""

    formats: list[str] = Field(description="response_format values this server can encode.")
    default_format: str
    max_input_chars: int = Field(description="Longest 'input' accepted, in characters.")
    min_speed: float = MIN_SPEED
    max_speed: float = MAX_SPEED
    sample_rate: int = Field(description="Sample rate of wav and pcm audio (pcm: s16le, mono).")


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "orpheus"
    language: str | None = None
    voices: list[str] = Field(default_factory=list, description="The voices it speaks.")
    default: bool = False
    status: str = Field(
        "unknown",
        description="On the GPU as this frontend last saw the backend: loaded, loading, "
        "unloaded, or unknown.",
    )


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body; every non-2xx answer has this shape (see errors.py)."""

    error: ErrorDetail


# The events of `stream_format: "sse"` (sse.py), for the OpenAPI document.
class SpeechAudioDelta(BaseModel):
    type: Literal["speech.audio.delta"]
    audio: str = Field(..., description="The next bytes of the audio file, base64.")


class SpeechUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDone(BaseModel):
    type: Literal["speech.audio.done"]
    usage: SpeechUsage


class SpeechStreamError(BaseModel):
    """Sent instead of speech.audio.done when the stream fails after it started."""

    type: Literal["error"]
    error: ErrorDetail
