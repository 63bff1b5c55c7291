"""`orpheus config`: the effective settings and where each value came from."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import settings_for, ui_for


def config(ctx: typer.Context) -> None:
    """Show the settings and where each came from.

    Also prints the resource names derived from them.
    """
    ui = ui_for(ctx)
    settings = settings_for(ctx)
    items = settings.public_items()
    names: dict[str, str] = {}
    if settings.project:
        n = settings.names
        names = {"backend_service": n.backend_service, "frontend_service": n.frontend_service,
                 "bucket": n.bucket, "secret": n.secret, "repo": n.repo,
                 "backend_image": n.image("backend"), "frontend_image": n.image("frontend"),
                 "backend_service_account": n.backend_sa_email,
                 "frontend_service_account": n.frontend_sa_email}
    if ui.json_mode:
        ui.emit({"settings": {k: {"value": v, "source": s} for k, v, s in items},
                 "names": names})
        return
    from rich.table import Table

    table = Table(title="orpheus settings")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source", style="dim")
    for key, value, source in items:
        table.add_row(key, "" if value is None else str(value), source)
    ui.out.print(table)
    if names:
        derived = Table(title="derived names")
        derived.add_column("resource")
        derived.add_column("name")
        for key, value in names.items():
            derived.add_row(key, value)
        ui.out.print(derived)
    else:
        ui.warn("no project set: pass --project or set it in orpheus.toml to see resource names")
