"""Google Cloud access: the only package that creates Google Cloud clients.

Contract used by every phase and resource::

    from orpheus_deploy.gcp import Cloud, OperationPolicy, wait_for, map_error, translated
    cloud = Cloud(settings)                # or Cloud(settings, policy=OperationPolicy.fast())
    cloud.ensure_credentials()             # CloudError(kind="auth") with the ADC login hint
    client = cloud.secrets()               # lazily built, cached per Cloud
    client.get_secret(name=..., retry=cloud.retry)
    with translated("create secret orpheus-api-key", cloud.project):
        ...                                # library errors leave as one-line CloudError
    result = wait_for(operation, "enable APIs", cloud.policy, progress=ui.progress_callback)

Accessors on ``Cloud``: ``service_usage()``, ``secrets()``, ``artifact_registry()``,
``iam_admin()``, ``projects()``, ``storage()``, ``run_services()``, ``run_revisions()``,
``cloud_build()``, ``compute("SubnetworksClient")``, and the generic
``grpc_client(module, class_name)`` / ``rest_client(module, class_name)``.

Test seams: ``ORPHEUS_GRPC_ENDPOINT=host:port`` (all gRPC clients use one insecure channel
there, no credentials), ``STORAGE_EMULATOR_HOST=http://host:port`` (storage, anonymous),
``ORPHEUS_REST_ENDPOINT=http://host:port`` (REST clients, anonymous), and ``ORPHEUS_POLL_*`` /
``ORPHEUS_RETRY_*`` for the polling/retry policy (see ``policy.py``).

``credentials_available()`` is a cheap check (no network) for commands that can fall back to a
dry run without credentials. Nothing here imports a google module at import time.
"""

from orpheus_deploy.errors import CloudError
from orpheus_deploy.gcp.clients import Cloud
from orpheus_deploy.gcp.credentials import credentials_available
from orpheus_deploy.gcp.errors import map_error, translated
from orpheus_deploy.gcp.operations import wait_for
from orpheus_deploy.gcp.policy import OperationPolicy

__all__ = [
    "Cloud",
    "CloudError",
    "OperationPolicy",
    "credentials_available",
    "map_error",
    "translated",
    "wait_for",
]
