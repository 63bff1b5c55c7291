"""Reading the final stage of a Dockerfile: what the image runs (CMD), with what (ENV, COPY).

Enough of the syntax for our own Dockerfiles, so that tests run the image's command natively with
the image's environment and file layout instead of a copy that could drift from it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FinalStage:
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (source in context, dest)
    workdir: str = "/"
    user: str | None = None
    expose: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def final_stage(path: Path) -> FinalStage:
    instructions = _instructions(path.read_text())
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    stage = FinalStage()
    for keyword, rest in instructions[last_from + 1:]:
        if keyword == "CMD":
            stage.cmd = json.loads(rest)
        elif keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage.env[key] = value
        elif keyword == "COPY" and "--from" not in rest:
            *sources, dest = shlex.split(rest)
            stage.copies.extend((src, dest) for src in sources)
        elif keyword == "WORKDIR":
            stage.workdir = rest
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "EXPOSE":
            stage.expose.extend(rest.split())
    return stage
