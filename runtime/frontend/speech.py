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
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runtime.codec.encoders import SUPPORTED_FORMATS
from runtime.codec.prompt import DEFAULT_PROMPT_TEMPLATE, UnknownVoiceError, build_text_prompt
from runtime.codec.protocol import SAMPLE_RATE, SAMPLES_PER_FRAME, Frame
from runtime.codec.snac_onnx import SnacOnnxDecoder
from runtime.codec.streaming import StreamingDecoder
from runtime.codec.token_budget import plan_segments, token_budget
from runtime.codec.tokens import TokenStreamParser
from runtime.frontend.backend_client import BackendClient
from runtime.frontend.catalog import ModelCatalog
from runtime.frontend.decode_pool import FIRST_AUDIO, STEADY, DecodePool
from runtime.frontend.errors import APIError, BackendError, BackendTimeout, BackendUnavailable
from runtime.frontend.joined_audio import JoinedAudio
from runtime.frontend.model_status import LoadWatch, ModelStatus
from runtime.frontend.schemas import SpeechRequest
from runtime.frontend.settings import Settings

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
    model: str = ""  # the catalog model that speaks `voice` (runtime/frontend/catalog.py)
    prompt: str = DEFAULT_PROMPT_TEMPLATE  # that model's prompt format


@dataclass
class SpeechStats:
    """What the access log reports about one response."""

    voice: str = ""
    model: str = ""
    fmt: str = ""
    chars: int = 0
    segments: int = 0
    frames: int = 0
    samples: int = 0  # after tempo: what the client hears
    invalid_tokens: int = 0
    dropped_tokens: int = 0
    truncated_segments: int = 0  # segments that reached their max_tokens before end of speech
    outcome: str = "pending"  # complete | failed | aborted | cancelled
    error: str | None = None
    # Set when the backend's router had to load the model for this request (model_status.py).
    model_was: str | None = None  # its status when the request went out: unloaded | loading
    model_load_ms: float | None = None  # until the first token: the load, then the token

    def fields(self) -> dict[str, Any]:
        return {
            "voice": self.voice,
            "model": self.model,
            "format": self.fmt,
            "input_chars": self.chars,
            "segments": self.segments,
            "frames": self.frames,
            "audio_seconds": round(self.samples / SAMPLE_RATE, 3),
            "invalid_tokens": self.invalid_tokens,
            "dropped_tokens": self.dropped_tokens,
            "truncated_segments": self.truncated_segments,
            "outcome": self.outcome,
            **({"error": self.error} if self.error else {}),
            **({"model_was": self.model_was, "model_load_ms": self.model_load_ms}
               if self.model_load_ms is not None else {}),
        }


class _AudioPipeline:
    """Frames -> PCM -> crossfaded -> tempo -> encoded bytes (the last three: `JoinedAudio`).
    Synchronous; the producer calls it in a worker thread, one call at a time."""

    def __init__(self, decoder: SnacOnnxDecoder, fmt: str, speed: float, stats: SpeechStats):
        self._decoder = decoder
        self._audio = JoinedAudio(fmt, speed)
        self._segment: StreamingDecoder | None = None
        self._stats = stats

    def begin_segment(self, *, fast_start: bool = False) -> None:
        """`fast_start`: send an approximate first 21 ms after 2 frames (runtime.codec.streaming);
        worth it only where the listener waits, i.e. for the first segment."""
        self._segment = StreamingDecoder(self._decoder, fast_start=fast_start)

    def push(self, frames: Sequence[Frame]) -> bytes:
        assert self._segment is not None
        pcm = self._segment.push(frames)
        # Every frame pushed becomes 2048 samples: the joiner need not hold back what lies before
        # the last crossfade's worth of them.
        length = self._segment.frames_pushed * SAMPLES_PER_FRAME
        return self._counted(self._audio.push(pcm, at_least=length))

    def end_segment(self, *, truncated: bool = False) -> bytes:
        """`truncated`: the segment was cut by its token limit, mid-speech; it fades out."""
        assert self._segment is not None
        tail, self._segment = self._segment.flush(), None
        return self._counted(self._audio.end_segment(tail, fade_out=truncated))

    def finish(self) -> bytes:
        """Everything still held (an open segment's frames included), then the encoder's end."""
        out = self.end_segment() if self._segment is not None else b""
        return out + self._counted(self._audio.finish())

    def _counted(self, data: bytes) -> bytes:
        self._stats.samples = self._audio.samples
        return data


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
        self._pipeline: _AudioPipeline | None = None  # made once the first frames arrive
        self._queued = False  # audio bytes were handed to the response
        self._load: LoadWatch | None = None  # a routed model's first token, for the access log

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
        service, job = self._service, self._job
        routed = service.catalog.routed
        # Several models: the router may have to load this one first (said in the access log).
        self._load = LoadWatch(service.model_status, job.model, self.stats) if routed else None
        try:
            for index in range(len(job.segments)):
                await self._speak(index, making)
        except APIError:
            if self._pipeline is not None and self._queued:
                # Audio has gone out, so the answer is a cut transfer: first send what the frames
                # that did arrive decode to (the decoder's look-ahead, the join's held tail, the
                # encoder's buffer), instead of dropping it with the connection.
                await self._put(await service.call(self._priority(), self._pipeline.finish))
            raise
        if routed:
            service.model_status.served(job.model)
        assert self._pipeline is not None  # every segment brought audio, or _speak raised
        await self._put(await service.call(self._priority(), self._pipeline.finish))

    async def _speak(self, index: int, making: asyncio.Future[_AudioPipeline]) -> None:
        """One text segment: its backend request, streamed into the pipeline."""
        service, job, stats = self._service, self._job, self.stats
        timeout = service.settings.api_timeout
        deadline = self._deadline if index == 0 else self._loop.time() + timeout
        parser = TokenStreamParser()
        started = False
        segment = job.segments[index]
        limit = min(token_budget(segment), service.backend.params.max_tokens)
        finish: list[str] = []
        stream = service.backend.stream_text(
            build_text_prompt(segment, job.voice, job.prompt), deadline, self._on_retry,
            max_tokens=limit, on_finish=finish.append,
            model=job.model if service.catalog.routed else None,
        )
        try:
            async with contextlib.aclosing(stream) as texts:
                async for text in texts:
                    if self._load is not None:
                        self._load.first_token()
                        self._load = None
                    frames = parser.feed(text)
                    if frames:
                        if self._pipeline is None:
                            self._pipeline = await making
                        if not started:
                            fast = index == 0 and service.settings.fast_start
                            self._pipeline.begin_segment(fast_start=fast)
                            started = True
                        stats.frames += len(frames)
                        data = await service.call(self._priority(), self._pipeline.push, frames)
                        await self._put(data)
                    if parser.ended:
                        break  # end of speech: closing the stream frees the backend slot
        finally:
            parser.finish()
            stats.segments += 1
            stats.invalid_tokens += parser.invalid_tokens
            stats.dropped_tokens += parser.dropped_tokens
        if not started:
            # A segment without audio must not vanish from the answer (nor be the whole answer:
            # never a 200 with empty audio). Before any audio this is a 502, after it a cut.
            count = len(job.segments)
            where = f" for segment {index + 1} of {count}" if count > 1 else ""
            hint = "; is ORPHEUS_API_URL serving an Orpheus model?" if stats.frames == 0 else ""
            raise BackendError(
                f"the backend returned no audio tokens{where} ({parser.invalid_tokens} invalid, "
                f"{parser.dropped_tokens} out of order){hint}"
            )
        # Cut by the token limit rather than ended by the model: the text planned for it was
        # not all spoken. Rare by construction (the limit allows slow speech); end it cleanly
        # (faded out) and report it rather than fail the whole answer.
        truncated = "length" in finish or (
            not finish and not parser.ended and parser.tokens_seen >= limit
        )
        if truncated:
            stats.truncated_segments += 1
            log.warning(
                "segment %d of %d reached its limit of %d tokens before the end of speech; "
                "its audio is cut (raise ORPHEUS_MAX_TOKENS or lower ORPHEUS_SEGMENT_CHARS)",
                index + 1, len(job.segments), limit,
            )
        assert self._pipeline is not None
        end = functools.partial(self._pipeline.end_segment, truncated=truncated)
        await self._put(await service.call(self._priority(), end))

    async def _put(self, data: bytes) -> None:
        if data:
            self._queued = True
            await self._queue.put(data)


@dataclass
class SpeechService:
    settings: Settings
    backend: BackendClient
    decoder: SnacOnnxDecoder
    pool: DecodePool
    formats: tuple[str, ...] = SUPPORTED_FORMATS
    catalog: ModelCatalog = field(init=False)
    model_status: ModelStatus = field(init=False)
    _models: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.catalog = self.settings.catalog()
        self.model_status = ModelStatus(self.backend)
        # OpenAI's names and the default model's mean "whichever model speaks the voice".
        self._models = frozenset({self.settings.model_name.lower(), *MODEL_ALIASES,
                                  self.catalog.default.name.lower()})

    async def call(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the decode pool, keeping the request id for its log lines."""
        context = contextvars.copy_context()
        future = self.pool.submit(priority, lambda: context.run(fn, *args))
        return await asyncio.wrap_future(future)

    def prepare(self, request: SpeechRequest) -> SpeechJob:
        """Check a request against the deployment's limits; a 400 APIError names the field."""
        settings = self.settings
        named = self.catalog.model(request.model)
        if request.model.lower() not in self._models and named is None:
            names = ", ".join(repr(m.name) for m in self.catalog.models)
            raise APIError(
                400,
                f"unknown model {request.model!r}; use {names} (GET /v1/models)",
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
            model, voice = self.catalog.resolve_voice(name)
        except UnknownVoiceError as exc:
            raise APIError(400, str(exc), param="voice", code="invalid_voice") from None
        if named is not None and named is not model and request.model.lower() not in self._models:
            raise APIError(
                400,
                f"voice {voice!r} is spoken by model {model.name!r}, not {named.name!r}; omit "
                "'model' or use 'orpheus' to let the voice choose",
                param="voice",
                code="invalid_voice",
            )
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
        # Short enough for the model to stay steady, and for each one's token budget to fit
        # what a backend request may generate (ORPHEUS_MAX_TOKENS).
        segments = tuple(plan_segments(text, settings.segment_chars, settings.max_tokens))
        return SpeechJob(
            segments=segments,
            voice=voice,
            fmt=fmt,
            speed=float(request.speed),
            stream=request.stream,
            chars=len(text),
            model=model.name,
            prompt=model.prompt,
        )

    def start(self, job: SpeechJob, stats: SpeechStats | None = None) -> SpeechStream:
        stats = stats or SpeechStats()
        stats.voice, stats.fmt, stats.chars = job.voice, job.fmt, job.chars
        stats.model = job.model
        return SpeechStream(self, job, stats)
