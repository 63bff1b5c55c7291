"""`orpheus say` against a deployment in the local cloud: the URL comes from Cloud Run and the key
from Secret Manager (read with the user's credentials, through the real client libraries); the
audio from the real frontend in front of the real llama-server on the tiny model."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from tests.e2e.local_cloud import LocalCloud
from tests.fixtures.plugin_localcloud import DEPLOYED_FRAMES
from tests.frontend.audio import SAMPLE_RATE, SAMPLES_PER_FRAME

pytestmark = pytest.mark.llama_server


def test_say_finds_the_service_and_its_key_by_itself(deployed_cloud: LocalCloud,
                                                      tmp_path: Path) -> None:
    lc = deployed_cloud
    out = tmp_path / "cloud.wav"
    result = lc.cli("say", "Hello from the local cloud <laugh>", "-o", str(out))
    assert result.exit_code == 0, result.everything
    assert lc.api_key not in result.everything
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        assert wav.getnframes() == DEPLOYED_FRAMES * SAMPLES_PER_FRAME
    assert f"wrote {out}" in result.stderr

    report = lc.cli_json("say", "Once more.", "-o", str(tmp_path / "again.wav"))
    assert report["url"] == lc.frontend_url
    assert report["audio_s"] == pytest.approx(DEPLOYED_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE,
                                              abs=1e-3)
    assert lc.api_key not in json.dumps(report)


def test_say_with_a_key_the_service_does_not_hold(deployed_cloud: LocalCloud,
                                                 tmp_path: Path) -> None:
    wrong = "sk-not-the-deployed-key-0123456789"
    result = deployed_cloud.cli("say", "Hello.", "--key", wrong, "-o", str(tmp_path / "x.wav"))
    assert result.exit_code == 4
    assert f"{deployed_cloud.frontend_url} refused the API key (401" in result.stderr
    assert wrong not in result.everything and deployed_cloud.api_key not in result.everything
    assert list(tmp_path.iterdir()) == []
