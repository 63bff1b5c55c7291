"""`orpheus upload-model PATH`: resumable, CRC32C-verified GGUF upload to the model bucket;
`orpheus remove-model NAME`: take a further model out of the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for
from orpheus_deploy.errors import InputError


def upload_model(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The .gguf model file.", exists=True,
                                         dir_okay=False, readable=True)],
    name: Annotated[str | None, typer.Option(
        "--name", help="Object name in the bucket (default: the file name).",
        show_default=False)] = None,
    voices: Annotated[str | None, typer.Option(
        "--voices", help="Register a further model (a language, a custom voice) with these "
        "comma-separated voice names, e.g. \"pierre,amelie,marie\". Without it the file "
        "becomes the default English model.", show_default=False)] = None,
    language: Annotated[str | None, typer.Option(
        "--language", help="Language code of the further model (default: en).",
        show_default=False)] = None,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="Name of the further model in /v1/models (default: from the "
        "object name).", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="Prompt template of the further model: \"{voice}: {text}\" (the "
        "default, as Orpheus fine-tunes are trained) or \"{text}\".", show_default=False)
    ] = None,
) -> None:
    """Upload a GGUF model to the bucket and register it.

    Resumable and CRC32C-verified; skipped when the same file is already there. Re-running with
    the same arguments changes nothing; `orpheus deploy` then serves the new manifest.
    """
    from orpheus_deploy.phases.upload_model import Registration, run_upload

    if voices is None and (language or model_name or prompt):
        raise InputError("--language, --model-name and --prompt describe a further model",
                         'add --voices "name1,name2" (the default model keeps its 8 voices)')
    register = Registration(voices, language, model_name, prompt) if voices is not None else None
    run_upload(settings_for(ctx), ui_for(ctx), path, object_name=name, register=register)


def remove_model(
    ctx: typer.Context,
    model_name: Annotated[str, typer.Argument(help="The further model's name (orpheus status).")],
    delete_object: Annotated[bool, typer.Option(
        "--delete-object", help="Also delete its GGUF from the bucket.")] = False,
) -> None:
    """Take a further model (and its voices) out of the manifest.

    The services keep serving it until the next `orpheus deploy`. The default model cannot be
    removed: upload another file without --voices to replace it.
    """
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.models import remove_model as run

    settings = settings_for(ctx)
    ui_for(ctx).report(run(settings, Cloud(settings), model_name, delete_object=delete_object))
