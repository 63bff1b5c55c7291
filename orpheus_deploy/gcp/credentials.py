"""Credentials: Application Default Credentials, or none at all when every client is faked.

Emulator/fake switches (test seams, see design section 3):
``ORPHEUS_GRPC_ENDPOINT`` (all gRPC clients, insecure channel), ``STORAGE_EMULATOR_HOST``
(google-cloud-storage), ``ORPHEUS_REST_ENDPOINT`` (REST-only clients such as compute).
"""

from __future__ import annotations

import os
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


def default_credentials() -> tuple[Any, str | None]:
    """``google.auth.default()`` (cloud-platform scope), or a CloudError saying how to log in."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise no_credentials_error() from None


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
