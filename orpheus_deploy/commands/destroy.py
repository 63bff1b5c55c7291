"""`orpheus destroy` (stub until its issue lands)."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import not_implemented


def destroy(ctx: typer.Context) -> None:
    """Delete everything the deployment created, in reverse order."""
    not_implemented("destroy")
