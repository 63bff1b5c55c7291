"""`orpheus deploy [--all]`, `deploy-backend`, `deploy-frontend`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orpheus_deploy.commands import options, settings_for, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.ui import UI


def deploy(
    ctx: typer.Context,
    all_phases: Annotated[bool, typer.Option(
        "--all", help="Run every phase: setup, upload, build, deploy, test.")] = False,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Local .gguf to upload (skipped when the same file is already there).",
        exists=True, dir_okay=False, show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="API key to store if none exists yet ('-' reads stdin; default: "
        "generate one).", show_default=False)] = None,
    force_build: Annotated[bool, typer.Option(
        "--force-build", help="Rebuild the images even when the sources are unchanged.")
    ] = False,
    no_test: Annotated[bool, typer.Option(
        "--no-test", help="Skip the smoke test at the end.")] = False,
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file", help="Write a newly generated API key to this new file (mode 0600) "
        "instead of printing it; an existing file is refused.", dir_okay=False,
        show_default=False)] = None,
) -> None:
    """Deploy both services (with --all: the whole pipeline from an empty project)."""
    from orpheus_deploy.gcp import Cloud, credentials_available

    ui = ui_for(ctx)
    if not all_phases:
        settings = settings_for(ctx)
        cloud = Cloud(settings)
        from orpheus_deploy.phases.deploy import deploy_backend, deploy_frontend

        reports = [deploy_backend(settings, cloud, ui), deploy_frontend(settings, cloud, ui)]
        if ui.json_mode:
            ui.emit({"phases": [r.as_dict() for r in reports]})
        else:
            for r in reports:
                ui.report(r)
        return
    if not credentials_available():
        _dry_run(ctx, ui, model)
        return
    from orpheus_deploy.phases.deploy import PipelineOptions, deploy_all
    from orpheus_deploy.phases.setup import KeySource
    from orpheus_deploy.secret_file import SecretFile

    settings = settings_for(ctx)
    key = None
    if api_key == "-":
        key = KeySource.from_stdin(sys.stdin)
    elif api_key is not None:
        key = KeySource.given(api_key)
    from orpheus_deploy.commands.build import show_log_tail
    from orpheus_deploy.phases.build import BuildFailed

    nested = _nested_ui(ui)
    cloud = Cloud(settings)
    # Opened before the first change in the cloud (see `setup`); deploy_all writes or removes it.
    key_file = SecretFile(api_key_file) if api_key_file is not None else None
    try:
        result = deploy_all(settings, cloud, nested, PipelineOptions(
            model_path=model, api_key=key, force_build=force_build, run_test=not no_test,
            api_key_file=key_file))
    except BuildFailed as exc:
        if ui.json_mode:  # the log was not streamed: show the failing step's tail on stderr
            show_log_tail(ui, exc)
        raise
    url = next((p.data.get("url") for p in result.phases if p.data.get("url")), None)
    if ui.json_mode:
        ui.emit({**result.as_dict(), "playground_url": f"{url}/playground" if url else None})
        return
    if result.smoke is not None:
        from orpheus_deploy.commands.test import render

        render(ui, result.smoke)
    ui.success(f"Deployed: {url}" if url else "Deployed.")
    if url:
        ui.info(f"Try it: open {url}/playground in a browser (it asks for the key), or run "
                '`orpheus say "Hello there <laugh>" --play`')


def _nested_ui(ui: UI) -> UI:
    """The UI for the phases of --all: in --json mode they stay quiet (the one JSON object
    printed at the end carries their reports); otherwise they print as usual."""
    if not ui.json_mode:
        return ui
    from orpheus_deploy.ui import UI

    class Quiet(UI):
        def emit(self, data: dict[str, Any]) -> None:
            pass

    return Quiet(json_mode=True, verbose=ui.verbose, yes=ui.yes)


def _dry_run(ctx: typer.Context, ui: UI, model: Path | None) -> None:
    """No credentials: show what would be created, change nothing, exit 0."""
    from orpheus_deploy.errors import ConfigError
    from orpheus_deploy.gcp.credentials import ADC_HINT
    from orpheus_deploy.phases.deploy import dry_run_plan

    settings = settings_for(ctx)
    placeholder = settings.project is None
    if placeholder:
        settings = settings.replace(project="your-project-id")
    try:
        report = dry_run_plan(settings, model)
    except ConfigError:  # pragma: no cover - settings were validated above
        raise
    banner = ("DRY RUN: no Google Cloud credentials, so nothing was checked or changed. "
              "This is what `orpheus deploy --all` would create:")
    report.data.update({"dry_run": True, "reason": "no credentials", "login_hint": ADC_HINT,
                        "project": None if placeholder else settings.project})
    if ui.json_mode:
        ui.emit(report.as_dict())
        return
    ui.err.print(f"[bold yellow]{banner}[/bold yellow]")
    ui.report(report)
    if placeholder:
        ui.info("No project set: names use 'your-project-id' (pass --project).")
    ui.info(f"To deploy for real: {ADC_HINT}, then run `orpheus deploy --all --model "
            "PATH/TO/orpheus.gguf` again.")
    ui.err.print("[bold yellow]DRY RUN complete: nothing was changed.[/bold yellow]")


def deploy_backend(ctx: typer.Context) -> None:
    """Deploy the GPU inference backend to Cloud Run."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.deploy import deploy_backend as run

    settings = settings_for(ctx)
    ui_for(ctx).report(run(settings, Cloud(settings), ui_for(ctx)))


def deploy_frontend(ctx: typer.Context) -> None:
    """Deploy the public API frontend to Cloud Run."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.deploy import deploy_frontend as run

    settings = settings_for(ctx)
    ui_for(ctx).report(run(settings, Cloud(settings), ui_for(ctx)))


__all__ = ["deploy", "deploy_backend", "deploy_frontend", "options"]
