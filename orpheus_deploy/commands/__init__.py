"""One module per command (group). Commands are thin: parse options, call a phase, render.

Helpers shared by all commands: :func:`options` (the GlobalOptions from the Typer context),
:func:`ui_for` (the UI honouring --json/-v), :func:`settings_for` (load_settings with the global
flags), :func:`service_endpoint` (the frontend's URL and key, given or read from the cloud) and
:func:`not_implemented`. No module here imports google.cloud at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from orpheus_deploy.config import GlobalOptions
from orpheus_deploy.errors import NotImplementedYet

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.ui import UI


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    obj = root.obj if root.obj is not None else ctx.obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def ui_for(ctx: typer.Context) -> UI:
    from orpheus_deploy.ui import UI

    return UI.from_options(options(ctx))


def settings_for(ctx: typer.Context, **overrides: Any) -> Settings:
    from orpheus_deploy.config import load_settings

    return load_settings(options(ctx), **overrides)


def not_implemented(command: str) -> None:
    raise NotImplementedYet(f"`orpheus {command}` is not implemented yet",
                            "it arrives in a later release of orpheus-deploy")


def service_endpoint(ctx: typer.Context, url: str | None, key: str | None
                     ) -> tuple[str, str, bool]:
    """The frontend URL and an API key: the ones given, else the deployed service's URL (Cloud
    Run) and the key's latest version (Secret Manager), read with the user's credentials. The
    third value says whether the key came from the secret. Empty values count as not given."""
    if url and key:
        return url, key, False
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.smoke_test import api_key_from_secret, frontend_url

    settings = settings_for(ctx)
    cloud = Cloud(settings)
    cloud.ensure_credentials()
    url = url or frontend_url(settings, cloud)
    if key:
        return url, key, False
    return url, api_key_from_secret(settings, cloud), True
