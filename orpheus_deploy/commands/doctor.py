"""`orpheus doctor`: preflight checks, before anything slow or billable happens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from orpheus_deploy.commands import settings_for, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.phases.doctor import DoctorReport
    from orpheus_deploy.ui import UI


def doctor(ctx: typer.Context) -> None:
    """Check that a deploy can succeed: credentials, project, billing, GPU region and quota,
    your permissions per phase, the VPC subnet, organization policies."""
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.doctor import DoctorFailed, run_doctor

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    report = run_doctor(settings, Cloud(settings))
    if ui.json_mode:
        ui.emit(report.as_dict())
        if not report.ok:
            raise typer.Exit(code=DoctorFailed(report).exit_code)
        return
    render(ui, report)
    if not report.ok:
        raise DoctorFailed(report)
    ui.success("Every check passed: `orpheus deploy --all` can proceed.")


def render(ui: UI, report: DoctorReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    style = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]",
             "unknown": "[yellow]could not check[/yellow]"}
    table = Table(title="orpheus doctor")
    for column in ("check", "result", "detail", "next step"):
        table.add_column(column)
    for c in report.checks:
        table.add_row(c.name, style[c.status], escape(c.detail), escape(c.fix))
    ui.err.print(table)
