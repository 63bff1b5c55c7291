"""`orpheus logs`: the services' logs from Cloud Logging, one line each, or followed live."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orpheus_deploy.commands import settings_for, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.ui import UI


def logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(
        help="backend, frontend or all.", show_default=True)] = "all",
    since: Annotated[str, typer.Option(
        "--since", help="How far back: 30m, 1h, 2d, or a time (2026-11-30T10:00:00Z).")] = "1h",
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new entries until Ctrl-C.")] = False,
    severity: Annotated[str | None, typer.Option(
        "--severity", help="Only this severity and above (DEBUG, INFO, WARNING, ERROR, ...).",
        show_default=False)] = None,
    request_id: Annotated[str | None, typer.Option(
        "--request-id", help="Only the lines of one request (its X-Request-ID).",
        show_default=False)] = None,
    revision: Annotated[str | None, typer.Option(
        "--revision", help="Only one revision (see `orpheus status`).",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option(
        "--limit", help="At most this many of the newest entries (before following).")] = 500,
) -> None:
    """Show the services' logs from Cloud Logging, oldest first, times in UTC.

    --json prints one raw entry (Cloud Logging's JSON) per line.
    """
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases import logs as phase

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    query = phase.make_query(settings, service.strip().lower(), since, severity, request_id,
                             revision, limit)
    cloud = Cloud(settings)
    cloud.ensure_credentials()
    settings.require_project()
    seen = phase.Seen()
    tail = None
    if follow:
        # Opened before the history is read, so that nothing written meanwhile is missed;
        # what both return is shown once.
        tail = phase.Tail(settings, cloud, query, on_suppressed=lambda reason, count: ui.warn(
            f"Cloud Logging left out {count} entries ({reason})")).open()
    try:
        for entry in phase.read_entries(settings, cloud, query):
            seen.add(entry)
            _show(ui, entry)
        if tail is None:
            return
        ui.info("Following new entries; Ctrl-C stops.")
        for entry in tail:
            if seen.add(entry):
                _show(ui, entry)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --follow ends: a normal exit
    finally:
        if tail is not None:
            tail.close()


def _show(ui: UI, entry: Any) -> None:
    from orpheus_deploy.log_lines import entry_dict, format_entry

    data = entry_dict(entry)
    # print, not Rich: a log line is data (brackets and markup in it stay as they are), and a
    # pipe (`| grep`) gets each line as soon as it is known.
    if ui.json_mode:
        print(json.dumps(data, separators=(",", ":")), flush=True)
    else:
        print(format_entry(data), flush=True)
