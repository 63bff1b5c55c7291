"""Resumable HTTPS download into a file, written under ``.part`` and renamed when complete.

Multi-GB model files over a home connection fail halfway often enough that starting over is not
acceptable: an interrupted download continues from the bytes already on disk (HTTP Range).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx

from orpheus_deploy.errors import OrpheusError

# (bytes so far, total bytes or None)
Progress = Callable[[int, int | None], None]
_CHUNK = 1024 * 1024


class DownloadError(OrpheusError):
    pass


def download(url: str, dest: Path, progress: Progress | None = None,
             client: httpx.Client | None = None, attempts: int = 3) -> Path:
    """Download ``url`` to ``dest`` (resuming a previous ``dest.part``); return ``dest``."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    own_client = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))
    try:
        last_error: Exception | None = None
        for _ in range(attempts):
            try:
                _download_once(http, url, part, progress)
                os.replace(part, dest)
                return dest
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                last_error = exc  # the next attempt resumes from what is on disk
        raise DownloadError(f"downloading {url} failed: {last_error}",
                            "check the connection and run the command again; it resumes")
    finally:
        if own_client:
            http.close()


def _download_once(http: httpx.Client, url: str, part: Path, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with http.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # the .part is already complete
            return
        if response.status_code not in (200, 206):
            raise DownloadError(f"downloading {url} failed: HTTP {response.status_code}",
                                "check the URL (or pass a local file instead)")
        if response.status_code == 200:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get("content-length")
        total = have + int(length) if length is not None else None
        with part.open("ab" if have else "wb") as f:
            for chunk in response.iter_bytes(_CHUNK):
                f.write(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(have, total)
    if total is not None and have != total:
        raise httpx.RemoteProtocolError(f"connection closed at {have} of {total} bytes")
