"""`orpheus say TEXT`: speech from the deployed service (or any frontend) into a file, stdout or
the speakers, written as it arrives."""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orpheus_deploy.commands import service_endpoint, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.audio_out import Output
    from orpheus_deploy.phases.say import SayResult

DEFAULT_STEM = "speech"


def say(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(
        help="What to say; emotion tags such as <laugh> pass through. '-' reads stdin.",
        show_default=False)],
    voice: Annotated[str, typer.Option(
        "--voice", help="tara, leah, jess, leo, dan, mia, zac or zoe.")] = "tara",
    fmt: Annotated[str | None, typer.Option(
        "--format", help="wav, pcm, mp3, opus, flac or aac (default: from -o's extension, "
        "else wav).", show_default=False)] = None,
    speed: Annotated[float, typer.Option(
        "--speed", min=0.25, max=4.0, help="Tempo, 0.25 to 4.")] = 1.0,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help=f"File to write; '-' writes to stdout (default: "
        f"{DEFAULT_STEM}.FORMAT, or no file with --play).", show_default=False)] = None,
    play: Annotated[bool, typer.Option(
        "--play", help="Play it as it arrives, through the system's audio player.")] = False,
    key: Annotated[str | None, typer.Option(
        "--key", help="API key (default: read from the secret).", envvar="ORPHEUS_API_KEY",
        show_envvar=True, show_default=False)] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Frontend URL (default: the deployed service's URL).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for the audio (covers a GPU cold start).")] = 600.0,
) -> None:
    """Speak TEXT through the service: `orpheus say "Hello there <laugh>" -o hello.wav`."""
    from orpheus_deploy.audio_out import (
        PLAYERS,
        FileOutput,
        PlayerOutput,
        StdoutOutput,
        find_player,
    )
    from orpheus_deploy.errors import InputError
    from orpheus_deploy.phases import say as phase

    ui = ui_for(ctx)
    words = (sys.stdin.read() if text == "-" else text).strip()
    if not words:
        raise InputError("Nothing to say: the text is empty")
    fmt = (fmt or _format_of(output) or "wav").lower()
    if fmt not in phase.FORMATS:
        raise InputError(f"--format {fmt!r} is not one of {', '.join(phase.FORMATS)}")
    if output == "-":
        if ui.json_mode:
            raise InputError("--json and -o - would both write to stdout", "choose one")
        if sys.stdout.isatty():
            raise InputError("Refusing to write audio to a terminal",
                             "pipe it (-o - | ffplay -i -), or write a file with -o FILE")
    path = None
    if output is None and not play:
        path = Path(f"{DEFAULT_STEM}.{fmt}")
    elif output not in (None, "-"):
        path = Path(output)
        if not path.parent.is_dir():
            raise InputError(f"Cannot write {path}: the folder {path.parent} does not exist")
    player = None
    if play:
        if fmt == "pcm":
            raise InputError("--play needs a format with a header; pcm is raw samples",
                             "use --format wav (the same samples)")
        player = find_player(fmt)
        if player is None:
            missing = (f"No audio player for {fmt} on the PATH (looked for "
                       f"{', '.join(p.name for p in PLAYERS)})")
            if path is None and output != "-":
                raise InputError(missing, "install ffmpeg (for ffplay), or write a file with -o")
            ui.warn(f"{missing}; not playing it")

    url, key, from_secret = service_endpoint(ctx, url, key)
    outputs: list[Output] = []
    if path is not None:
        outputs.append(FileOutput(path, fmt))
    if output == "-":
        outputs.append(StdoutOutput())
    if player is not None:
        scratch = Path(tempfile.gettempdir()) / f"orpheus-say-{secrets.token_hex(6)}.{fmt}"
        outputs.append(PlayerOutput(player[0], player[1], scratch, fmt))

    def write(chunk: bytes) -> None:
        for out in outputs:
            out.write(chunk)

    request = phase.SpeechRequest(words, voice.lower(), fmt, speed)
    start = time.monotonic()
    try:
        with ui.spinner("waiting for the first audio (a GPU cold start takes minutes)") as update:
            result = phase.speak(
                url, key, request, write, timeout_s=timeout,
                key_from_secret=from_secret,
                on_progress=lambda r: update(_progress(r), time.monotonic() - start))
        for out in outputs:
            out.finish()
    except BrokenPipeError:
        _abort(outputs)
        raise phase.SpeechFailed("The program reading stdout stopped before the audio ended",
                                 None) from None
    except BaseException:
        _abort(outputs)
        raise
    destination = str(path) if path is not None else ("-" if output == "-" else None)
    played = player[0].name if player is not None else None
    if ui.json_mode:
        ui.emit({**result.as_dict(), "output": destination, "played_with": played})
        return
    ui.success(_summary(result, destination, played))


def _format_of(output: str | None) -> str | None:
    """The format a file name asks for (hello.mp3 -> mp3), None when it names none."""
    from orpheus_deploy.phases.say import FORMATS

    if output is None or output == "-":
        return None
    suffix = Path(output).suffix.lower().lstrip(".")
    fmt = {"ogg": "opus", "raw": "pcm"}.get(suffix, suffix)
    return fmt if fmt in FORMATS else None


def _abort(outputs: list[Output]) -> None:
    for out in outputs:
        out.abort()


def _amount(result: SayResult) -> str:
    if result.audio_s is not None:
        return f"{result.audio_s:.2f} s of audio"
    return f"{result.bytes / 1024:.1f} KiB of {result.fmt}"


def _progress(result: SayResult) -> str:
    ttfb = f"first byte after {result.ttfb_s:.2f} s" if result.ttfb_s is not None else ""
    return f"{ttfb}, {_amount(result)} so far"


def _summary(result: SayResult, destination: str | None, played: str | None) -> str:
    where = []
    if destination == "-":
        where.append("wrote it to stdout")
    elif destination is not None:
        where.append(f"wrote {destination}")
    if played is not None:
        where.append(f"played it with {played}")
    ttfb = result.ttfb_s or 0.0
    total = result.total_s or 0.0
    return (f"{_amount(result)} ({result.fmt}, voice {result.voice}): "
            f"{' and '.join(where)}; first byte after {ttfb:.2f} s, {total:.2f} s in total")
