"""Pure pieces of the frontend that need no server: tempo stages, the priority pool, settings."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.frontend.auth import matching_key_name
from runtime.frontend.decode_pool import FIRST_AUDIO, STEADY, DecodePool
from runtime.frontend.settings import SettingsError, load_settings
from runtime.frontend.tempo import TempoFilter, tempo_stages


@given(st.floats(min_value=0.25, max_value=4.0))
def test_tempo_stages_multiply_to_the_speed_and_stay_in_atempos_clean_range(speed):
    stages = tempo_stages(speed)
    assert 1 <= len(stages) <= 2
    assert math.prod(stages) == pytest.approx(speed, rel=1e-9)
    assert all(0.5 - 1e-9 <= s <= 2.0 + 1e-9 for s in stages)


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.75, 2.0, 4.0])
@pytest.mark.parametrize("chunk", [2048, 700])
def test_tempo_keeps_the_tail_and_gives_exactly_samples_over_speed(speed, chunk):
    # Silence, then a tone burst in the last 2048 samples: the burst is what a lost tail loses.
    n = 10 * 2048
    pcm = np.zeros(n, dtype=np.int16)
    pcm[-2048:] = (np.sin(2 * np.pi * 220 * np.arange(2048) / 24000) * 8000).astype(np.int16)
    tempo = TempoFilter(speed)
    out = np.concatenate(
        [tempo.process(pcm[i : i + chunk]) for i in range(0, n, chunk)] + [tempo.finish()]
    )
    # The promised duration, to the sample (finish cuts the flush padding there); before the fix
    # 1,700 samples were missing at 0.25 and 590 at 0.5.
    assert out.size == round(n / speed)
    # ...made of the audio, not of padding: the burst lasts until atempo's own smear before the
    # end (measured 110-290 samples), and when slowing down it ends by itself, not cut off.
    loud = np.nonzero(np.abs(out) > 1000)[0]
    gap = out.size - 1 - int(loud[-1])
    assert gap <= 480
    if speed < 1:
        assert gap > 0


def test_first_audio_work_overtakes_queued_steady_work():
    pool = DecodePool(1)
    release = threading.Event()
    order: list[str] = []
    try:
        blocker = pool.submit(STEADY, release.wait)  # occupies the only worker
        futures = [
            pool.submit(STEADY, lambda: order.append("steady-1")),
            pool.submit(STEADY, lambda: order.append("steady-2")),
            pool.submit(FIRST_AUDIO, lambda: order.append("first-audio")),
        ]
        release.set()
        for future in [blocker, *futures]:
            future.result(5)
    finally:
        pool.shutdown()
    assert order == ["first-audio", "steady-1", "steady-2"]


def test_cancelled_work_is_skipped_and_errors_propagate():
    pool = DecodePool(1)
    release = threading.Event()
    ran: list[int] = []
    try:
        blocker = pool.submit(STEADY, release.wait)
        skipped = pool.submit(STEADY, lambda: ran.append(1))
        assert skipped.cancel()
        failing = pool.submit(STEADY, lambda: 1 / 0)
        release.set()
        blocker.result(5)
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
    finally:
        pool.shutdown()
    assert ran == []


def test_key_matching_checks_every_key():
    keys = (("default", b"alpha"), ("key-2", b"beta"))
    assert matching_key_name("alpha", keys) is not None
    assert matching_key_name("beta", keys) is not None
    assert matching_key_name("alph", keys) is None and matching_key_name("alphabeta", keys) is None
    assert matching_key_name("", keys) is None
    assert matching_key_name("beta", keys) == "key-2"
    assert matching_key_name("alpha", keys) == "default"
    assert matching_key_name("gamma", keys) is None


def test_settings_errors_name_the_variables_and_hide_values(tmp_path):
    with pytest.raises(SettingsError) as caught:
        load_settings(
            API_KEY_SECRET=" , ",
            SNAC_MODEL_PATH=str(tmp_path / "none.onnx"),
            ORPHEUS_API_URL="backend:1234",
            ORPHEUS_BACKEND_AUTH="iam",
            ORPHEUS_TEMPERATURE="hot",
        )
    message = str(caught.value)
    for name in (
        "API_KEY_SECRET",
        "SNAC_MODEL_PATH",
        "ORPHEUS_API_URL",
        "ORPHEUS_BACKEND_AUTH",
        "ORPHEUS_TEMPERATURE",
    ):
        assert name in message


def test_settings_defaults_and_derived_values(tmp_path):
    model = tmp_path / "snac.onnx"
    model.write_bytes(b"x")
    settings = load_settings(
        API_KEY_SECRET="k1,k2 ,\n",
        SNAC_MODEL_PATH=str(model),
        ORPHEUS_API_URL="https://orpheus-backend-xyz-uc.a.run.app/v1/completions",
    )
    assert settings.api_keys == (("default", b"k1"), ("key-2", b"k2"))
    assert settings.audience == "https://orpheus-backend-xyz-uc.a.run.app"
    assert (settings.port, settings.temperature, settings.top_p, settings.repetition_penalty) == (
        5005,
        0.6,
        0.9,
        1.1,
    )
    assert settings.backend_auth == "none"
    assert "k1" not in repr(settings)  # SecretStr: never printed by accident


def test_importing_the_app_does_no_work():
    # Heavy or side-effecting modules load in the lifespan or on first use, never at import.
    import subprocess
    import sys

    code = (
        "import sys, threading, runtime.frontend.app, runtime.frontend.__main__;"
        "heavy = [m for m in ('onnxruntime', 'av', 'uvicorn', 'torch',"
        " 'google.auth.transport.requests') if m in sys.modules];"
        "print(heavy, threading.active_count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[] 1"


def test_settings_reject_an_unknown_log_level_or_default_format(tmp_path):
    # A typo must stop start-up with the one-line SettingsError naming the variable (exit 2), not
    # a traceback from logging.setLevel or from the lifespan.
    model = tmp_path / "snac.onnx"
    model.write_bytes(b"x")
    with pytest.raises(SettingsError) as caught:
        load_settings(
            API_KEY_SECRET="k",
            SNAC_MODEL_PATH=str(model),
            ORPHEUS_LOG_LEVEL="verbose",
            ORPHEUS_DEFAULT_FORMAT="ogg",
        )
    assert "ORPHEUS_LOG_LEVEL" in str(caught.value)
    assert "ORPHEUS_DEFAULT_FORMAT" in str(caught.value)
    settings = load_settings(
        API_KEY_SECRET="k",
        SNAC_MODEL_PATH=str(model),
        ORPHEUS_LOG_LEVEL="debug",
        ORPHEUS_DEFAULT_FORMAT="WAV",
    )
    assert (settings.log_level, settings.default_format) == ("DEBUG", "wav")


def test_a_connections_access_log_sums_every_utterance():
    """What a POST's access line reports, a WebSocket's reports summed over its utterances: the
    truncated segments too, and the first wait for a model to load."""
    from runtime.frontend.speech import SpeechStats
    from runtime.frontend.speech_socket import SocketStats

    total = SocketStats()
    total.add(SpeechStats(frames=3, truncated_segments=1))
    total.add(SpeechStats(frames=2, model_was="unloaded", model_load_ms=1800.0))
    total.add(SpeechStats(frames=1, truncated_segments=1, model_was="loading", model_load_ms=5.0))
    fields = total.fields()
    assert fields["frames"] == 6 and fields["truncated_segments"] == 2
    assert (fields["model_was"], fields["model_load_ms"]) == ("unloaded", 1800.0)
