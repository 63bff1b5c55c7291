"""`orpheus plan` (stub until its issue lands)."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import not_implemented


def plan(ctx: typer.Context) -> None:
    """Show what deploy would change, without changing anything."""
    not_implemented("plan")
