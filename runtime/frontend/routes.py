"""The HTTP surface. Thin: parse, check, hand over to the speech service, answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from runtime.codec.protocol import EMOTION_TAGS, SAMPLE_RATE
from runtime.frontend.audio_response import AudioStreamResponse
from runtime.frontend.auth import require_api_key
from runtime.frontend.limits import BackendSlots, KeyLimits
from runtime.frontend.schemas import (
    ErrorResponse,
    ModelCard,
    ModelList,
    SpeechCapabilities,
    SpeechRequest,
    VoiceInfo,
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


@router.get("/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    # The startup probe on Cloud Run: 200 once the backend's host answers (egress.py).
    connected, detail = await request.app.state.egress.check()
    return JSONResponse({"status": "ready" if connected else "waiting", "detail": detail},
                        status_code=200 if connected else 503)


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
    catalog = _service(request).catalog
    details = [VoiceInfo(id=v, language=m.language, model=m.name)
               for m in catalog.models for v in m.voices]
    default = catalog.default.voices[0]
    return VoiceList(voices=[d.id for d in details], default=default,
                     emotion_tags=list(EMOTION_TAGS), details=details)


@v1.get("/audio/capabilities", response_model=SpeechCapabilities)
async def speech_capabilities(request: Request) -> SpeechCapabilities:
    service = _service(request)
    return SpeechCapabilities(formats=list(service.formats),
                              default_format=service.settings.default_format,
                              max_input_chars=service.settings.max_input_chars,
                              sample_rate=SAMPLE_RATE)


@v1.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    service = _service(request)
    if service.catalog.routed:
        await service.model_status.refresh_if_up()
    return ModelList(data=[
        ModelCard(id=m.name, language=m.language, voices=list(m.voices), default=m.default,
                  status=service.model_status.status(m.name))
        for m in service.catalog.models])


router.include_router(v1)
# Outside `v1`: its key dependency reads an HTTP request; the socket checks the key itself, at the
# handshake or in its first message (speech_socket.py).
router.add_api_websocket_route(SOCKET_PATH, speech_socket)
