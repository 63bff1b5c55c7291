"""The single translation from Google library exceptions to one-line :class:`CloudError` messages.

Use :func:`map_error` on an exception, or the :func:`translated` context manager around calls.
Messages are built from the server's message and structured error details (ErrorInfo reason,
service, permission) so that the user learns which permission or API is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orpheus_deploy.errors import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_PERMISSION,
    EXIT_QUOTA,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CloudError,
)
from orpheus_deploy.gcp.credentials import ADC_HINT

_PERMISSION_RES = (
    re.compile(r"[Pp]ermission '?([a-z][a-zA-Z]*\.[a-zA-Z]+\.[a-zA-Z.]+)'? denied"),
    re.compile(r"does not have ([a-z][a-zA-Z]*\.[a-zA-Z]+\.[a-zA-Z.]+) access"),
    re.compile(r"\b(?:requires|missing) (?:permission )?'?"
               r"([a-z][a-zA-Z]*\.[a-zA-Z]+\.[a-zA-Z]+)'?"),
    re.compile(r"\b([a-z][a-zA-Z]*\.(?:[a-z][a-zA-Z]*)\.[a-z][a-zA-Z]*)\b"),
)
# google.rpc.ErrorInfo reasons of a project without (open) billing.
_BILLING_REASONS = ("BILLING_DISABLED", "UREQ_PROJECT_BILLING_NOT_FOUND")
_BILLING_RE = re.compile(r"billing (?:account|must be enabled|to be enabled|disabled)"
                         r"|enable billing|configured billing")
_SERVICE_RE = re.compile(r"\b([a-z][a-z0-9]*\.googleapis\.com)\b")
_MAX_LEN = 300


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_LEN else text[: _MAX_LEN - 1] + "…"


def _permission(message: str, metadata: dict[str, str]) -> str | None:
    if metadata.get("permission"):
        return metadata["permission"]
    for pattern in _PERMISSION_RES:
        for match in pattern.finditer(message):
            token = match.group(1)
            before = message[match.start(1) - 1] if match.start(1) else " "
            # Host names in the links Google puts in messages ("https://console.cloud.google
            # .com/...", "x@p.iam.gserviceaccount.com") look like service.resource.verb too.
            if before in "/@." or "google" in token or token.endswith(".com"):
                continue
            return token
    return None


def _details(exc: Any) -> tuple[str | None, dict[str, str]]:
    reason = getattr(exc, "reason", None)
    metadata = dict(getattr(exc, "metadata", None) or {})
    return reason, metadata


def map_error(
    exc: BaseException, action: str | None = None, project: str | None = None
) -> CloudError:
    """Translate any Google Cloud / google-auth / transport error to a CloudError.

    ``action`` names what was being done ("create secret orpheus-api-key") and prefixes the message.
    """
    if isinstance(exc, CloudError):
        return exc
    prefix = f"Cannot {action}: " if action else ""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc

    if isinstance(exc, gexc.RetryError):
        cause = exc.cause if exc.cause is not None else exc
        if cause is not exc:
            return map_error(cause, action, project)
        return CloudError(f"{prefix}Google Cloud did not answer in time",
                          "check your network connection and retry", EXIT_UNAVAILABLE,
                          kind="unavailable")
    if isinstance(exc, aexc.DefaultCredentialsError):
        return CloudError(f"{prefix}No Google Cloud credentials found", ADC_HINT, EXIT_AUTH,
                          kind="auth")
    if isinstance(exc, aexc.RefreshError):
        return CloudError(f"{prefix}Google Cloud credentials are invalid or expired",
                          ADC_HINT, EXIT_AUTH, kind="auth")
    if isinstance(exc, aexc.TransportError):
        return CloudError(f"{prefix}Cannot reach Google Cloud (network unavailable)",
                          "check your network connection and proxy settings", EXIT_UNAVAILABLE,
                          kind="unavailable")

    if not isinstance(exc, gexc.GoogleAPICallError):
        try:
            import requests
        except ImportError:  # pragma: no cover
            requests = None  # type: ignore[assignment]
        if requests is not None and isinstance(exc, requests.exceptions.ConnectionError):
            return CloudError(f"{prefix}Cannot reach Google Cloud (network unavailable)",
                              "check your network connection", EXIT_UNAVAILABLE,
                              kind="unavailable")
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return CloudError(f"{prefix}Cannot reach Google Cloud (network unavailable)",
                              "check your network connection", EXIT_UNAVAILABLE,
                              kind="unavailable")
        return CloudError(f"{prefix}{_one_line(str(exc)) or type(exc).__name__}",
                          None, EXIT_FAILURE, kind="unknown")

    message = _one_line(getattr(exc, "message", None) or str(exc))
    reason, metadata = _details(exc)
    where = f" --project {project}" if project else ""

    lowered = message.lower()
    if reason in _BILLING_REASONS or (
        isinstance(exc, (gexc.PermissionDenied, gexc.Forbidden, gexc.FailedPrecondition))
        and reason != "IAM_PERMISSION_DENIED" and _BILLING_RE.search(lowered)
    ):
        # e.g. "This API method requires billing to be enabled. Please enable billing on
        # project #P ...", "The billing account for the owning project is disabled in state
        # absent", "Billing account for project 'N' is not found. Billing must be enabled for
        # activation of service(s) ...": not an API or a permission the user can grant.
        url = ("https://console.cloud.google.com/billing/linkedaccount"
               + (f"?project={project}" if project else ""))
        return CloudError(f"{prefix}the project has no active billing account: {message}",
                          f"link an open billing account to the project at {url}, then retry",
                          EXIT_PERMISSION, kind="billing")

    service = metadata.get("service") or metadata.get("serviceTitle")
    if reason in ("SERVICE_DISABLED", "API_DISABLED") or (
        isinstance(exc, (gexc.PermissionDenied, gexc.Forbidden, gexc.FailedPrecondition))
        and ("has not been used" in message or "is disabled" in message
             or "it is disabled" in message)
    ):
        api = service
        if not api:
            match = _SERVICE_RE.search(message)
            api = match.group(1) if match else None
        api_text = f"the {api} API" if api else "a required API"
        return CloudError(f"{prefix}{api_text} is disabled",
                          f"enable it: run `orpheus setup{where}` "
                          + (f"or enable {api} in the console" if api else ""),
                          EXIT_PERMISSION, kind="api_disabled")
    if isinstance(exc, (gexc.PermissionDenied, gexc.Forbidden)):
        permission = _permission(message, metadata)
        text = f"permission {permission} denied" if permission else f"permission denied: {message}"
        hint = (f"grant your account a role that includes {permission}" if permission
                else "check your account's IAM roles on the project")
        return CloudError(f"{prefix}{text}", hint, EXIT_PERMISSION, kind="permission")
    if isinstance(exc, gexc.Unauthenticated) or getattr(exc, "code", None) == 401:
        return CloudError(f"{prefix}not authenticated ({message})", ADC_HINT, EXIT_AUTH,
                          kind="auth")
    if isinstance(exc, (gexc.ResourceExhausted, gexc.TooManyRequests)):
        quota = metadata.get("quota_metric") or metadata.get("quota_limit")
        text = f"quota exceeded{f' ({quota})' if quota else ''}: {message}"
        url = ("https://console.cloud.google.com/iam-admin/quotas"
               + (f"?project={project}" if project else ""))
        return CloudError(f"{prefix}{text}", f"request more quota at {url}", EXIT_QUOTA,
                          kind="quota")
    if isinstance(exc, gexc.NotFound):
        return CloudError(f"{prefix}not found: {message}",
                          f"run `orpheus setup{where}` first if the resource should exist",
                          EXIT_NOT_FOUND, kind="not_found")
    if isinstance(exc, (gexc.AlreadyExists, gexc.Conflict, gexc.Aborted)):
        return CloudError(f"{prefix}conflict: {message}", "retry; another change raced this one",
                          EXIT_CONFLICT, kind="conflict")
    if isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.GatewayTimeout,
                        gexc.BadGateway)):
        return CloudError(f"{prefix}Google Cloud is unavailable: {message}",
                          "check your network connection and retry", EXIT_UNAVAILABLE,
                          kind="unavailable")
    if isinstance(exc, (gexc.InvalidArgument, gexc.BadRequest, gexc.FailedPrecondition,
                        gexc.OutOfRange)):
        return CloudError(f"{prefix}rejected by Google Cloud: {message}", None, EXIT_USAGE,
                          kind="invalid")
    return CloudError(f"{prefix}{message}", None, EXIT_FAILURE, kind="unknown")


@contextmanager
def translated(action: str | None = None, project: str | None = None) -> Iterator[None]:
    """Run a block of cloud calls; any library error leaves it as a CloudError."""
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:
        if _is_library_error(exc):
            raise map_error(exc, action, project) from exc
        raise


def _is_library_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return (module.startswith(("google.", "requests", "urllib3", "grpc"))
            or isinstance(exc, (ConnectionError, TimeoutError)))
