"""Where `orpheus say` puts audio as it arrives: a file, stdout, a system audio player.

- `FileOutput` writes ``PATH.part`` and renames it to PATH when the stream is complete, so a failed
  request never leaves half a file under the name asked for (nor clobbers an older one). A
  streamed WAV's sizes are placeholders (the length was unknown); they are patched at the end, so
  the file is a plain WAV that any reader accepts.
- `StdoutOutput` writes each chunk through to stdout (for piping).
- `PlayerOutput` feeds a player's stdin from a thread, so the download never waits for playback;
  players that only read files get the finished file (a `FileOutput` into a scratch file, so a
  WAV's sizes are sealed before the player reads them).

`find_player(fmt)` picks the first player on the PATH that can play ``fmt``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from orpheus_deploy.errors import OrpheusError

__all__ = ["PLAYERS", "FileOutput", "Output", "Player", "PlayerOutput", "StdoutOutput",
           "find_player"]

_COMPRESSED = frozenset({"mp3", "opus", "flac", "aac"})
_ALL = _COMPRESSED | {"wav"}


class Output(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class FileOutput:
    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.partial = path.with_name(path.name + ".part")
        self._file: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        if self._file is None:  # opened with the first audio: a refused request writes nothing
            self._file = self.partial.open("w+b")  # read back to seal a WAV
        self._file.write(chunk)

    def finish(self) -> None:
        if self._file is None:
            return
        if self.fmt == "wav":
            _seal_wav(self._file)
        self._file.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self.partial.unlink(missing_ok=True)


def _seal_wav(file: BinaryIO) -> None:
    """Write the real RIFF and data sizes over a streamed WAV's placeholders."""
    from orpheus_deploy.phases.smoke_test import parse_wav

    file.flush()
    size = file.tell()
    file.seek(0)
    head = file.read(4096)
    info = parse_wav(head)
    if size >= info.data_offset and size - 8 <= 0xFFFFFFFF:
        file.seek(4)
        file.write(struct.pack("<I", size - 8))
        file.seek(info.data_offset - 4)
        file.write(struct.pack("<I", size - info.data_offset))
    file.seek(size)


class StdoutOutput:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def write(self, chunk: bytes) -> None:
        self.stream.write(chunk)
        self.stream.flush()  # the next program in the pipe gets audio as it arrives

    def finish(self) -> None:
        self.stream.flush()

    def abort(self) -> None:
        pass


@dataclass(frozen=True)
class Player:
    name: str
    args: tuple[str, ...]  # after the executable; "{file}" for players that read only files
    formats: frozenset[str]

    @property
    def reads_stdin(self) -> bool:
        return "{file}" not in self.args


# In order of preference. No raw pcm: its flags differ from player to player and version to
# version, and a WAV carries the same samples.
PLAYERS = (
    Player("ffplay", ("-nodisp", "-autoexit", "-loglevel", "error", "-i", "-"), _ALL),
    Player("mpv", ("--no-video", "--really-quiet", "-"), _ALL),
    Player("paplay", (), frozenset({"wav"})),
    Player("pw-play", ("{file}",), frozenset({"wav", "flac"})),
    Player("aplay", ("-q", "-"), frozenset({"wav"})),
    Player("afplay", ("{file}",), frozenset({"wav", "mp3", "aac", "flac"})),
)


def find_player(fmt: str) -> tuple[Player, str] | None:
    """The first player on the PATH that plays ``fmt``, with its path."""
    for player in PLAYERS:
        path = shutil.which(player.name)
        if path is not None and fmt in player.formats:
            return player, path
    return None


class PlayerFailed(OrpheusError):
    pass


class PlayerOutput:
    """Plays the audio through ``player``; stdin players start with the first chunk."""

    def __init__(self, player: Player, executable: str, scratch: Path, fmt: str) -> None:
        self.player = player
        self.executable = executable
        self.scratch = scratch  # the file for players that read only files
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._process: subprocess.Popen[bytes] | None = None
        self._feeder: threading.Thread | None = None
        self._file = None if player.reads_stdin else FileOutput(scratch, fmt)
        self._broken = False
        self._stderr: BinaryIO | Any = None

    def _start(self, argv: list[str], stdin: int | None) -> subprocess.Popen[bytes]:
        # stderr into a file, not a pipe: a chatty player can never block on it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()/abort()
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=self._stderr)

    def write(self, chunk: bytes) -> None:
        if self._file is not None:
            self._file.write(chunk)
            return
        if self._process is None:
            self._process = self._start([self.executable, *self.player.args], subprocess.PIPE)
            self._feeder = threading.Thread(target=self._feed, name="player-feed", daemon=True)
            self._feeder.start()
        self._queue.put(chunk)

    def _feed(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        while (chunk := self._queue.get()) is not None:
            if self._broken:
                continue
            try:
                stdin.write(chunk)
                stdin.flush()
            except OSError:
                self._broken = True  # the player quit; its exit status tells why
        with contextlib.suppress(OSError):
            stdin.close()

    def finish(self) -> None:
        if self._file is not None:
            self._file.finish()  # sealed and in place, or nothing when no audio came
            if not self.scratch.exists():
                return
            argv = [self.executable, *(a.replace("{file}", str(self.scratch))
                                       for a in self.player.args)]
            self._process = self._start(argv, None)
        if self._process is None:
            return
        self._queue.put(None)
        if self._feeder is not None:
            self._feeder.join()
        self._process.wait()
        self.scratch.unlink(missing_ok=True)
        self._stderr.seek(0)
        stderr = self._stderr.read()
        self._stderr.close()
        if self._process.returncode != 0:
            last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise PlayerFailed(
                f"{self.player.name} could not play the audio (exit {self._process.returncode}"
                + (f": {last[0]}" if last else "") + ")",
                "check the system's sound output, or write a file with -o")

    def abort(self) -> None:
        self._queue.put(None)
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._file is not None:
            self._file.abort()
        if self._stderr is not None:
            self._stderr.close()
        self.scratch.unlink(missing_ok=True)
