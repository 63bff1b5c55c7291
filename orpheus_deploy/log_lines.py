"""One log entry as one line for people, or as the API's JSON for programs.

    2026-11-30 10:00:01.123  frontend  INFO     POST /v1/audio/speech 200  req=abc key=default …

The frontend's JSON lines (runtime/frontend/logging_setup.py) land in ``jsonPayload``: the line
shows their ``message`` and then the fields worth a glance, request id and key name first (the
access log's key is a NAME, never the key). Cloud Run's own request log carries ``httpRequest``;
plain-text lines (llama-server) are ``textPayload``. Pure functions of the entry.
"""

from __future__ import annotations

import json
from typing import Any

# Access-log and speech fields, in display order, with their short names.
_LEAD = (("request_id", "req"), ("key", "key"))
_ACCESS = (("voice", "voice"), ("format", "fmt"), ("audio_seconds", "audio_s"),
           ("ttfb_ms", "ttfb_ms"), ("latency_ms", "ms"), ("outcome", "outcome"),
           ("error", "error"))
# Shown by the line itself, or noise on every line.
_HIDDEN = {"message", "logger", "time", "method", "path", "status", "response_bytes", "complete",
           "input_chars", "segments", "frames", "invalid_tokens", "dropped_tokens", "exception"}
_MAX_VALUE = 120


def entry_dict(entry: Any) -> dict[str, Any]:
    """The entry as Cloud Logging's JSON (camelCase, severity by name): what ``--json`` prints."""
    from google.protobuf import json_format

    return json_format.MessageToDict(type(entry).pb(entry))


def _value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 1] + "…"


def _fields(payload: dict[str, Any]) -> list[str]:
    out = [f"{short}={_value(payload[k])}" for k, short in _LEAD if payload.get(k) is not None]
    if payload.get("complete") is False:
        out.append("complete=no")
    for key, short in _ACCESS:
        value = payload.get(key)
        if value is None or (key == "outcome" and value == "complete"):
            continue
        out.append(f"{short}={_value(value)}")
    shown = {k for k, _ in _LEAD} | {k for k, _ in _ACCESS} | _HIDDEN
    out += [f"{k}={_value(v)}" for k, v in payload.items() if k not in shown and v is not None]
    return out


def _http(request: dict[str, Any]) -> str:
    parts = [request.get("requestMethod", ""), str(request.get("status", "")),
             request.get("requestUrl", "")]
    if request.get("latency"):
        parts.append(str(request["latency"]))
    return " ".join(p for p in parts if p)


def component_of(service: str) -> str:
    """``orpheus-frontend`` -> ``frontend`` (any deployment name)."""
    for component in ("frontend", "backend"):
        if service.endswith(f"-{component}"):
            return component
    return service


def format_entry(data: dict[str, Any]) -> str:
    """``time  service  SEVERITY  message  k=v …`` from ``entry_dict(entry)``."""
    when = data.get("timestamp", "")
    stamp = when.replace("T", " ").rstrip("Z")
    if "." in stamp:
        head, frac = stamp.split(".", 1)
        stamp = f"{head}.{frac[:3]:0<3}"
    service = component_of(data.get("resource", {}).get("labels", {}).get("service_name", "?"))
    severity = data.get("severity", "DEFAULT")
    payload = data.get("jsonPayload")
    if isinstance(payload, dict):
        text = "  ".join(part for part in (_value(payload.get("message", "")),
                                           " ".join(_fields(payload))) if part)
        if payload.get("exception"):
            # The last line of a traceback says what happened; -v/--json has the rest.
            text += f"  [{_value(str(payload['exception']).strip().splitlines()[-1])}]"
    elif "httpRequest" in data:
        text = _http(data["httpRequest"])
    else:
        text = str(data.get("textPayload", "")).rstrip()
    return f"{stamp:<23}  {service:<8}  {severity:<8}  {text}"
