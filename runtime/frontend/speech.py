"""Speech orchestration: validate a request, then text -> backend tokens -> SNAC audio -> encoded
bytes, streamed.

One request is one `SpeechStream`: a producer task that reads the backend's token stream and a
bounded queue of encoded audio that the HTTP response drains. The producer parses tokens on the
event loop (a regex per chunk) and hands whole frames to a worker thread for decoding, tempo and
encoding, so the loop never blocks on ONNX Runtime or FFmpeg and concurrent requests interleave
freely; the one ONNX session is shared (its `run` is thread-safe). Backpressure: when a client reads
slowly the queue fills, the producer waits, and the backend's TCP window closes.

Long input is split at sentence boundaries (the model drifts on long prompts) and the segments are
generated one after another, joined with a short crossfade.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from runtime.codec.encoders import SUPPORTED_FORMATS, open_encoder
from runtime.codec.prompt import UnknownVoiceError, build_text_prompt, validate_voice
from runtime.codec.protocol import SAMPLE_RATE, Frame
from runtime.codec.snac_onnx import SnacOnnxDecoder
from runtime.codec.streaming import StreamingDecoder
from runtime.codec.text_split import SegmentJoiner, split_text
from runtime.codec.tokens import TokenStreamParser
from runtime.frontend.backend_client import BackendClient
from runtime.frontend.decode_pool import FIRST_AUDIO, STEADY, DecodePool
from runtime.frontend.errors import APIError, BackendError, BackendTimeout, BackendUnavailable
from runtime.frontend.schemas import SpeechRequest
from runtime.frontend.settings import Settings
from runtime.frontend.tempo import TempoFilter

__all__ = ["MODEL_ALIASES", "SpeechJob", "SpeechService", "SpeechStats", "SpeechStream"]

log = logging.getLogger("orpheus.frontend.speech")

# Names OpenAI clients send by default; all mean "the deployed Orpheus model".
MODEL_ALIASES = ("orpheus", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
STREAM_FORMATS = ("audio", "sse")  # audio: the file itself; sse: OpenAI's events (sse.py)
QUEUE_CHUNKS = 16  # encoded chunks buffered per response before the producer waits
_CANCEL_GRACE_S = 1.0  # how long past the deadline the producer gets to end by itself

T = TypeVar("T")


@dataclass(frozen=True)
class SpeechJob:
    segments: tuple[str, ...]
    voice: str
    fmt: str
    speed: float
    stream: bool
    chars: int


@dataclass
class SpeechStats:
    """What the access log reports about one response."""

    voice: str = ""
    fmt: str = ""
    chars: int = 0
    segments: int = 0
    frames: int = 0
    samples: int = 0  # after tempo: what the client hears
    invalid_tokens: int = 0
    dropped_tokens: int = 0
    outcome: str = "pending"  # complete | failed | aborted | cancelled
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "voice": self.voice,
            "format": self.fmt,
            "input_chars": self.chars,
            "segments": self.segments,
            "frames": self.frames,
            "audio_seconds": round(self.samples / SAMPLE_RATE, 3),
            "invalid_tokens": self.invalid_tokens,
            "dropped_tokens": self.dropped_tokens,
            "outcome": self.outcome,
            **({"error": self.error} if self.error else {}),
        }


class _AudioPipeline:
    """Frames -> PCM -> crossfaded -> tempo -> encoded bytes. Synchronous; the producer calls it
    in a worker thread, one call at a time."""

    def __init__(self, decoder: SnacOnnxDecoder, fmt: str, speed: float, stats: SpeechStats):
        self._decoder = decoder
        self._encoder = open_encoder(fmt, SAMPLE_RATE)
        self._joiner = SegmentJoiner(sample_rate=SAMPLE_RATE)
        self._tempo = TempoFilter(speed, SAMPLE_RATE) if speed != 1.0 else None
        self._segment: StreamingDecoder | None = None
        self._stats = stats

    def begin_segment(self) -> None:
        self._segment = StreamingDecoder(self._decoder)

    def push(self, frames: Sequence[Frame]) -> bytes:
        assert self._segment is not None
        return self._emit(self._joiner.push(self._segment.push(frames)))

    def end_segment(self) -> bytes:
        assert self._segment is not None
        pcm = self._joiner.push(self._segment.flush())
        self._segment = None
        return self._emit(np.concatenate([pcm, self._joiner.end_segment()]))

    def finish(self) -> bytes:
        out = self._emit(self._joiner.finish())
        if self._tempo is not None:
            out += self._emit(self._tempo.finish(), tempo=False)
        return out + self._encoder.finish()

    def _emit(self, pcm: np.ndarray, *, tempo: bool = True) -> bytes:
        if tempo and self._tempo is not None and pcm.size:
            pcm = self._tempo.process(pcm)
        if not pcm.size:
            # Never call the encoder with nothing: a WAV encoder would answer with a bare header,
            # which must not go out before there is audio behind it.
            return b""
        self._stats.samples += int(pcm.size)
        return self._encoder.encode(pcm)


class _End:
    pass


_END = _End()


class SpeechStream:
    """The encoded audio of one request, produced by a background task."""

    def __init__(self, service: SpeechService, job: SpeechJob, stats: SpeechStats) -> None:
        self._service = service
        self._job = job
        self.stats = stats
        self._queue: asyncio.Queue[bytes | BaseException | _End] = asyncio.Queue(QUEUE_CHUNKS)
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + service.settings.api_timeout
        self._task = asyncio.create_task(self._run(), name="orpheus-speech")
        self._done = False
        # Why the backend is being retried right now (None: it answered, or no retry yet).
        self._retrying: str | None = None

    async def first(self) -> bytes:
        """The first audio bytes; raises APIError (502/503/504) if none come before the deadline."""
        remaining = self._deadline - self._loop.time()
        try:
            # The producer's HTTP reads end at the deadline on their own (a clean close of the
            # backend connection); cancelling it is the fallback, after a grace period.
            item = await asyncio.wait_for(self._queue.get(),
                                          timeout=max(remaining, 0.0) + _CANCEL_GRACE_S)
        except TimeoutError:
            await self.aclose()
            if self._retrying is not None:
                # The deadline fell while the backend was still refusing: that is unavailability,
                # whichever of the two clocks noticed first.
                raise BackendUnavailable(
                    f"{self._retrying}; no answer within {self._service.settings.api_timeout:g} s"
                ) from None
            raise BackendTimeout(
                f"no audio from the backend within {self._service.settings.api_timeout:g} s "
                "(ORPHEUS_API_TIMEOUT)"
            ) from None
        return self._unwrap(item, first=True)

    async def rest(self) -> AsyncIterator[bytes]:
        """Everything after `first()`; raises APIError if the backend fails mid-stream."""
        while not self._done:
            data = self._unwrap(await self._queue.get(), first=False)
            if data:
                yield data

    def _unwrap(self, item: bytes | BaseException | _End, *, first: bool) -> bytes:
        if isinstance(item, _End):
            self._done = True
            if first:  # the producer guarantees audio before _END; keep the promise visible
                raise BackendError("the backend produced no audio")
            return b""
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def _on_retry(self, reason: str | None) -> None:
        self._retrying = reason

    async def aclose(self) -> None:
        """Stop producing (client gone, deadline, error): cancels the backend request."""
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            await self._produce()
        except asyncio.CancelledError:
            raise
        except APIError as exc:
            await self._queue.put(exc)
        except Exception:  # a bug or a decoder failure: fail this request, keep serving
            log.exception("speech pipeline failed")
            await self._queue.put(APIError(500, "audio generation failed", type="server_error"))
        else:
            await self._queue.put(_END)

    def _priority(self) -> int:
        return FIRST_AUDIO if self.stats.samples == 0 else STEADY

    async def _produce(self) -> None:
        service, job, stats = self._service, self._job, self.stats
        # Made in a worker while the backend request is being sent: opening an FFmpeg encoder takes
        # a few milliseconds that should not add to the time to first byte.
        making = asyncio.ensure_future(
            service.call(FIRST_AUDIO, _AudioPipeline, service.decoder, job.fmt, job.speed, stats)
        )
        try:
            await self._generate(making)
        finally:
            if not making.done():
                making.cancel()
            elif not making.cancelled():
                making.exception()  # retrieved: a failure here was already reported another way

    async def _generate(self, making: asyncio.Future[_AudioPipeline]) -> None:
        service, job, stats = self._service, self._job, self.stats
        pipeline: _AudioPipeline | None = None
        for index, segment in enumerate(job.segments):
            deadline = (
                self._deadline if index == 0 else self._loop.time() + (service.settings.api_timeout)
            )
            parser = TokenStreamParser()
            started = False
            prompt = build_text_prompt(segment, job.voice)
            stream = service.backend.stream_text(prompt, deadline, self._on_retry)
            async with contextlib.aclosing(stream) as texts:
                async for text in texts:
                    frames = parser.feed(text)
                    if frames:
                        if pipeline is None:
                            pipeline = await making
                        if not started:
                            pipeline.begin_segment()
                            started = True
                        stats.frames += len(frames)
                        data = await service.call(self._priority(), pipeline.push, frames)
                        await self._put(data)
                    if parser.ended:
                        break  # end of speech: closing the stream frees the backend slot
            parser.finish()
            stats.segments += 1
            stats.invalid_tokens += parser.invalid_tokens
            stats.dropped_tokens += parser.dropped_tokens
            if started:
                assert pipeline is not None
                await self._put(await service.call(self._priority(), pipeline.end_segment))
        if stats.frames == 0 or pipeline is None:
            # Never a 200 with empty audio: a backend that answers without audio tokens is broken
            # (wrong model, wrong prompt format) and the client must hear about it.
            raise BackendError(
                "the backend returned no audio tokens "
                f"({stats.invalid_tokens} invalid, {stats.dropped_tokens} out of order); "
                "is ORPHEUS_API_URL serving an Orpheus model?"
            )
        await self._put(await service.call(self._priority(), pipeline.finish))

    async def _put(self, data: bytes) -> None:
        if data:
            await self._queue.put(data)


@dataclass
class SpeechService:
    settings: Settings
    backend: BackendClient
    decoder: SnacOnnxDecoder
    pool: DecodePool
    formats: tuple[str, ...] = SUPPORTED_FORMATS
    _models: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._models = frozenset({self.settings.model_name.lower(), *MODEL_ALIASES})

    async def call(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the decode pool, keeping the request id for its log lines."""
        context = contextvars.copy_context()
        future = self.pool.submit(priority, lambda: context.run(fn, *args))
        return await asyncio.wrap_future(future)

    def prepare(self, request: SpeechRequest) -> SpeechJob:
        """Check a request against the deployment's limits; a 400 APIError names the field."""
        settings = self.settings
        if request.model.lower() not in self._models:
            raise APIError(
                400,
                f"unknown model {request.model!r}; use {settings.model_name!r} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )
        text = request.input.strip()
        if not text:
            raise APIError(400, "'input' is empty", param="input", code="empty_input")
        if len(text) > settings.max_input_chars:
            raise APIError(
                400,
                f"'input' has {len(text)} characters; the limit is {settings.max_input_chars}",
                param="input",
                code="input_too_long",
            )
        name = request.voice if isinstance(request.voice, str) else request.voice.id
        try:
            voice = validate_voice(name, settings.voices_extra)
        except UnknownVoiceError as exc:
            raise APIError(400, str(exc), param="voice", code="invalid_voice") from None
        # Only a missing format means the default: "" is a mistake (OpenAI answers it with 400).
        fmt = (settings.default_format if request.response_format is None
               else request.response_format).lower()
        if fmt not in self.formats:
            raise APIError(
                400,
                f"unsupported response_format {fmt!r}; supported: {', '.join(self.formats)}",
                param="response_format",
                code="unsupported_format",
            )
        if request.stream_format not in (None, *STREAM_FORMATS):
            raise APIError(
                400,
                f"unsupported stream_format {request.stream_format!r}; use 'audio' or 'sse'",
                param="stream_format",
                code="unsupported_stream_format",
            )
        if request.instructions and request.instructions.strip():
            raise APIError(
                400,
                "'instructions' is not supported by Orpheus; put emotion tags such as <laugh> "
                "in the input instead",
                param="instructions",
                code="unsupported_parameter",
            )
        segments = tuple(split_text(text, max_chars=settings.segment_chars))
        return SpeechJob(
            segments=segments,
            voice=voice,
            fmt=fmt,
            speed=float(request.speed),
            stream=request.stream,
            chars=len(text),
        )

    def start(self, job: SpeechJob, stats: SpeechStats | None = None) -> SpeechStream:
        stats = stats or SpeechStats()
        stats.voice, stats.fmt, stats.chars = job.voice, job.fmt, job.chars
        return SpeechStream(self, job, stats)
