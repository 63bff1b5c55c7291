"""One module per command (group). Commands are thin: parse options, call a phase, render.

Helpers shared by all commands: :func:`options` (the GlobalOptions from the Typer context),
:func:`ui_for` (the UI honouring --json/-v), :func:`settings_for` (load_settings with the global
flags) and :func:`not_implemented`. No module here imports google.cloud at import time.
"""

from __future__ import annotations

from pathlib import Path
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


def check_key_file(path: Path | None) -> None:
    """--api-key-file must name a file in an existing directory (checked before any work)."""
    from orpheus_deploy.errors import InputError

    if path is not None and not path.parent.is_dir():
        raise InputError(f"--api-key-file {path}: the directory {path.parent} does not exist",
                         "create it first, or name a file in an existing directory")


def not_implemented(command: str) -> None:
    raise NotImplementedYet(f"`orpheus {command}` is not implemented yet",
                            "it arrives in a later release of orpheus-deploy")
