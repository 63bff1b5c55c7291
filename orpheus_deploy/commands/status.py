"""`orpheus status`: every resource, the services' URLs and revisions, images, GPU, cost, and
the models with their voices, sizes, residency and the GPU memory budget."""

from __future__ import annotations

import typer

from orpheus_deploy.commands import settings_for, ui_for


def status(ctx: typer.Context) -> None:
    """Show the state of every deployed resource."""
    from rich.table import Table

    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.phases.lifecycle import status as run

    ui = ui_for(ctx)
    settings = settings_for(ctx)
    report = run(settings, Cloud(settings))
    if ui.json_mode:
        ui.emit(report.as_dict())
        return
    table = Table(title=f"orpheus status ({settings.project}, {settings.region})")
    for column in ("resource", "exists", "as desired", "detail"):
        table.add_column(column)
    for r in report.resources:
        matches = "-" if r["matches"] is None else ("yes" if r["matches"] else "[yellow]no[/]")
        table.add_row(r["key"], "yes" if r["exists"] else "[dim]no[/dim]", matches, r["detail"])
    ui.out.print(table)
    for name, svc in report.services.items():
        if svc["exists"]:
            ready = "ready" if svc["ready"] else f"NOT READY: {svc['message']}"
            ui.out.print(f"{name}: {svc['uri']}  revision {svc['latest_created_revision']} "
                         f"({ready}); {svc['access']}", markup=False)
    for kind, digest in report.images.items():
        ui.out.print(f"image {kind}: {digest or 'not built'}", markup=False)
    gpu = report.gpu
    ui.out.print(f"GPU: {gpu['type']} x{gpu['count']}, zonal redundancy "
                 f"{'on' if gpu['zonal_redundancy'] else 'off'}, instances "
                 f"{gpu['min_instances']}..{gpu['max_instances']}", markup=False)
    limits = report.limits
    per_key = ", ".join(
        f"{limits[k]} {what}" if limits[k] else f"no limit on {what}"
        for k, what in (("key_max_streams", "streams at once"),
                        ("key_requests_per_minute", "requests per minute")))
    ui.out.print(f"Limits ({limits['source']}, per frontend instance): per API key {per_key}; "
                 f"{limits['backend_slots']} backend slots, then a queue of "
                 f"{limits['queue_size']} waiting up to {limits['queue_timeout_s']} s; "
                 f"requests and WebSockets end after {limits['request_timeout_s']} s.",
                 markup=False)
    cost = report.cost_per_hour
    ui.out.print(f"Estimated cost while the backend runs: ${cost['total_usd']:.2f}/hour per "
                 f"instance (list prices of {cost['prices_as_of']}, {cost['source']}); "
                 "nothing while scaled to zero.", markup=False)
    store = report.storage_per_month
    ui.out.print(f"Storage, billed monthly even when scaled to zero: model bucket "
                 f"{store['model_bucket_gib']:.2f} GiB, build bucket "
                 f"{store['build_bucket_gib']:.2f} GiB, images {store['registry_gib']:.2f} GiB: "
                 f"about ${store['usd_per_month']:.2f}/month (cleanup keeps the 3 newest image "
                 "versions; build sources expire after 7 days).", markup=False)
    if report.models:
        models = Table(title="models (resident: as the frontend last saw the GPU)")
        for column in ("model", "language", "voices", "object", "size", "resident"):
            models.add_column(column)
        for m in report.models:
            size = f"{m['size'] / 1e9:.2f} GB" if m["size"] else "unknown"
            name = f"{m['name']} (default)" if m["default"] else m["name"]
            models.add_row(name, m["language"], ", ".join(m["voices"]), m["object"], size,
                           m["resident"])
        ui.out.print(models)
    ui.out.print(f"GPU memory: {report.memory.get('summary', 'not checked')}", markup=False)
