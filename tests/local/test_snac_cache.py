"""`orpheus local up` without --snac exports the SNAC decoder once into the cache.

The real exporter runs (as a subprocess, as the CLI runs it) on a local checkpoint directory of
the tiny-config SNAC, in the layout of the public checkpoint (config.json + pytorch_model.bin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpheus_deploy.errors import OrpheusError
from orpheus_deploy.local import assets
from runtime.codec.snac_onnx import SnacOnnxDecoder, companion_paths, stream_model_path
from runtime.codec.streaming import HEAD_BLEND, HEAD_FRAMES, HEAD_SAMPLES
from tests.fixtures.snac import TINY_CONFIG, build_snac


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORPHEUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _checkpoint_dir(root: Path) -> Path:
    import torch

    root.mkdir()
    (root / "config.json").write_text(json.dumps(TINY_CONFIG))
    torch.save(build_snac().state_dict(), root / "pytorch_model.bin")
    return root


def test_export_caches_all_graphs_once(cache: Path, tmp_path: Path) -> None:
    checkpoint = _checkpoint_dir(tmp_path / "snac_24khz")

    first = assets.ensure_snac(None, checkpoint=str(checkpoint))

    assert first == cache / assets.SNAC_FILE
    # The streaming step graph must sit beside it under the name the decoder looks for, or the
    # local stack silently falls back to the slower windowed decode.
    assert stream_model_path(first).is_file()
    decoder = SnacOnnxDecoder(first)
    assert decoder.can_stream
    # And the fast start's head graph, likewise.
    assert decoder.head_span == (HEAD_FRAMES, HEAD_SAMPLES + HEAD_BLEND)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [first.name, *(p.name for p in companion_paths(first))])
    mtime = first.stat().st_mtime_ns
    assert assets.ensure_snac(None, checkpoint=str(checkpoint)) == first
    assert first.stat().st_mtime_ns == mtime  # served from the cache, not exported again


def test_failed_export_says_why_and_leaves_nothing(cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")

    with pytest.raises(OrpheusError) as info:
        assets.ensure_snac(None, checkpoint=str(broken))

    assert "exporting the SNAC decoder" in str(info.value)
    assert "JSONDecodeError" in str(info.value) or "Expecting" in str(info.value)
    assert list(cache.iterdir()) == []
