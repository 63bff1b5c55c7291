"""A fake Google Cloud that the real client libraries talk to, for tests.

One in-process gRPC server (``FakeCloud``) on 127.0.0.1:<free port> hosts every fake service;
the CLI reaches it through ``ORPHEUS_GRPC_ENDPOINT`` (insecure channel, no credentials). Cloud
Storage is the real ``gcp-storage-emulator`` (``StorageEmulator``) through
``STORAGE_EMULATOR_HOST``. Messages are (de)serialized with the client libraries' own classes,
and each service's routes (paths, request and response classes) are read from the library's
generated gRPC transport, so a fake cannot drift from the wire format.

Adding a service (e.g. Cloud Run v2): create ``tests/fakecloud/run.py`` with::

    from tests.fakecloud.core import FakeService, rpc, not_found, already_exists, invalid

    class RunServicesFake(FakeService):
        client = ("google.cloud.run_v2", "ServicesClient")   # routes come from this client
        key = "run"                                          # cloud.services["run"]
        api = "run.googleapis.com"                           # checked when enforce_apis is on

        @rpc("run.services.get")              # permission, for cloud.deny("run.services.get")
        def get_service(self, request, context):   # snake_case of the RPC name "GetService"
            ...  # return a run_v2.Service, or raise not_found(request.name)

        @rpc("run.services.create")
        def create_service(self, request, context):
            return self.cloud.operations.start(result=service, polls=2)  # long-running

    SERVICES = [RunServicesFake]

Every module of this package with a ``SERVICES`` list is discovered by ``FakeCloud()``; no
registry to edit. RPCs without a handler answer UNIMPLEMENTED (and are logged).
``google.longrunning.Operations/GetOperation`` is served for every service: an operation is not
done until polled ``polls`` times; ``on_done=`` callables apply side effects at completion.
IAM policies with etags: ``self.cloud.iam.get(resource)`` / ``.set(resource, policy,
self.cloud.validate_member)`` (stale etag -> ABORTED; unknown service account -> INVALID_ARGUMENT).

What tests use (see tests/fixtures/plugin_cloud.py for the fixtures):
    cloud.calls(method="CreateSecret")            # log: Call(service, method, request, code)
    cloud.mutating_calls()                        # every non-read call, storage included
    cloud.fail_next("SecretManagerService/AddSecretVersion", grpc.StatusCode.UNAVAILABLE)
    cloud.deny("secretmanager.secrets.create")    # PERMISSION_DENIED naming the permission
    cloud.enforce_apis = True                     # SERVICE_DISABLED until Service Usage enables
    cloud.services["secretmanager"].payloads("orpheus-api-key")
    cloud.storage.fail("PUT", "/upload/", status=503, times=None, after=3)   # HTTP faults

Services that really run: ``runner.CloudRunRunner(cloud, storage, dir, artifacts).attach()``
starts each ready Cloud Run revision natively from its image's Dockerfile (``container.py``)
behind a per-service router on 127.0.0.1 that checks invoker IAM and internal ingress with ID
tokens from a local issuer (``router.py``, ``idtokens.py``); tests/e2e/local_cloud.py puts it
all together for ``orpheus deploy --all``.
"""

from tests.fakecloud.core import (
    Call,
    FakeCloud,
    FakeError,
    FakeService,
    already_exists,
    invalid,
    not_found,
    permission_denied,
    rpc,
)

__all__ = [
    "Call",
    "FakeCloud",
    "FakeError",
    "FakeService",
    "already_exists",
    "invalid",
    "not_found",
    "permission_denied",
    "rpc",
]
