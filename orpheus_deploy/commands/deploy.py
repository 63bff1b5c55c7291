"""`orpheus deploy`, `deploy-backend`, `deploy-frontend` (stubs until the deploy issue lands)."""

from __future__ import annotations

from typing import Annotated

import typer

from orpheus_deploy.commands import not_implemented


def deploy(
    ctx: typer.Context,
    all_phases: Annotated[
        bool, typer.Option("--all", help="Run every phase: setup, upload, build, deploy, test.")
    ] = False,
) -> None:
    """Deploy the services (with --all: the whole pipeline from an empty project)."""
    not_implemented("deploy --all" if all_phases else "deploy")


def deploy_backend(ctx: typer.Context) -> None:
    """Deploy the GPU inference backend to Cloud Run."""
    not_implemented("deploy-backend")


def deploy_frontend(ctx: typer.Context) -> None:
    """Deploy the public API frontend to Cloud Run."""
    not_implemented("deploy-frontend")
