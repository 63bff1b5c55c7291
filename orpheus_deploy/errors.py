"""Errors meant for people: one line saying what failed, why, and what to do next.

Every failure the CLI expects is an :class:`OrpheusError`; the top level of ``cli.main`` prints
``message`` and ``hint`` on one line each and exits with ``exit_code``. A Python traceback is shown
only with ``-v``. Library exceptions are translated in exactly one place
(:func:`orpheus_deploy.gcp.errors.map_error`), never ad hoc in commands.
"""

from __future__ import annotations

# Exit codes, stable so that CI scripts can branch on them.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_IMPLEMENTED = 3
EXIT_AUTH = 4
EXIT_PERMISSION = 5
EXIT_NOT_FOUND = 6
EXIT_QUOTA = 7
EXIT_UNAVAILABLE = 8
EXIT_CONFLICT = 9


class OrpheusError(Exception):
    """An expected failure with a one-line message and an optional next step."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(OrpheusError):
    """Invalid settings: bad flag, bad orpheus.toml, missing project."""

    exit_code = EXIT_USAGE


class InputError(OrpheusError):
    """Bad input given by the user (a file that is not a GGUF, an empty API key, ...)."""

    exit_code = EXIT_USAGE


class NotImplementedYet(OrpheusError):
    exit_code = EXIT_NOT_IMPLEMENTED


class CloudError(OrpheusError):
    """A Google Cloud call failed; built by ``gcp.errors.map_error`` from the library error.

    ``kind`` is a short machine-readable category ("auth", "permission", "api_disabled", "billing",
    "quota", "not_found", "unavailable", "conflict", "invalid", "unknown") for ``--json``.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        exit_code: int | None = None,
        kind: str = "unknown",
    ):
        super().__init__(message, hint, exit_code)
        self.kind = kind
