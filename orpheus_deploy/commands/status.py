"""`orpheus status` (stub until its issue lands)."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import not_implemented


def status(ctx: typer.Context) -> None:
    """Show the state of every deployed resource."""
    not_implemented("status")
