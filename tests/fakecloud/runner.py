"""Runs the fake Cloud Run's services for real: the ``on_ready``/``on_deleted`` hooks.

When a revision becomes ready in the fake Cloud Run (tests/fakecloud/run.py), the runner starts
its container natively (tests/fakecloud/container.py), waits for its startup probe, and reports
the service's router URL (tests/fakecloud/router.py) as the service URI; a container that cannot
start fails the revision with its log tail, and the previous revision keeps serving, as on Cloud
Run. A revision that is already running (a rollout that changed nothing in the template) keeps its
instance. Deleting a service stops its instance and its router.

    runner = CloudRunRunner(cloud, storage, work_dir, artifacts={...}).attach()
    ...
    runner.stop()          # every instance and router; runner.leftover_pids() is then empty
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from google.cloud import run_v2

from tests.fakecloud.container import ContainerFactory, Instance
from tests.fakecloud.idtokens import IdTokenIssuer
from tests.fakecloud.router import ServiceRouter


class CloudRunRunner:
    def __init__(self, cloud: Any, storage: Any, work_dir: Path, artifacts: dict[str, Path],
                 startup_timeout_s: float = 120.0, vpc_egress_delay_s: float = 0.0) -> None:
        self.cloud = cloud
        self.work_dir = work_dir
        self.startup_timeout_s = startup_timeout_s
        # How long a new instance with Direct VPC egress cannot open connections through the
        # VPC (see router.py; the Direct VPC egress page, Limitations).
        self.vpc_egress_delay_s = vpc_egress_delay_s
        iam = cloud.services["iam"]  # tokens only for accounts that exist in the fake IAM
        self.issuer = IdTokenIssuer(work_dir / "keys", account_exists=iam.exists).start()
        self.factory = ContainerFactory(cloud, storage, work_dir, self.issuer, artifacts)
        self.routers: dict[str, ServiceRouter] = {}  # by full service name
        self.specs: dict[str, run_v2.Service] = {}  # the serving revision's service spec
        self.stopped: list[ServiceRouter] = []  # routers of deleted services
        self._vpc_instances: list[Instance] = []  # started with Direct VPC egress
        self._lock = threading.Lock()

    def attach(self) -> CloudRunRunner:
        run = self.cloud.services["run"]
        run.on_ready = self.on_ready
        run.on_deleted = self.on_deleted
        return self

    # -- hooks -------------------------------------------------------------------------------
    def on_ready(self, service: run_v2.Service) -> str:
        with self._lock:
            router = self.routers.get(service.name)
            if router is None:
                router = ServiceRouter(service.name, self.cloud, self.issuer, self.vpc_callers,
                                       self.startup_timeout_s,
                                       egress_not_ready=self.egress_not_ready).start()
                self.routers[service.name] = router
        revision = service.latest_created_revision.rsplit("/", 1)[-1]
        internal = service.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
        # Ingress and IAM are service settings, not revisions: they apply at once.
        router.invoker_iam_disabled = bool(service.invoker_iam_disabled)
        current = router.container
        if current is not None and current.revision == revision:
            router.internal = internal
            self.specs[service.name] = service
            return router.url
        container = self.factory.container(service)  # RevisionFailed: bad secret, volume, image
        all_traffic = run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
        container.vpc_egress = bool(service.template.vpc_access.network_interfaces
                                    and service.template.vpc_access.egress == all_traffic)
        container.on_start = self._started
        instance = container.start()
        instance.wait_ready(self.startup_timeout_s)  # RevisionFailed: crashed or never ready
        router.serve(container, instance, internal)
        self.specs[service.name] = service
        return router.url

    def on_deleted(self, name: str) -> None:
        with self._lock:
            router = self.routers.pop(name, None)
            self.specs.pop(name, None)
        if router is not None:
            router.stop()
            self.stopped.append(router)

    # -- queries -----------------------------------------------------------------------------
    def vpc_callers(self) -> set[str]:
        """Service accounts of running services whose egress goes through the VPC."""
        all_traffic = run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
        return {s.template.service_account for s in list(self.specs.values())
                if s.template.vpc_access.egress == all_traffic
                and s.template.vpc_access.network_interfaces}

    def egress_not_ready(self, peer_port: int) -> bool:
        """Whether the connection from 127.0.0.1:``peer_port`` comes from an instance with
        Direct VPC egress that started less than ``vpc_egress_delay_s`` ago."""
        if self.vpc_egress_delay_s <= 0:
            return False
        with self._lock:
            young = [i for i in self._vpc_instances
                     if i.alive() and i.age_s() < self.vpc_egress_delay_s]
        return any(i.owns_connection_from(peer_port) for i in young)

    def _started(self, instance: Instance) -> None:
        if instance.container.vpc_egress:
            with self._lock:
                self._vpc_instances = [i for i in self._vpc_instances if i.alive()]
                self._vpc_instances.append(instance)

    def router(self, service_id: str) -> ServiceRouter:
        for name, router in self.routers.items():
            if name.rsplit("/", 1)[-1] == service_id:
                return router
        raise KeyError(service_id)

    def instance(self, service_id: str) -> Instance:
        instance = self.router(service_id).instance
        if instance is None:
            raise KeyError(f"{service_id} has no running instance")
        return instance

    def all_instances(self) -> list[Instance]:
        return [i for r in [*self.routers.values(), *self.stopped] for i in r.instances()]

    def leftover_pids(self) -> set[int]:
        """Processes of any instance (current or retired) that are still running."""
        return {pid for i in self.all_instances() for pid in i.running_pids()}

    def stop(self) -> None:
        with self._lock:
            routers = list(self.routers.values())
            self.routers.clear()
        for router in routers:
            router.stop()
            self.stopped.append(router)
        self.issuer.stop()
