"""The `orpheus` command line: global options, command registration, and top-level error handling.

Each command lives in its own module under ``orpheus_deploy.commands``; this file only wires
them. Importing it must stay cheap: no google.cloud import happens until a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orpheus_deploy import commands
from orpheus_deploy.commands import (
    build,
    deploy,
    destroy,
    doctor,
    keys,
    local,
    logs,
    plan,
    status,
    test,
)
from orpheus_deploy.commands import config as config_cmd
from orpheus_deploy.commands import init as init_cmd
from orpheus_deploy.commands import setup as setup_cmd
from orpheus_deploy.commands import upload_model as upload_cmd
from orpheus_deploy.commands.say import say as say_cmd
from orpheus_deploy.config import GlobalOptions

app = typer.Typer(
    name="orpheus",
    help="Deploy Orpheus text-to-speech to Google Cloud Run: `orpheus deploy --all`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain Click help: Rich help formatting would double `--help` start-up time
    # (bench/cli_startup.py); Rich stays for the output of the commands themselves.
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The options of the running invocation, so that main() can honour -v/--json on errors.
_invocation: dict[str, GlobalOptions] = {}


@app.callback()
def _global_options(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(
        "--project", help="Google Cloud project ID (default: orpheus.toml, then ADC's project).",
        show_default=False)] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help="Cloud Run region (default: us-central1).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Settings file (default: ./orpheus.toml).", show_default=False,
        dir_okay=False)] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Machine-readable output (one JSON object on stdout).")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show details, and a traceback on errors.")] = False,
) -> None:
    opts = GlobalOptions(project=project, region=region, config=config, yes=yes,
                         json=json_output, verbose=verbose)
    ctx.obj = opts
    _invocation["opts"] = opts


app.command("init")(init_cmd.init)
app.command("config")(config_cmd.config)
app.command("doctor")(doctor.doctor)
app.command("setup")(setup_cmd.setup)
app.command("upload-model")(upload_cmd.upload_model)
app.command("remove-model")(upload_cmd.remove_model)
app.command("build")(build.build)
app.command("deploy-backend")(deploy.deploy_backend)
app.command("deploy-frontend")(deploy.deploy_frontend)
app.command("deploy")(deploy.deploy)
app.command("test")(test.test)
app.command("say")(say_cmd)
app.command("plan")(plan.plan)
app.command("status")(status.status)
app.command("destroy")(destroy.destroy)
app.command("logs")(logs.logs)
app.add_typer(local.app, name="local")
app.add_typer(keys.app, name="keys")

__all__ = ["app", "commands", "main"]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the process exit code."""
    from orpheus_deploy.errors import OrpheusError

    cx = _click_exceptions()

    _invocation.clear()
    args = _hoist_global_options(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="orpheus", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except OrpheusError as exc:
        code = _report(exc)
    except typer.Exit as exc:
        code = exc.exit_code
    except cx.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("Aborted.", file=sys.stderr)
        code = 130
    except Exception as exc:
        code = _report_unexpected(exc)
    if argv is None:
        sys.exit(code)
    return code


_GLOBAL_WITH_VALUE = ("--project", "--region", "--config")
_GLOBAL_FLAGS = ("--yes", "-y", "--json", "--verbose", "-v")


def _hoist_global_options(args: list[str]) -> list[str]:
    """Accept global options after the command too (`orpheus setup --project X`).

    Click only parses group options before the subcommand; people type them anywhere, and the
    hints this tool prints put them last. No command defines an option of the same name.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_WITH_VALUE and "=" in arg):
            hoisted.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and i + 1 < len(args):
            hoisted.extend(args[i:i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


def _click_exceptions():  # type: ignore[no-untyped-def]
    """Where Typer's usage errors live: recent Typer vendors Click as typer._click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older Typer uses Click itself
        from click import exceptions
    return exceptions


def _report(exc: BaseException) -> int:
    from orpheus_deploy.ui import UI

    opts = _invocation.get("opts")
    ui = UI.from_options(opts)
    if opts is not None and opts.verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    ui.error(exc)  # type: ignore[arg-type]
    return getattr(exc, "exit_code", 1)


def _report_unexpected(exc: Exception) -> int:
    """Library errors that escaped a phase still become one line; real bugs say so."""
    from orpheus_deploy.errors import OrpheusError

    mapped: BaseException
    try:
        from orpheus_deploy.gcp.errors import _is_library_error, map_error

        mapped = map_error(exc) if _is_library_error(exc) else exc
    except Exception:  # pragma: no cover - mapping must never hide the original error
        mapped = exc
    if isinstance(mapped, OrpheusError):
        mapped.__traceback__ = exc.__traceback__
        return _report(mapped)
    opts = _invocation.get("opts")
    if opts is not None and opts.verbose:
        raise exc
    print(f"Error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
          "(re-run with -v for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    main()
