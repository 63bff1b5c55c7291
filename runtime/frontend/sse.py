"""`stream_format: "sse"`: the audio as OpenAI's speech server-sent events.

OpenAI's API reference (`CreateSpeechResponseStreamEvent`) defines two events, each one
`data: <JSON>` line and a blank line:

    {"type": "speech.audio.delta", "audio": "<base64 of the next bytes of the file>"}
    {"type": "speech.audio.done", "usage": {"input_tokens", "output_tokens", "total_tokens"}}

The deltas concatenated (after base64 decoding) are exactly the file that `stream_format:
"audio"` returns in the same `response_format`, so every format works. `usage` counts the
backend's tokens: `input_tokens` are the prompt tokens the backend reports (llama-server does, in
its last event; a backend that does not report them gives 0), `output_tokens` the tokens it
generated (reported, else counted here: 7 per audio frame plus any invalid ones).

Failures keep the rules of audio streams: before the first event the answer is the usual JSON
error with its 4xx/5xx status; after it, the stream sends one event in OpenAI's error shape,
`{"type": "error", "error": {"message", "type", "param", "code"}}`, and ends without
`speech.audio.done`, so a client can tell a failed stream from a complete one without parsing a
broken transfer.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from runtime.codec.protocol import FRAME_TOKENS
from runtime.frontend.audio_response import whole_file
from runtime.frontend.backend_client import TokenUsage
from runtime.frontend.errors import APIError, error_body
from runtime.frontend.speech import SpeechStats

__all__ = ["EVENT_STREAM", "SpeechEvents", "event", "speech_usage"]

EVENT_STREAM = "text/event-stream"
# A buffered (`stream: false`) answer still arrives as events; each carries at most this much
# audio so that no single line is megabytes long.
_WHOLE_CHUNK = 48 * 1024


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def speech_usage(stats: SpeechStats, usage: TokenUsage) -> dict[str, int]:
    if usage.reports:
        prompt, generated = usage.prompt_tokens, usage.completion_tokens
    else:
        prompt = 0
        generated = stats.frames * FRAME_TOKENS + stats.invalid_tokens + stats.dropped_tokens
    return {"input_tokens": prompt, "output_tokens": generated,
            "total_tokens": prompt + generated}


class SpeechEvents:
    """The `Framing` (audio_response.py) of `stream_format: "sse"`."""

    def content_type(self, fmt: str) -> str:
        return EVENT_STREAM

    def chunk(self, audio: bytes) -> bytes:
        return event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})

    def whole(self, fmt: str, audio: bytes, stats: SpeechStats, usage: TokenUsage) -> bytes:
        data = whole_file(fmt, audio)
        deltas = [self.chunk(data[i:i + _WHOLE_CHUNK]) for i in range(0, len(data), _WHOLE_CHUNK)]
        return b"".join(deltas) + self.end(stats, usage)

    def end(self, stats: SpeechStats, usage: TokenUsage) -> bytes:
        return event({"type": "speech.audio.done", "usage": speech_usage(stats, usage)})

    def failure(self, exc: APIError) -> bytes | None:
        return event({"type": "error", **error_body(exc.message, exc.type, exc.param, exc.code)})
