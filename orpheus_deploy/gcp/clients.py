"""``Cloud``: builds and caches Google Cloud clients for one Settings object.

No client library is imported until a client is first asked for, so ``orpheus --help`` stays fast.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from orpheus_deploy.gcp import credentials as creds
from orpheus_deploy.gcp.policy import OperationPolicy

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings

USER_AGENT = "orpheus-deploy/0.1"


def with_quota_project(credentials: Any, project: str | None) -> Any:
    """User credentials (``gcloud auth application-default login``) with no quota project get
    the deployment's project as theirs.

    Service Usage (enabling the APIs, the first thing `setup` does) is a client-based API: called
    with user credentials it needs a quota project, and without one Google answers
    PERMISSION_DENIED ("... requires a quota project, which is not set by default", or
    SERVICE_DISABLED naming the gcloud CLI's own project), which no `orpheus` hint could fix.
    A quota project the user chose is kept; service-account and workload-identity credentials
    are left alone (their own project is used)."""
    from google.oauth2 import credentials as user_credentials

    if (project and isinstance(credentials, user_credentials.Credentials)
            and not credentials.quota_project_id):
        return credentials.with_quota_project(project)
    return credentials


class Cloud:
    """Lazily-built, cached Google Cloud clients plus the polling/retry policy.

    Accessors (each returns the client library's own client class):
    ``service_usage()``, ``secrets()``, ``artifact_registry()``, ``iam_admin()``, ``projects()``,
    ``storage()``, ``run_services()``, ``run_revisions()``, ``cloud_build()``, ``logging()``,
    ``compute(class_name)`` (REST), and the generic ``grpc_client(module, class_name)`` /
    ``rest_client(module, class_name)`` for any other library.
    """

    def __init__(self, settings: Settings, policy: OperationPolicy | None = None):
        self.settings = settings
        self.policy = policy or OperationPolicy.from_env()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._channel: Any = None
        # Progress callback ``(label, elapsed_s)`` for long operations; the UI sets it while a
        # spinner is shown, and resources pass it to ``wait_for``.
        self.progress: Any = None

    # -- credentials -------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return self.settings.require_project()

    def ensure_credentials(self) -> None:
        """Fail fast (before any work) with the login message when nothing can authenticate."""
        if creds.grpc_endpoint():
            return
        self.credentials()

    def credentials(self) -> Any:
        if self._credentials is None:
            self._credentials = with_quota_project(creds.default_credentials()[0],
                                                   self.settings.project)
        return self._credentials

    @property
    def retry(self) -> Any:
        """Retry for transient errors, pass as ``retry=cloud.retry`` to every gRPC call."""
        return self.policy.retry()

    # -- generic builders --------------------------------------------------------------------
    def grpc_client(self, module: str, class_name: str) -> Any:
        """Client ``module.class_name``; on ``ORPHEUS_GRPC_ENDPOINT`` an insecure shared channel."""
        key = (module, class_name)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._build_grpc(module, class_name)
            return self._clients[key]

    def _build_grpc(self, module: str, class_name: str) -> Any:
        cls = getattr(importlib.import_module(module), class_name)
        endpoint = creds.grpc_endpoint()
        if endpoint:
            import grpc

            if self._channel is None:
                self._channel = grpc.insecure_channel(endpoint)
            transport = cls.get_transport_class("grpc")(channel=self._channel)
            return cls(transport=transport)
        from google.api_core.gapic_v1.client_info import ClientInfo

        return cls(credentials=self.credentials(), client_info=ClientInfo(user_agent=USER_AGENT))

    def rest_client(self, module: str, class_name: str) -> Any:
        """REST-only client; on ``ORPHEUS_REST_ENDPOINT`` that URL with anonymous credentials."""
        key = (module, class_name)
        with self._lock:
            if key not in self._clients:
                cls = getattr(importlib.import_module(module), class_name)
                endpoint = creds.rest_endpoint()
                if endpoint:
                    from google.auth.credentials import AnonymousCredentials

                    self._clients[key] = cls(
                        credentials=AnonymousCredentials(), transport="rest",
                        client_options={"api_endpoint": endpoint},
                    )
                else:
                    self._clients[key] = cls(credentials=self.credentials(), transport="rest")
            return self._clients[key]

    # -- named accessors ---------------------------------------------------------------------
    def service_usage(self) -> Any:
        return self.grpc_client("google.cloud.service_usage_v1", "ServiceUsageClient")

    def secrets(self) -> Any:
        return self.grpc_client("google.cloud.secretmanager_v1", "SecretManagerServiceClient")

    def artifact_registry(self) -> Any:
        return self.grpc_client("google.cloud.artifactregistry_v1", "ArtifactRegistryClient")

    def iam_admin(self) -> Any:
        return self.grpc_client("google.cloud.iam_admin_v1", "IAMClient")

    def projects(self) -> Any:
        return self.grpc_client("google.cloud.resourcemanager_v3", "ProjectsClient")

    def run_services(self) -> Any:
        return self.grpc_client("google.cloud.run_v2", "ServicesClient")

    def run_revisions(self) -> Any:
        return self.grpc_client("google.cloud.run_v2", "RevisionsClient")

    def cloud_build(self) -> Any:
        return self.grpc_client("google.cloud.devtools.cloudbuild_v1", "CloudBuildClient")

    def logging(self) -> Any:
        """The generated Cloud Logging client (gRPC). google-cloud-logging's handwritten
        ``logging.Client`` builds this same class but cannot be given a channel, so it could not
        honour ORPHEUS_GRPC_ENDPOINT; the generated client also has the TailLogEntries stream."""
        return self.grpc_client("google.cloud.logging_v2.services.logging_service_v2",
                                "LoggingServiceV2Client")

    def compute(self, class_name: str) -> Any:
        """e.g. ``cloud.compute("SubnetworksClient")`` (google-cloud-compute is REST-only)."""
        return self.rest_client("google.cloud.compute_v1", class_name)

    def storage(self) -> Any:
        """google-cloud-storage client; anonymous against ``STORAGE_EMULATOR_HOST``."""
        key = ("google.cloud.storage", "Client")
        with self._lock:
            if key not in self._clients:
                # The submodule by its full name: google-cloud-storage ships no type information,
                # and mypy does not see an untyped package as an attribute of google.cloud.
                from google.cloud.storage import Client

                if creds.storage_emulator():
                    from google.auth.credentials import AnonymousCredentials

                    client = Client(project=self.project, credentials=AnonymousCredentials())
                else:
                    client = Client(project=self.project, credentials=self.credentials())
                self._clients[key] = client
            return self._clients[key]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._clients.clear()
