"""`orpheus init`: write a commented orpheus.toml (never overwriting without --force)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orpheus_deploy.commands import options, ui_for


def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Option("--path", help="Where to write the file.",
                                       dir_okay=False)] = Path("orpheus.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented orpheus.toml.

    Every setting is listed with its default, commented out.
    """
    from orpheus_deploy.config_template import render_template
    from orpheus_deploy.errors import InputError

    ui = ui_for(ctx)
    opts = options(ctx)
    if path.exists() and not force:
        raise InputError(f"{path} already exists", "pass --force to overwrite it")
    path.write_text(render_template(project=opts.project, region=opts.region), encoding="utf-8")
    ui.success(f"Wrote {path}")
    ui.emit({"written": str(path)})
