"""`orpheus say` against the local stack: the real frontend (uvicorn on 127.0.0.1) in front of the
scripted fake backend, the CLI run as a user runs it (in-process, or as a process for stdout).

Every run is searched for the key: it must never appear in any output.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.fake_backend import Behavior, FakeBackend
from tests.fixtures.plugin_cloud import CliResult
from tests.fixtures.plugin_frontend import RunningFrontend
from tests.fixtures.plugin_llama import free_port
from tests.fixtures.tools import missing_tool
from tests.frontend.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, decoded_seconds, wav_samples

FRAMES = 10  # the fake backend's default answer
RunCli = Callable[..., CliResult]


def say(run_cli: RunCli, fe: RunningFrontend, *args: str, key: str | None = None,
        env: dict[str, str] | None = None) -> CliResult:
    # --url and --key first: a test's own --url, later on the line, wins.
    result = run_cli("say", "--url", fe.base_url, "--key", key or fe.api_key, *args, env=env)
    assert fe.api_key not in result.everything
    return result


def test_say_writes_a_complete_wav_with_every_frame(
        frontend: RunningFrontend, fake_backend: FakeBackend, run_cli: RunCli,
        tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    result = say(run_cli, frontend, "Hello there <laugh>", "--voice", "leo", "-o", str(out))
    assert result.exit_code == 0, result.everything
    # A plain WAV with its real sizes (the stream's placeholders were patched at the end).
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        assert wav.getnframes() == FRAMES * SAMPLES_PER_FRAME
    assert wav_samples(out.read_bytes(), streaming=False).size == FRAMES * SAMPLES_PER_FRAME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.wav"]  # no .part left
    assert "leo: Hello there <laugh>" in fake_backend.completions[-1].body["prompt"]
    seconds = FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE
    assert f"{seconds:.2f} s of audio (wav, voice leo): wrote {out}; first byte after" \
        in result.stderr


def test_the_format_follows_the_file_name_and_json_reports_the_figures(
        frontend: RunningFrontend, run_cli: RunCli, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hello.flac"
    result = say(run_cli, frontend, "--json", "Hello in flac.", "-o", str(out), "--speed", "1")
    assert result.exit_code == 0, result.everything
    report = json.loads(result.stdout)
    assert report["format"] == "flac" and report["output"] == str(out)
    assert report["bytes"] == out.stat().st_size and report["audio_s"] is None
    assert report["ttfb_s"] <= report["total_s"] and report["request_id"].startswith("say-")
    assert decoded_seconds(out.read_bytes()) == pytest.approx(
        FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE, abs=1e-3)

    # Without -o: speech.FORMAT in the working directory.
    monkeypatch.chdir(tmp_path)
    assert say(run_cli, frontend, "Default name.", "--format", "pcm").exit_code == 0
    assert (tmp_path / "speech.pcm").stat().st_size == FRAMES * SAMPLES_PER_FRAME * 2


def test_dash_o_dash_streams_to_stdout_for_a_pipe(frontend: RunningFrontend) -> None:
    orpheus = str(Path(sys.executable).with_name("orpheus"))
    proc = subprocess.run(
        [orpheus, "say", "Piped.", "-o", "-", "--url", frontend.base_url],
        capture_output=True, timeout=120,
        env={**os.environ, "ORPHEUS_API_KEY": frontend.api_key})
    assert proc.returncode == 0, proc.stderr
    # What a pipe gets is the stream itself: a WAV whose length was unknown when it started.
    assert wav_samples(proc.stdout, streaming=True).size == FRAMES * SAMPLES_PER_FRAME
    assert b"wrote it to stdout" in proc.stderr
    assert frontend.api_key.encode() not in proc.stdout + proc.stderr


def test_a_wrong_key_is_a_clear_error_and_writes_nothing(
        frontend: RunningFrontend, run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    wrong = "sk-wrong-0123456789abcdef"
    result = say(run_cli, frontend, "Hello.", "-o", str(out), key=wrong)
    assert result.exit_code == 4
    assert f"{frontend.base_url} refused the API key (401: incorrect API key provided)" \
        in result.stderr
    assert "orpheus setup" in result.stderr
    assert wrong not in result.everything
    assert list(tmp_path.iterdir()) == []
    verbose = say(run_cli, frontend, "-v", "Hello.", "-o", str(out), key=wrong)
    assert verbose.exit_code == 4 and "Traceback" in verbose.stderr
    assert wrong not in verbose.everything


def test_a_backend_still_starting_is_explained(
        frontend_factory: Callable[..., RunningFrontend], fake_backend: FakeBackend,
        run_cli: RunCli, tmp_path: Path) -> None:
    fe = frontend_factory(ORPHEUS_API_TIMEOUT="1")
    fake_backend.default = Behavior.status_code(503)
    out = tmp_path / "hello.wav"
    out.write_bytes(b"an older take")
    result = say(run_cli, fe, "Hello.", "-o", str(out))
    assert result.exit_code == 8
    assert "The speech backend is not ready (503: the backend answered 503" in result.stderr
    assert "cold start" in result.stderr
    assert out.read_bytes() == b"an older take"  # a failed request never clobbers a file


def test_server_errors_and_bad_input_name_what_failed(
        frontend_factory: Callable[..., RunningFrontend], fake_backend: FakeBackend,
        run_cli: RunCli, tmp_path: Path) -> None:
    fe = frontend_factory(ORPHEUS_MAX_INPUT_CHARS="20")
    too_long = say(run_cli, fe, "x" * 21, "-o", str(tmp_path / "a.wav"))
    assert too_long.exit_code == 2
    assert "refused the request (400: 'input' has 21 characters; the limit is 20)" \
        in too_long.stderr

    fake_backend.script(Behavior.status_code(500, body='{"error": "model crashed"}'))
    failed = say(run_cli, fe, "Hello.", "-o", str(tmp_path / "b.wav"))
    assert failed.exit_code == 1
    assert f"{fe.base_url} failed (502: the backend answered 500" in failed.stderr
    assert "request id say-" in failed.stderr

    fake_backend.script(Behavior.die(after_frames=4))
    cut = say(run_cli, fe, "Hello.", "-o", str(tmp_path / "c.wav"))
    assert cut.exit_code == 8
    assert f"The audio stream from {fe.base_url} broke off after" in cut.stderr
    assert list(tmp_path.iterdir()) == []  # no file, no .part

    closed = say(run_cli, fe, "Hello.", "--url", f"http://127.0.0.1:{free_port()}")
    assert closed.exit_code == 8 and "Cannot reach http://127.0.0.1:" in closed.stderr

    assert say(run_cli, fe, "  ").exit_code == 2
    assert say(run_cli, fe, "Hi.", "--format", "ogg-vorbis").exit_code == 2
    assert say(run_cli, fe, "Hi.", "-o", str(tmp_path / "no" / "such" / "dir.wav")).exit_code == 2
    assert say(run_cli, fe, "--json", "Hi.", "-o", "-").exit_code == 2
    assert list(tmp_path.iterdir()) == []


# --- --play ---------------------------------------------------------------------------------------

@pytest.fixture
def aplay_into_a_file(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose only player is the real aplay, and an ALSA configuration (in $HOME) whose
    default device is ALSA's file plugin: what aplay plays is written to ``played``."""
    aplay = shutil.which("aplay")
    if aplay is None:
        missing_tool("aplay is not installed (Debian: apt-get install alsa-utils)")
    assert aplay is not None
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / "aplay").symlink_to(aplay)
    played = tmp_path / "played.raw"
    (home / ".asoundrc").write_text(
        'pcm.!default {\n  type file\n  slave.pcm "null"\n'
        f'  file "{played}"\n  format "raw"\n}}\n')
    return {"PATH": str(bin_dir), "HOME": str(home)}, played


def _device_got(played: Path) -> bytes:
    """What aplay wrote to the device, less the silence it pads the last period with."""
    data = played.read_bytes()
    audio = FRAMES * SAMPLES_PER_FRAME * 2
    assert len(data) >= audio and data[audio:].count(0) == len(data) - audio
    return data[:audio]


def test_play_streams_the_audio_into_the_system_player(
        frontend: RunningFrontend, run_cli: RunCli, tmp_path: Path,
        aplay_into_a_file: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    env, played = aplay_into_a_file
    out = tmp_path / "kept.wav"
    result = say(run_cli, frontend, "Play me.", "--play", "-o", str(out), env=env)
    assert result.exit_code == 0, result.everything
    assert f"wrote {out} and played it with aplay" in result.stderr
    # Every sample reached the sound device, and the same ones are in the file.
    with wave.open(io.BytesIO(out.read_bytes())) as wav:
        assert wav.getnframes() == FRAMES * SAMPLES_PER_FRAME
        assert _device_got(played) == wav.readframes(wav.getnframes())

    # --play alone writes no file.
    played.unlink()
    monkeypatch.chdir(tmp_path / "home")
    only = say(run_cli, frontend, "Only play.", "--play", env=env)
    assert only.exit_code == 0, only.stderr
    assert len(_device_got(played)) == FRAMES * SAMPLES_PER_FRAME * 2
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == [".asoundrc"]


def test_play_without_a_player_says_so(
        frontend: RunningFrontend, fake_backend: FakeBackend, run_cli: RunCli,
        tmp_path: Path) -> None:
    empty = {"PATH": str(tmp_path / "empty")}
    alone = say(run_cli, frontend, "Hello.", "--play", env=empty)
    assert alone.exit_code == 2
    assert "No audio player for wav on the PATH (looked for ffplay, mpv" in alone.stderr
    assert fake_backend.completions == []  # refused before any request

    out = tmp_path / "hello.wav"
    with_file = say(run_cli, frontend, "Hello.", "--play", "-o", str(out), env=empty)
    assert with_file.exit_code == 0, with_file.everything
    assert "No audio player for wav on the PATH" in with_file.stderr and "not playing it" \
        in with_file.stderr
    assert wav_samples(out.read_bytes(), streaming=False).size == FRAMES * SAMPLES_PER_FRAME


def test_a_player_that_fails_is_reported_and_the_file_is_kept(
        frontend: RunningFrontend, run_cli: RunCli, tmp_path: Path,
        aplay_into_a_file: tuple[dict[str, str], Path]) -> None:
    env, _played = aplay_into_a_file
    # A default device that does not exist: aplay cannot open it.
    (Path(env["HOME"]) / ".asoundrc").write_text("pcm.!default { type hw card 99 }\n")
    out = tmp_path / "kept.wav"
    result = say(run_cli, frontend, "Hello.", "--play", "-o", str(out), env=env)
    assert result.exit_code == 1
    assert "aplay could not play the audio (exit 1: " in result.stderr
    assert wav_samples(out.read_bytes(), streaming=False).size == FRAMES * SAMPLES_PER_FRAME


def test_a_player_that_reads_only_files_gets_a_sealed_wav(tmp_path: Path) -> None:
    """pw-play and afplay read a file, not stdin: they get the finished file, its sizes sealed
    (a streamed WAV's are placeholders). `cp` stands in for such a player: what it copies is
    what a player would read."""
    import numpy as np

    from orpheus_deploy.audio_out import Player, PlayerOutput
    from runtime.codec.encoders import wav_header

    cp = shutil.which("cp")
    assert cp is not None
    played, scratch = tmp_path / "played.wav", tmp_path / "scratch.wav"
    out = PlayerOutput(Player("cp", ("{file}", str(played)), frozenset({"wav"})), cp, scratch,
                       "wav")
    samples = (np.arange(4800) % 200 - 100).astype("<i2").tobytes()
    for chunk in (wav_header(SAMPLE_RATE), samples[:3000], samples[3000:]):
        out.write(chunk)
    out.finish()
    with wave.open(str(played)) as wav:
        assert wav.getnframes() == 4800 and wav.readframes(4800) == samples
    assert sorted(tmp_path.iterdir()) == [played]  # no scratch file left


def test_a_refused_key_points_at_the_key_list() -> None:
    """The frontend re-reads its keys every api_key_refresh_s (no redeploy): a refused key was
    revoked, or is newer than that re-read."""
    from orpheus_deploy.phases.say import SayResult, _refused

    result = SayResult("https://fe.example", "wav", "tara", "say-1")
    body = b'{"error": {"message": "incorrect API key provided"}}'
    from_secret = _refused(401, body, result, key_from_secret=True)
    assert from_secret.exit_code == 4
    for hint in ("revoked", "30 s", "orpheus keys list", "orpheus keys create"):
        assert hint in str(from_secret.hint)
    assert "deploy-frontend" not in str(from_secret.hint)
    assert "omit --key" not in str(from_secret.hint)
    given = _refused(401, body, result, key_from_secret=False)
    assert "orpheus keys list" in str(given.hint)
    assert "omit --key to read it from the secret" in str(given.hint)
    # Not the frontend's JSON (Cloud Run's own error page): the start of the page instead.
    page = _refused(500, b"<html>\n  Server   Error</html>", result, key_from_secret=False)
    assert page.message == "https://fe.example failed (500: <html> Server Error</html>)"
