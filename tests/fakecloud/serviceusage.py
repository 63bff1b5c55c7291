"""Fake Service Usage v1: which APIs are enabled; enabling is a long-running operation and the
APIs become enabled only when the operation completes (as on Google Cloud)."""

from __future__ import annotations

import re
from typing import Any

from google.cloud import service_usage_v1
from google.cloud.service_usage_v1.types import resources

from tests.fakecloud.core import FakeService, invalid, not_found, rpc

# Services every project has on from the start (as a new project does).
DEFAULT_ENABLED = frozenset({"serviceusage.googleapis.com"})
_NAME_RE = re.compile(r"^projects/([^/]+)/services/([a-z0-9.-]+\.googleapis\.com)$")


class ServiceUsageFake(FakeService):
    client = ("google.cloud.service_usage_v1", "ServiceUsageClient")
    key = "serviceusage"
    api = None  # always callable, as on Google Cloud

    def __init__(self, cloud: Any):
        super().__init__(cloud)
        self.enabled: set[str] = set(DEFAULT_ENABLED)

    def is_enabled(self, api: str) -> bool:
        with self.lock:
            return api in self.enabled

    def _service(self, api: str) -> resources.Service:
        return resources.Service(
            name=f"projects/{self.cloud.project_number}/services/{api}",
            parent=f"projects/{self.cloud.project_number}",
            config=resources.ServiceConfig(name=api),
            state=(resources.State.ENABLED if self.is_enabled(api)
                   else resources.State.DISABLED),
        )

    def _split(self, name: str) -> str:
        match = _NAME_RE.match(name)
        if not match:
            raise invalid(f"Invalid service name {name!r}.")
        self.check_project(name)
        return match.group(2)

    @rpc("serviceusage.services.get")
    def get_service(self, request: Any, context: Any) -> resources.Service:
        return self._service(self._split(request.name))

    @rpc("serviceusage.services.list")
    def list_services(self, request: Any, context: Any) -> Any:
        self.check_project(request.parent)
        with self.lock:
            apis = sorted(self.enabled)
        if request.filter and request.filter != "state:ENABLED":
            raise invalid(f"Unsupported filter {request.filter!r}.")
        return service_usage_v1.ListServicesResponse(services=[self._service(a) for a in apis])

    @rpc("serviceusage.services.get")
    def batch_get_services(self, request: Any, context: Any) -> Any:
        self.check_project(request.parent)
        if len(request.names) > 30:
            raise invalid("At most 30 services can be requested at once.")
        return service_usage_v1.BatchGetServicesResponse(
            services=[self._service(self._split(n)) for n in request.names])

    def _enable_later(self, apis: list[str]) -> Any:
        for api in apis:
            if not api.endswith(".googleapis.com"):
                raise not_found(f"Service {api}")

        def done() -> Any:
            with self.lock:
                self.enabled.update(apis)
            return service_usage_v1.BatchEnableServicesResponse(
                services=[self._service(a) for a in apis])

        return self.cloud.operations.start(
            on_done=done, polls=2, metadata=resources.OperationMetadata(),
            prefix="operations/acat.p2-fake")

    @rpc("serviceusage.services.enable")
    def batch_enable_services(self, request: Any, context: Any) -> Any:
        self.check_project(request.parent)
        if not request.service_ids or len(request.service_ids) > 20:
            raise invalid("Between 1 and 20 services can be enabled at once.")
        return self._enable_later(list(request.service_ids))

    @rpc("serviceusage.services.enable")
    def enable_service(self, request: Any, context: Any) -> Any:
        return self._enable_later([self._split(request.name)])

    @rpc("serviceusage.services.disable")
    def disable_service(self, request: Any, context: Any) -> Any:
        api = self._split(request.name)

        def done() -> Any:
            with self.lock:
                self.enabled.discard(api)
            return service_usage_v1.DisableServiceResponse(service=self._service(api))

        return self.cloud.operations.start(on_done=done, polls=1)


SERVICES = [ServiceUsageFake]
