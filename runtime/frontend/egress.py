"""Readiness: can this instance reach the backend's host at all?

On Cloud Run with Direct VPC egress, "you might experience connection establishment delays of a
minute or more on instance startup"; Google recommends an HTTP startup probe that tests a
connection to an egress destination before the instance takes requests (Direct VPC egress page,
Limitations). `GET /ready` is that probe: it asks the backend's origin for `/health` and counts
*any* HTTP answer as connected (a 403 or 404 from Cloud Run's front end included). It sends no
ID token, so the request never passes the backend's invoker IAM check and can never wake a
scaled-to-zero GPU. Once connected, an instance stays ready (the probe runs only at start).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

__all__ = ["EgressCheck"]


class EgressCheck:
    def __init__(self, api_url: str, timeout_s: float = 3.0) -> None:
        parts = urlsplit(api_url)
        self.url = f"{parts.scheme}://{parts.netloc}/health"
        self.timeout_s = timeout_s
        self.connected = False
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, str]:
        """(connected, why not): one attempt; the startup probe's period is the retry."""
        if self.connected:
            return True, ""
        async with self._lock:
            if self.connected:
                return True, ""
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
                    response = await client.get(self.url)
            except httpx.HTTPError as exc:
                return False, f"cannot reach {self.url} yet ({type(exc).__name__})"
            self.connected = True
            return True, f"{self.url} answered {response.status_code}"
