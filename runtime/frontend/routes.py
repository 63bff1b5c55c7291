"""The HTTP surface. Thin: parse, check, hand over to the speech service, answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from runtime.codec.protocol import EMOTION_TAGS, VOICES
from runtime.frontend.audio_response import AudioStreamResponse
from runtime.frontend.auth import require_api_key
from runtime.frontend.limits import BackendSlots, KeyLimits
from runtime.frontend.schemas import (
    ErrorResponse,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceList,
)
from runtime.frontend.speech import SpeechService, SpeechStats
from runtime.frontend.speech_socket import SOCKET_PATH, speech_socket
from runtime.frontend.sse import SpeechEvents

__all__ = ["router"]

router = APIRouter()
# Every route but /health needs a key. `RequestGate` (gate.py) checks it before the body is read;
# the dependency repeats the check and documents the 401 in the schema.
v1 = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse, "description": "missing or wrong API key"}},
)
_SPEECH_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "invalid request (the field is in `param`)"},
    502: {"model": ErrorResponse, "description": "the backend failed before any audio"},
    503: {"model": ErrorResponse, "description": "the backend is unavailable, or every backend "
          "slot is busy and the queue is full or the wait ran out (retry later)"},
    504: {"model": ErrorResponse, "description": "no audio before ORPHEUS_API_TIMEOUT"},
}


def _service(request: Request) -> SpeechService:
    return request.app.state.speech  # type: ignore[no-any-return]


@router.get("/health", include_in_schema=True)
async def health(request: Request) -> dict[str, str]:
    # Deliberately does not call the backend: probes must not wake a scaled-to-zero GPU.
    return {"status": "ok", "model": request.app.state.settings.model_name}


# The 200's media types (one per format, and text/event-stream) are listed by openapi.py.
@v1.post("/audio/speech", response_class=AudioStreamResponse, status_code=200,
         responses=_SPEECH_ERRORS)
async def create_speech(body: SpeechRequest, request: Request) -> AudioStreamResponse:
    service = _service(request)
    job = service.prepare(body)
    key_limits: KeyLimits = request.app.state.key_limits
    stream_lease = key_limits.admit(request.state.api_key_name)  # 429 over the key's limits
    slots: BackendSlots = request.app.state.backend_slots
    stats = SpeechStats()
    request.state.speech_stats = stats  # read by the access log when the response is done
    return AudioStreamResponse(
        lambda: service.start(job, stats),
        job.fmt,
        stats,
        buffered=not job.stream,
        framing=SpeechEvents() if body.stream_format == "sse" else None,
        slot=slots.acquire,
        leases=[stream_lease],
    )


@v1.get("/audio/voices", response_model=VoiceList)
async def list_voices(request: Request) -> VoiceList:
    settings = request.app.state.settings
    voices = list(VOICES) + [v for v in settings.voices_extra if v not in VOICES]
    return VoiceList(voices=voices, default="tara", emotion_tags=list(EMOTION_TAGS))


@v1.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=request.app.state.settings.model_name)])


router.include_router(v1)
# Outside `v1`: its key dependency reads an HTTP request; the socket checks the key itself, at the
# handshake or in its first message (speech_socket.py).
router.add_api_websocket_route(SOCKET_PATH, speech_socket)
