"""`orpheus local ...`: run the stack on this machine (stub until the backend issue lands)."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import not_implemented

app = typer.Typer(help="Run the backend and frontend locally (no Google Cloud).",
                  no_args_is_help=True)


@app.command("up")
def up(ctx: typer.Context) -> None:
    """Start the local backend and frontend."""
    not_implemented("local up")
