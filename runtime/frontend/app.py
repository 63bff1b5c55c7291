"""The FastAPI application. `create_app(settings)` builds it; nothing happens at import.

Resources (ONNX session, decode thread pool, HTTP client, ID token cache) are made in
the lifespan and released there, so importing this module is free and tests can build several apps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from runtime.codec.encoders import SUPPORTED_FORMATS, open_encoder
from runtime.codec.snac_onnx import SnacOnnxDecoder
from runtime.frontend.access_log import AccessLogMiddleware
from runtime.frontend.backend_client import BackendClient, GenerationParams, IdTokenProvider
from runtime.frontend.decode_pool import DecodePool, default_workers
from runtime.frontend.egress import EgressCheck
from runtime.frontend.errors import install_error_handlers
from runtime.frontend.gate import RequestGate
from runtime.frontend.key_store import KeyStore
from runtime.frontend.limits import BackendSlots, KeyLimits
from runtime.frontend.logging_setup import install_request_id_stamp
from runtime.frontend.openapi import OPENAPI_URL, install_openapi
from runtime.frontend.playground import router as playground_router
from runtime.frontend.routes import router
from runtime.frontend.settings import Settings, load_settings
from runtime.frontend.speech import SpeechService

__all__ = ["create_app"]

log = logging.getLogger("orpheus.frontend")

# Connections to the backend kept open between requests (llama-server keeps them alive).
BACKEND_KEEPALIVE = 32


def _working_formats() -> tuple[str, ...]:
    """The formats this machine's PyAV can actually encode (a build without LAME has no mp3)."""
    formats = []
    for fmt in SUPPORTED_FORMATS:
        try:
            open_encoder(fmt).finish()
        except Exception as exc:
            log.warning("response_format %s unavailable: %s", fmt, exc)
        else:
            formats.append(fmt)
    return tuple(formats)


def create_app(settings: Settings | None = None, keys: KeyStore | None = None) -> FastAPI:
    """The app; without `settings` they are read from the environment when it starts, without
    `keys` (the container command reads them first, to exit cleanly) from the settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or load_settings()
        app.state.settings = cfg
        # Read now: an unreadable key file stops start-up.
        app.state.api_keys = keys or cfg.key_store()
        pool = DecodePool(cfg.decode_workers or default_workers())
        decoder = SnacOnnxDecoder(cfg.snac_model_path, threads=cfg.onnx_threads)
        formats = _working_formats()
        if cfg.default_format not in formats:
            raise RuntimeError(f"ORPHEUS_DEFAULT_FORMAT {cfg.default_format!r} is not available")
        tokens = IdTokenProvider(cfg.audience) if cfg.backend_auth == "google-id-token" else None
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=BACKEND_KEEPALIVE),
            timeout=httpx.Timeout(cfg.api_timeout),
        )
        backend = BackendClient(
            http,
            cfg.api_url,
            GenerationParams(
                model=cfg.model_name,
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                repetition_penalty=cfg.repetition_penalty,
            ),
            tokens=tokens,
            stall_timeout=cfg.api_timeout,
            initial_backoff=cfg.retry_initial_backoff,
            max_backoff=cfg.retry_max_backoff,
        )
        app.state.backend = backend
        app.state.egress = EgressCheck(cfg.api_url)
        app.state.speech = SpeechService(cfg, backend, decoder, pool, formats)
        app.state.key_limits = KeyLimits(cfg.key_max_streams, cfg.key_requests_per_minute)
        app.state.backend_slots = BackendSlots(cfg.backend_slots, cfg.queue_size,
                                               cfg.queue_timeout)
        log.info(
            "frontend ready",
            extra={
                "backend_url": cfg.api_url,
                "backend_auth": cfg.backend_auth,
                "api_keys": len(app.state.api_keys.keys),  # how many, never which
                "api_key_source": "file" if cfg.api_key_file else "environment",
                "formats": list(formats),
                "snac_model": str(cfg.snac_model_path),
                "snac_graphs": list(decoder.loaded_graphs),  # without step or head: slower
            },
        )
        try:
            yield
        finally:
            await http.aclose()
            pool.shutdown()

    install_request_id_stamp()
    app = FastAPI(
        title="Orpheus TTS",
        description="OpenAI-compatible text-to-speech backed by Orpheus on Cloud Run. Besides "
        "these routes, the WebSocket /v1/audio/speech/stream takes text as it is written and "
        "answers with audio (README, 'Streaming text in').",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        # No /docs or /redoc: such a page fetches the document without the key it needs.
        docs_url=None,
        redoc_url=None,
    )
    if settings is not None:
        app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(playground_router)
    install_openapi(app)
    # Added first, so it runs inside the access log: refused requests are logged too.
    app.add_middleware(RequestGate)
    app.add_middleware(AccessLogMiddleware)
    return app
