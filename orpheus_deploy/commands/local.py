"""`orpheus local up`: the backend and the frontend on this machine, until Ctrl-C."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from orpheus_deploy.commands import ui_for

if TYPE_CHECKING:
    from orpheus_deploy.local.stack import LocalStack
    from orpheus_deploy.ui import UI

app = typer.Typer(help="Run the backend and frontend locally (no Google Cloud).",
                  no_args_is_help=True)


class _Stop(Exception):
    """SIGINT/SIGTERM, turned into an exception so that the stack is stopped on the way out.

    Installed explicitly: a process started in the background by a shell inherits SIGINT as
    ignored, and Python then raises no KeyboardInterrupt.
    """


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


@app.command("up")
def up(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Orpheus .gguf to serve (default: download the Q4_K_M once into the "
        "cache).", dir_okay=False, show_default=False)] = None,
    snac: Annotated[Path | None, typer.Option(
        "--snac", help="SNAC 24 kHz decoder in ONNX form (default: export it once into the "
        "cache; needs torch).", dir_okay=False, show_default=False)] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                      help="Port of the speech API.")] = 5005,
    backend_port: Annotated[int, typer.Option(
        "--backend-port", min=0, max=65535, help="Port of the inference server (0: any free).",
    )] = 0,
    host: Annotated[str, typer.Option(
        "--host", help="Address the speech API listens on (0.0.0.0 to share it on the network)."
    )] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="API key clients must send (default: a new random one).",
        envvar="ORPHEUS_LOCAL_API_KEY", show_default=False)] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="auto (llama-server if installed, else llama-cpp-python), "
        "llama-server or llama-cpp-python.")] = "auto",
    parallel: Annotated[int, typer.Option(
        "--parallel", min=1, help="Requests decoded at once (llama-server slots).")] = 2,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads of the inference server (default: its own choice).",
        show_default=False)] = None,
    model_url: Annotated[str | None, typer.Option(
        "--model-url", help="Where to download the model from when --model is not given.",
        show_default=False)] = None,
) -> None:
    """Start the inference server and the speech API on this machine; Ctrl-C stops both."""
    from orpheus_deploy.errors import InputError
    from orpheus_deploy.local import assets
    from orpheus_deploy.local.stack import ENGINES, LocalStack, StackConfig, StackError

    ui = ui_for(ctx)
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if api_key is not None and not api_key.strip():
        raise InputError("--api-key is empty", "omit it to get a generated key")

    # A given model is checked first: it is instant, the SNAC export is not.
    model_path = assets.ensure_model(model) if model is not None else None
    snac_path = assets.ensure_snac(snac)
    if model_path is None:
        ui.info(f"Using the cached model (downloading it once from {model_url or 'Hugging Face'})")
        progress = ui.byte_progress("model", total=0)
        task = progress.orpheus_task

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        with progress:
            model_path = assets.ensure_model(None, model_url or assets.DEFAULT_MODEL_URL, advance)

    key = api_key.strip() if api_key else secrets.token_urlsafe(24)
    stack = LocalStack(StackConfig(
        model=model_path, snac=snac_path, api_key=key, port=port, backend_port=backend_port,
        host=host, engine=engine, parallel=parallel, threads=threads,
        log_dir=assets.cache_dir() / "logs",
    ))
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ui.spinner(f"starting {stack.engine} on {model_path.name}, then the speech API"):
            stack.start()
        _show(ui, stack, key, generated=api_key is None)
        while (gone := stack.exited()) is None:
            time.sleep(0.5)
        raise StackError(
            f"the {gone.name} stopped unexpectedly (exit code {gone.process.returncode}); "
            f"last lines of {gone.log_path}:\n{gone.log_tail()}"
        )
    except (KeyboardInterrupt, _Stop):
        ui.info("stopping...")
    finally:
        # A second Ctrl-C must not abandon the servers half-stopped; stop() kills after a grace.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    ui.success("stopped the speech API and the inference server")


def _show(ui: UI, stack: LocalStack, key: str, generated: bool) -> None:
    url = stack.url
    ui.emit({"url": url, "api_key": key, "backend_url": stack.backend_url,
             "playground_url": f"{url}/playground", "engine": stack.engine,
             "pids": stack.pids()})
    if ui.json_mode:
        return
    ui.success(f"Orpheus is running at {url} (engine: {stack.engine}; logs in "
               f"{stack.config.log_dir})")
    ui.out.print(f"URL: {url}", markup=False)
    ui.out.print(f"API key: {key}" + (" (generated; pass --api-key to choose one)"
                                      if generated else ""), markup=False)
    ui.out.print(f"Playground: {url}/playground (in a browser, with the key)", markup=False)
    ui.out.print("Try it:", markup=False)
    ui.out.print(
        f"  curl -sS {url}/v1/audio/speech -H 'X-API-Key: {key}' "
        "-H 'Content-Type: application/json' "
        "-d '{\"model\": \"orpheus\", \"input\": \"Hello from Orpheus.\", \"voice\": \"tara\", "
        "\"response_format\": \"wav\"}' -o hello.wav",
        markup=False, soft_wrap=True,
    )
    ui.out.print("Press Ctrl-C to stop.", markup=False)
    sys.stdout.flush()  # a script reading our output needs the key now, not at exit
