"""`orpheus setup`: APIs, bucket, registry, API-key secret, service accounts (idempotent)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orpheus_deploy.commands import settings_for, ui_for


def setup(
    ctx: typer.Context,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="API key to store ('-' reads it from stdin; default: generate one).",
        show_default=False)] = None,
    rotate_key: Annotated[bool, typer.Option(
        "--rotate-key", help="Add a new version to an existing API-key secret.")] = False,
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file", help="Write a newly generated API key to this new file (mode 0600) "
        "instead of printing it; an existing file is refused.", dir_okay=False,
        show_default=False)] = None,
) -> None:
    """Prepare the project (APIs, bucket, secret, ...).

    Enables the APIs, creates the model bucket, the Artifact Registry repository, the API-key
    secret and the two service accounts with least-privilege bindings. Safe to re-run. A key
    generated here is shown once on a terminal; never with --json or in CI (CI=true), where
    --api-key-file or Secret Manager is the way to get it.
    """
    from orpheus_deploy.phases.setup import KeySource, run_setup
    from orpheus_deploy.secret_file import SecretFile

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    if api_key == "-":
        source = KeySource.from_stdin(sys.stdin)
    elif api_key is not None:
        source = KeySource.given(api_key)
    elif not sys.stdin.closed and not sys.stdin.isatty() and _stdin_has_data():
        source = KeySource.from_stdin(sys.stdin, required=False)
    else:
        source = KeySource.generate()
    # Created (empty, 0600, never over an existing file) before any change in the cloud, so a
    # bad path fails before a key exists; run_setup writes or removes it.
    key_file = SecretFile(api_key_file) if api_key_file is not None else None
    run_setup(settings, ui, source, rotate_key=rotate_key, key_file=key_file)


def _stdin_has_data() -> bool:
    """True when a key is piped in (`echo KEY | orpheus setup`), without blocking on a pipe
    that stays open and empty."""
    import select

    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (ValueError, OSError, TypeError):
        return False
    return bool(ready)
