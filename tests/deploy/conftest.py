"""Fixtures for the deploy tests: the fake cloud plus the Compute REST fake, and helpers that
bring a fake project to the point where a phase can run."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakecloud.compute import FakeCompute


@pytest.fixture
def cloud(fake_cloud: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``fake_cloud`` with ``cloud.compute`` (REST, via ORPHEUS_REST_ENDPOINT) started too."""
    compute = FakeCompute(fake_cloud, regions=["us-central1"]).start()
    fake_cloud.compute = compute
    monkeypatch.setenv("ORPHEUS_REST_ENDPOINT", compute.url)
    try:
        yield fake_cloud
    finally:
        compute.stop()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A small file that passes the GGUF magic check (the content is never loaded here)."""
    path = tmp_path / "orpheus-tiny.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(4096))
    return path


@pytest.fixture
def frontend_uri_hook(cloud: Any, frontend_factory: Callable[..., Any]) -> dict[str, Any]:
    """When the frontend's revision becomes ready in the fake Cloud Run, serve the real frontend
    app locally (key from the fake Secret Manager, the scripted fake backend) and report its URL
    as the service URI, so `orpheus test` exercises a real HTTP server."""
    started: dict[str, Any] = {}

    def on_ready(service: Any) -> str | None:
        if not service.name.endswith("-frontend"):
            return None
        env = {e.name: e.value for e in service.template.containers[0].env if e.value}
        payloads = cloud.services["secretmanager"].payloads("orpheus-api-key")
        overrides = {k: v for k, v in env.items()
                     if k in ("ORPHEUS_TEMPERATURE", "ORPHEUS_TOP_P", "ORPHEUS_MAX_TOKENS")}
        running = frontend_factory(API_KEY_SECRET=payloads[-1].decode(), **overrides)
        started["frontend"] = running
        started["spec"] = service
        return running.base_url

    cloud.services["run"].on_ready = on_ready
    return started


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(m.name for m in tar.getmembers())
