"""`orpheus build`: both images on Cloud Build (or local Docker with --local)."""

from __future__ import annotations

from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for


def build(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(
        "--force", help="Rebuild even when the sources are unchanged since the last build.")
    ] = False,
    local: Annotated[bool, typer.Option(
        "--local", help="Build with the local Docker (buildx) and push, instead of Cloud Build.")
    ] = False,
) -> None:
    """Build both container images with Cloud Build and record their digests."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases import build as phase

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    cloud = Cloud(settings)
    cloud.ensure_credentials()
    log = None if ui.json_mode else ui.info
    try:
        if local:
            outcome = phase.run_local_build(settings, cloud, on_log=log)
        else:
            outcome = phase.run_build(settings, cloud, force=force, on_log=log)
    except phase.BuildFailed as exc:
        show_log_tail(ui, exc)
        raise
    report = phase.report(outcome, settings)
    report.data.update(outcome.as_dict())
    ui.report(report)


def show_log_tail(ui: object, exc: object) -> None:
    """The failing step's last lines, on stderr, before the one-line error."""
    from orpheus_deploy.ui import UI

    assert isinstance(ui, UI)
    tail = getattr(exc, "log_tail", [])
    if tail:
        ui.err.print(f"[bold]Last {len(tail)} lines of the failing step:[/bold]")
        for line in tail:
            ui.err.print(f"  {line}", markup=False, highlight=False)
