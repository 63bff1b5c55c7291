"""The resumable download, against a real HTTP server on 127.0.0.1 (with and without Range)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from orpheus_deploy.local.download import DownloadError, download
from tests.fixtures.local_http import serving

PAYLOAD = os.urandom(300_001)


class _Handler(BaseHTTPRequestHandler):
    honour_range = True
    requests: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        requested = self.headers.get("Range")
        type(self).requests.append(requested)
        if self.path != "/model.gguf":
            self.send_error(404)
            return
        start = 0
        if requested and self.honour_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = []
    _Handler.honour_range = True
    with serving(_Handler) as url:
        yield url


def test_fresh_download_reports_progress(server: str, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = download(f"{server}/model.gguf", tmp_path / "m.gguf", lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not (tmp_path / "m.gguf.part").exists()


def test_an_interrupted_download_resumes(server: str, tmp_path: Path) -> None:
    (tmp_path / "m.gguf.part").write_bytes(PAYLOAD[:120_000])
    dest = download(f"{server}/model.gguf", tmp_path / "m.gguf")
    assert dest.read_bytes() == PAYLOAD
    assert _Handler.requests == ["bytes=120000-"]


def test_a_server_ignoring_range_restarts_cleanly(server: str, tmp_path: Path) -> None:
    _Handler.honour_range = False
    (tmp_path / "m.gguf.part").write_bytes(b"stale bytes")
    assert download(f"{server}/model.gguf", tmp_path / "m.gguf").read_bytes() == PAYLOAD


def test_a_complete_file_is_not_fetched_again(server: str, tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF already here")
    download(f"{server}/model.gguf", tmp_path / "m.gguf")
    assert _Handler.requests == []


def test_http_errors_are_clear(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server}/missing.gguf", tmp_path / "m.gguf")
