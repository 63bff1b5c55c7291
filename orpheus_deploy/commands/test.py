"""`orpheus test` (stub until the deploy issue lands)."""

from __future__ import annotations

from typing import Annotated

import typer

from orpheus_deploy.commands import not_implemented


def test(
    ctx: typer.Context,
    key: Annotated[
        str | None, typer.Option("--key", help="API key to use (default: read from the secret).")
    ] = None,
) -> None:
    """Smoke-test the deployed service: synthesize a short phrase end to end."""
    not_implemented("test")
