"""`orpheus upload-model PATH`: resumable, CRC32C-verified GGUF upload to the model bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for


def upload_model(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The .gguf model file.", exists=True,
                                         dir_okay=False, readable=True)],
    name: Annotated[str | None, typer.Option(
        "--name", help="Object name in the bucket (default: the file name).",
        show_default=False)] = None,
) -> None:
    """Upload the GGUF model to the bucket.

    Resumable and CRC32C-verified; skipped when the same file is already there.
    """
    from orpheus_deploy.phases.upload_model import run_upload

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    run_upload(settings, ui, path, object_name=name)
