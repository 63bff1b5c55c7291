"""`orpheus destroy`: delete what the tool created, in reverse order, after confirmation."""

from __future__ import annotations

from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for
from orpheus_deploy.errors import EXIT_USAGE, OrpheusError


def destroy(
    ctx: typer.Context,
    delete_model: Annotated[bool, typer.Option(
        "--delete-model", help="Also delete the model bucket (the uploaded model and state).")
    ] = False,
) -> None:
    """Delete everything the deployment created, in reverse order."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.lifecycle import destroy as run

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    settings.require_project()
    what = (f"the Cloud Run services, registry, secret and service accounts of "
            f"'{settings.name}' in project {settings.project}")
    if delete_model:
        what += f", AND the model bucket gs://{settings.names.bucket}"
    if not ui.yes:
        if ui.json_mode or not _interactive():
            raise OrpheusError(f"Refusing to delete {what} without confirmation",
                               "pass --yes", exit_code=EXIT_USAGE)
        if not typer.confirm(f"Delete {what}?", default=False, err=True):
            raise OrpheusError("Nothing was deleted", exit_code=EXIT_USAGE)
    ui.report(run(settings, Cloud(settings), delete_model=delete_model))


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()
