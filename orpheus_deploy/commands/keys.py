"""`orpheus keys create|list|revoke`: named API keys, picked up without a redeploy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.keys import KeyChange
    from orpheus_deploy.ui import UI

app = typer.Typer(help="Named API keys: create, list, revoke (no redeploy needed).",
                  no_args_is_help=True)


def _cloud(settings: Settings) -> Cloud:
    from orpheus_deploy.gcp import Cloud

    cloud = Cloud(settings)
    cloud.ensure_credentials()
    settings.require_project()
    return cloud


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the key (shown in the access log).")],
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", "--api-key-file", dir_okay=False, show_default=False,
        help="Write the key to this new file (mode 0600) instead of printing it; required "
             "with --json and on CI (CI=true).")] = None,
) -> None:
    """Generate a key named NAME; it is shown once (or written to --key-file)."""
    from orpheus_deploy.errors import InputError
    from orpheus_deploy.phases import keys as phase
    from orpheus_deploy.secret_file import SecretFile, is_ci

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    if key_file is None and (ui.json_mode or is_ci()):
        raise InputError("The new key is not printed in --json mode or on CI (CI=true), where "
                         "output is kept in logs", "pass --key-file PATH: it is written there, "
                         "readable by you only")
    cloud = _cloud(settings)
    target = SecretFile(key_file) if key_file is not None else None
    try:
        change = phase.create_key(settings, cloud, name)
    except BaseException:
        if target is not None:
            target.discard()
        raise
    assert change.key is not None
    if target is not None:
        target.write(change.key)
    _after_change(ui, settings, cloud, change, "created")
    if ui.json_mode:
        ui.emit({**change.as_dict(), "key_file": str(key_file) if key_file else None})
        return
    ui.success(f"Key {name!r} created; running frontends accept it within "
               f"{settings.api_key_refresh_s:g} s")
    if target is not None:
        ui.success(f"Key {name!r} (…{change.last4}) written to {key_file} (mode 0600)")
    else:
        ui.show_secret_once(f"API key {name!r}", change.key)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Show the keys: name, created, last four characters (never a whole key)."""
    from rich.table import Table

    from orpheus_deploy.phases import keys as phase

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    keys = phase.list_keys(settings, _cloud(settings))
    if ui.json_mode:
        ui.emit({"keys": [{"name": k.name, "created": k.created, "last4": k.last4,
                           "revoked": k.revoked} for k in keys]})
        return
    if not keys:
        ui.info("No API keys: run `orpheus setup`, or `orpheus keys create NAME`.")
        return
    table = Table(title=f"API keys in secret {settings.names.secret}")
    for column in ("name", "created", "key", "state"):
        table.add_column(column)
    for k in keys:
        state = "active" if k.active else f"[dim]revoked {k.revoked}[/dim]"
        table.add_row(k.name, k.created or "-", f"…{k.last4}", state)
    ui.out.print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.")],
) -> None:
    """Revoke the key NAME: the frontend refuses it within api_key_refresh_s, no redeploy."""
    from orpheus_deploy.phases import keys as phase

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    cloud = _cloud(settings)
    change = phase.revoke_key(settings, cloud, name)
    _after_change(ui, settings, cloud, change, "revoked")
    if ui.json_mode:
        ui.emit(change.as_dict())
    else:
        ui.success(f"Key {name!r} (…{change.last4}) revoked; running frontends refuse it within "
                   f"{settings.api_key_refresh_s:g} s")


def _after_change(ui: UI, settings: Settings, cloud: Cloud, change: KeyChange, what: str
                  ) -> None:
    from orpheus_deploy.phases import keys as phase

    if change.raced:
        ui.warn(f"Another change to secret {settings.names.secret} was written while the key "
                f"was {what}; check `orpheus keys list` and repeat what is missing")
    if phase.frontend_follows_the_secret(settings, cloud) is False:
        ui.warn("The deployed frontend reads its keys only when an instance starts (it was "
                "deployed before named keys): run `orpheus deploy-frontend` once, and from then "
                "on key changes need no redeploy")
