"""Rendering: human output with Rich (stderr for progress, stdout for results) or ``--json``.

In ``--json`` mode stdout carries exactly one JSON object per command (the result, or
``{"error": ...}``), and human chatter is suppressed, so CI can parse stdout directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from orpheus_deploy.config import GlobalOptions
    from orpheus_deploy.errors import OrpheusError
    from orpheus_deploy.resources.base import PhaseReport

_ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim",
                 "absent": "dim"}


class UI:
    def __init__(self, json_mode: bool = False, verbose: bool = False, yes: bool = False):
        self.json_mode = json_mode
        self.verbose = verbose
        self.yes = yes
        self._out: Console | None = None
        self._err: Console | None = None

    @classmethod
    def from_options(cls, opts: GlobalOptions | None) -> UI:
        if opts is None:
            return cls()
        return cls(json_mode=opts.json, verbose=opts.verbose, yes=opts.yes)

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            self._out = Console(highlight=False, soft_wrap=True)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    # -- messages ----------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(message, markup=False)

    def success(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(f"[green]✓[/green] {_escape(message)}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {_escape(message)}")

    def error(self, exc: OrpheusError) -> None:
        if self.json_mode:
            payload: dict[str, Any] = {"message": exc.message, "hint": exc.hint,
                                       "exit_code": exc.exit_code}
            kind = getattr(exc, "kind", None)
            if kind:
                payload["kind"] = kind
            print(json.dumps({"error": payload}), flush=True)
        line = f"[red]Error:[/red] {_escape(exc.message)}"
        if exc.hint:
            line += f" [dim]→ {_escape(exc.hint)}[/dim]"
        self.err.print(line)

    def emit(self, data: dict[str, Any]) -> None:
        """The command's machine-readable result (printed only in --json mode)."""
        if self.json_mode:
            print(json.dumps(data, default=str), flush=True)

    @property
    def ci(self) -> bool:
        """Running in CI (``CI=true``, as GitHub Actions, GitLab and most CI systems set it):
        output goes to logs that are kept and shared, so secrets are never printed."""
        from orpheus_deploy.secret_file import is_ci

        return is_ci()

    def show_secret_once(self, label: str, value: str) -> None:
        """Print a generated secret to the terminal exactly once (stdout; never logged). Never
        in --json mode or in CI, whose output is kept (see phases.setup for the alternatives)."""
        if self.json_mode or self.ci:
            return
        self.out.print(f"{label}: ", end="", markup=False)
        self.out.print(value, markup=False, highlight=False)
        self.err.print("[dim]Store it now: it is not shown again.[/dim]")

    # -- progress ----------------------------------------------------------------------------
    @contextmanager
    def spinner(self, label: str) -> Iterator[Any]:
        """A spinner on stderr; yields a callable ``(label, elapsed_s)`` for ``gcp.wait_for``."""
        if self.json_mode or not self.err.is_terminal:
            if self.verbose:
                self.info(f"… {label}")
            yield lambda _label, _elapsed: None
            return
        with self.err.status(label) as status:
            yield lambda text, elapsed: status.update(f"{text} ({elapsed:.0f}s)")

    def byte_progress(self, label: str, total: int) -> Any:
        """A Rich progress bar in bytes (with speed and ETA) on stderr; disabled in --json."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=self.err,
            disable=self.json_mode, transient=False,
        )
        progress.orpheus_task = progress.add_task(label, total=total)  # type: ignore[attr-defined]
        return progress

    # -- results -----------------------------------------------------------------------------
    def report(self, report: PhaseReport) -> None:
        if self.json_mode:
            self.emit(report.as_dict())
            return
        from rich.table import Table

        table = Table(title=f"orpheus {report.phase}", show_lines=False)
        table.add_column("resource")
        table.add_column("action")
        table.add_column("detail")
        for result in report.results:
            style = _ACTION_STYLE.get(result.action, "")
            detail = result.detail or ", ".join(str(c) for c in result.changes)
            table.add_row(result.key, f"[{style}]{result.action}[/{style}]" if style
                          else result.action, _escape(detail))
        self.err.print(table)
        for message in report.messages:
            self.err.print(message, markup=False)
        if not report.changed:
            self.success("Nothing to change: everything is already up to date.")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()
