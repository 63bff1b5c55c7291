"""Credentials: Application Default Credentials, or none at all when every client is faked.

Emulator/fake switches (test seams, see design section 3):
``ORPHEUS_GRPC_ENDPOINT`` (all gRPC clients, insecure channel), ``STORAGE_EMULATOR_HOST``
(google-cloud-storage), ``ORPHEUS_REST_ENDPOINT`` (REST-only clients such as compute).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orpheus_deploy.errors import EXIT_AUTH, CloudError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

ADC_HINT = ("run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service account key file")


def grpc_endpoint() -> str | None:
    return os.environ.get("ORPHEUS_GRPC_ENDPOINT") or None


def rest_endpoint() -> str | None:
    return os.environ.get("ORPHEUS_REST_ENDPOINT") or None


def storage_emulator() -> str | None:
    return os.environ.get("STORAGE_EMULATOR_HOST") or None


def no_credentials_error() -> CloudError:
    return CloudError("No Google Cloud credentials found", ADC_HINT, EXIT_AUTH, kind="auth")


_cache: dict[str, tuple[Any, str | None]] = {}


def _adc_file() -> Path:
    """Where `gcloud auth application-default login` writes its credentials."""
    if os.environ.get("CLOUDSDK_CONFIG"):
        return Path(os.environ["CLOUDSDK_CONFIG"]) / "application_default_credentials.json"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", "")) / "gcloud" / (
            "application_default_credentials.json")
    return Path.home() / ".config" / "gcloud" / "application_default_credentials.json"


def surely_no_credentials() -> bool:
    """True when ADC cannot possibly succeed: no key file variable, no gcloud ADC file, and the
    metadata server check is disabled (NO_GCE_CHECK=true, as google-auth reads it). Lets a
    command fail in milliseconds without importing google-auth and its HTTP stack."""
    return (not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            and os.environ.get("NO_GCE_CHECK") == "true"
            and not _adc_file().is_file())


def default_credentials() -> tuple[Any, str | None]:
    """``google.auth.default()`` (cloud-platform scope), or a CloudError saying how to log in.
    Cached per process: the settings (for the project) and the clients share one lookup."""
    if "adc" in _cache:
        return _cache["adc"]
    if surely_no_credentials():
        raise no_credentials_error()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _cache["adc"] = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise no_credentials_error() from None
    return _cache["adc"]


def adc_project() -> str | None:
    """The project of the Application Default Credentials, or None (never raises)."""
    try:
        _, project = default_credentials()
    except Exception:  # no or broken credentials must not break `orpheus config`
        return None
    return project or None


def credentials_available() -> bool:
    """Cheap check: can cloud calls be made at all? True under the fake cloud (gRPC endpoint set),
    else whether Application Default Credentials can be found. Never raises."""
    if grpc_endpoint():
        return True
    try:
        default_credentials()
    except CloudError:
        return False
    except Exception:
        return False
    return True
