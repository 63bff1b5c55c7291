"""`orpheus plan`: what `deploy --all` would change, per resource, without changing anything."""

from __future__ import annotations

from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for


def plan(
    ctx: typer.Context,
    no_validate: Annotated[bool, typer.Option(
        "--no-validate", help="Skip Cloud Run's server-side dry run of changed services.")
    ] = False,
) -> None:
    """Show what deploy would change, without changing anything."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.lifecycle import plan as run

    settings = settings_for(ctx)
    ui_for(ctx).report(run(settings, Cloud(settings), validate=not no_validate))
