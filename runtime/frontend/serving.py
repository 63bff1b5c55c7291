"""How uvicorn serves the app: the options the container's command and the tests share.

* HTTP/1.1 is parsed by h11 with a bound on the request head: httptools (uvicorn's default when it
  is installed) reads a header of any size, so a 20 MB header would be buffered before the key
  check could refuse it. With h11, a head over `MAX_HEADER_BYTES` ends the connection with a 400
  as soon as that many bytes have arrived.
* WebSocket messages from a client are at most the HTTP body limit, and audio messages are not
  compressed (permessage-deflate would spend CPU on PCM, which barely compresses).
"""

from __future__ import annotations

from typing import Any

from runtime.frontend.settings import Settings

__all__ = ["MAX_HEADER_BYTES", "uvicorn_options"]

# Request line plus headers. An ID token or a key is well under 2 KiB; browsers send < 16 KiB.
MAX_HEADER_BYTES = 32 * 1024


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "ws_max_size": settings.max_body_bytes,
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 10,
    }
