"""`orpheus build` (stub until its issue lands)."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import not_implemented


def build(ctx: typer.Context) -> None:
    """Build both container images with Cloud Build."""
    not_implemented("build")
