"""`orpheus test`: 401 without a key, 401 with a wrong key, 200 and audio with the right one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from orpheus_deploy.commands import service_endpoint, ui_for

if TYPE_CHECKING:
    from orpheus_deploy.ui import UI


def test(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Option(
        "--key", help="API key to use (default: read from the secret).", envvar="ORPHEUS_API_KEY",
        show_envvar=True)] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Frontend URL (default: the deployed service's URL).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for the audio (covers a GPU cold start).")] = 600.0,
) -> None:
    """Smoke-test the deployed service: synthesize a short phrase end to end."""
    from orpheus_deploy.phases import smoke_test as phase

    ui = ui_for(ctx)
    url, key, _ = service_endpoint(ctx, url, key)
    from orpheus_deploy.gcp.policy import OperationPolicy

    # Right after a deploy the frontend's invoker binding on the backend may not apply yet:
    # wait for it (bounded, with progress) rather than report a failure that fixes itself.
    result = phase.run_smoke_test(url, key, timeout_s=timeout,
                                  patience=OperationPolicy.from_env(), report=ui.info)
    if not ui.json_mode:
        render(ui, result)
        if not result.ok:
            raise phase.SmokeTestFailed(result)
        return
    # --json: exactly one object on stdout, the result (with the error when it failed).
    payload = result.as_dict()
    if not result.ok:
        failure = phase.SmokeTestFailed(result)
        payload["error"] = {"message": failure.message, "hint": failure.hint,
                            "exit_code": failure.exit_code}
    ui.emit(payload)
    if not result.ok:
        raise typer.Exit(code=phase.SmokeTestFailed.exit_code)


def render(ui: UI, result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"orpheus test {result.url}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("HTTP")
    table.add_column("detail")
    for c in result.checks:
        table.add_row(c.name, "[green]pass[/green]" if c.ok else "[red]FAIL[/red]",
                      str(c.status or "-"), c.detail, )
    ui.err.print(table)
    if result.total_s is not None:
        ttfb = f"{result.ttfb_s:.2f}s" if result.ttfb_s is not None else "-"
        audio = f"{result.audio_s:.2f}s" if result.audio_s is not None else "-"
        ui.err.print(f"time to first byte {ttfb}, total {result.total_s:.2f}s, audio {audio}",
                     markup=False)
