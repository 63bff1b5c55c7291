"""The fake cloud's machinery: one gRPC server, routes read from the client libraries, the
request log, fault injection, long-running operations and IAM policies with etags."""

from __future__ import annotations

import base64
import importlib
import inspect
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
import proto
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# Read-only RPCs (by method-name prefix); everything else counts as mutating in the log.
_READ_PREFIXES = ("Get", "List", "BatchGet", "Access", "TestIamPermissions", "Search",
                  "Lookup", "Query", "Wait")


# --------------------------------------------------------------------------------------------
# Errors a fake handler raises.
class FakeError(Exception):
    """Raised by a handler; becomes a gRPC status with optional google.rpc.ErrorInfo."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str | None = None,
                 domain: str = "googleapis.com", metadata: dict[str, str] | None = None,
                 violations: list[tuple[str, str, str]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.violations = violations or []  # google.rpc.PreconditionFailure (type, subject, why)

    def to_status(self) -> Any:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.reason:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain,
                                                    metadata=self.metadata))
            status.details.append(detail)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.PreconditionFailure(violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=kind, subject=subject, description=why)
                for kind, subject, why in self.violations]))
            status.details.append(detail)
        return rpc_status.to_status(status)


def not_found(name: str) -> FakeError:
    return FakeError(grpc.StatusCode.NOT_FOUND, f"{name} not found.")


def already_exists(name: str) -> FakeError:
    return FakeError(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")


def invalid(message: str) -> FakeError:
    return FakeError(grpc.StatusCode.INVALID_ARGUMENT, message)


def update_fields(target: Any, source: Any, paths: Iterable[str], updatable: set[str]) -> Any:
    """An ``update_mask`` update: copy each masked field from ``source`` to ``target``; a field
    outside ``updatable`` is refused, as the real APIs refuse immutable fields."""
    for path in paths:
        if path not in updatable:
            raise invalid(f"Field {path} cannot be updated.")
        setattr(target, path, getattr(source, path))
    return target


def permission_denied(permission: str, resource: str) -> FakeError:
    # The wording and ErrorInfo of Google's IAM denials.
    return FakeError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        reason="IAM_PERMISSION_DENIED", domain="iam.googleapis.com",
        metadata={"permission": permission, "resource": resource},
    )


def service_disabled(api: str, project: str) -> FakeError:
    return FakeError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{api} API has not been used in project {project} before or it is disabled. Enable it "
        f"by visiting https://console.developers.google.com/apis/api/{api}/overview?project="
        f"{project} then retry.",
        reason="SERVICE_DISABLED", metadata={"service": api, "consumer": f"projects/{project}"},
    )


# --------------------------------------------------------------------------------------------
# Routes: read from each client's own gRPC transport, so paths and message classes are exact.
@dataclass(frozen=True)
class Route:
    path: str  # "/google.cloud.secretmanager.v1.SecretManagerService/CreateSecret"
    request_cls: Any
    response_cls: Any
    # How the client calls it: "unary_unary", or "stream_stream" (e.g. Logging's TailLogEntries).
    kind: str = "unary_unary"

    @property
    def service(self) -> str:
        return self.path.strip("/").split("/")[0]

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[1]


class _RecordingChannel:
    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, Any, str]] = {}

    def _record(kind: str) -> Callable[..., None]:  # type: ignore[misc]
        def record(self: _RecordingChannel, path: str, request_serializer: Any = None,
                   response_deserializer: Any = None, *args: Any, **kwargs: Any) -> None:
            self.seen[path] = (request_serializer, response_deserializer, kind)

        return record

    unary_unary = _record("unary_unary")
    unary_stream = _record("unary_stream")
    stream_unary = _record("stream_unary")
    stream_stream = _record("stream_stream")


_PB2_MODULES = ("google.iam.v1.iam_policy_pb2", "google.longrunning.operations_pb2",
                "google.cloud.location.locations_pb2")


def _message_class(fn: Any, method: str) -> Any:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):
        return owner
    # Plain protobuf messages serialize with Message.SerializeToString, which hides the class.
    for module_name in _PB2_MODULES:
        module = importlib.import_module(module_name)
        cls = getattr(module, f"{method}Request", None)
        if cls is not None:
            return cls
    raise LookupError(f"cannot find the request class of {method}")


def routes_of(client_module: str, client_class: str) -> dict[str, Route]:
    """All unary routes of a generated client, keyed by method name ("CreateSecret")."""
    client_cls = getattr(importlib.import_module(client_module), client_class)
    transport = client_cls.get_transport_class("grpc")(
        channel=grpc.insecure_channel("127.0.0.1:9"))
    recorder = _RecordingChannel()
    transport._logged_channel = recorder
    transport._stubs = {}
    for name, member in inspect.getmembers(type(transport)):
        if isinstance(member, property) and name not in (
                "grpc_channel", "operations_client", "kind", "host"):
            try:
                getattr(transport, name)
            except Exception:
                continue
    transport.grpc_channel.close()
    out = {}
    for path, (ser, deser, kind) in recorder.seen.items():
        method = path.rsplit("/", 1)[1]
        out[method] = Route(path, _message_class(ser, method), _message_class(deser, method),
                            kind)
    return out


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    if isinstance(cls, proto.message.MessageMeta):
        return cls.deserialize
    return cls.FromString


def _serializer(cls: Any) -> Callable[[Any], bytes]:
    if isinstance(cls, proto.message.MessageMeta):
        return cls.serialize
    return lambda message: message.SerializeToString()


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One request the fake received (gRPC or storage HTTP)."""

    service: str  # "google.cloud.secretmanager.v1.SecretManagerService" or "storage"
    method: str  # "CreateSecret", or for storage "POST /storage/v1/b"
    request: Any  # the deserialized message (storage: a StorageRequest)
    code: str = "OK"  # final status: "OK", "NOT_FOUND", "UNAVAILABLE", ...

    @property
    def mutating(self) -> bool:
        if self.service == "storage":
            return not self.method.startswith("GET")
        return not self.method.startswith(_READ_PREFIXES)

    def __repr__(self) -> str:
        return f"<Call {self.service.rsplit('.', 1)[-1]}/{self.method} {self.code}>"


@dataclass
class Fault:
    match: str
    code: grpc.StatusCode
    times: int | None  # None = every call
    message: str
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # The handler runs (the change happens) and only the answer is lost: what a client sees when
    # a connection drops after the server acted. A retried non-idempotent create acts twice.
    lose_response: bool = False


def rpc(permission: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a FakeService method as an RPC handler; ``permission`` is checked against
    ``cloud.deny(...)`` before the handler runs."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__fake_rpc__ = True  # type: ignore[attr-defined]
        fn.__fake_permission__ = permission  # type: ignore[attr-defined]
        return fn

    return mark


class FakeService:
    """Base class of one fake Google service; see tests/fakecloud/__init__.py."""

    # The generated client whose transport defines the routes, as (module, class name).
    client: ClassVar[tuple[str, str]]
    api: ClassVar[str | None] = None  # "secretmanager.googleapis.com" (for API enablement)
    key: ClassVar[str]  # short name: cloud.services["secretmanager"]

    def __init__(self, cloud: FakeCloud):
        self.cloud = cloud
        self.lock = threading.RLock()

    def handlers(self) -> dict[str, Callable[..., Any]]:
        out = {}
        for name, member in inspect.getmembers(self, predicate=callable):
            if getattr(member, "__fake_rpc__", False):
                out[name] = member
        return out

    # helpers for handlers
    def check_project(self, name: str) -> str:
        """The project ID in a resource name; PERMISSION_DENIED for any other project."""
        match = re.match(r"^projects/([^/]+)", name)
        if not match:
            raise invalid(f"Invalid resource name {name!r}.")
        project = match.group(1)
        if project not in (self.cloud.project, self.cloud.project_number, "-"):
            raise FakeError(grpc.StatusCode.PERMISSION_DENIED,
                            f"Permission denied on resource project {project}.")
        return project


class Operations:
    """google.longrunning operations that report done only after ``polls`` GetOperation calls."""

    def __init__(self) -> None:
        self._ops: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self, result: Any = None, *, polls: int = 2, metadata: Any = None,
              on_done: Callable[[], Any] | None = None, error: FakeError | None = None,
              prefix: str = "operations") -> operations_pb2.Operation:
        """Register an operation. ``on_done`` runs when it completes and may return the result."""
        name = f"{prefix}/{uuid.uuid4().hex[:16]}"
        op = operations_pb2.Operation(name=name, done=False)
        if metadata is not None:
            op.metadata.Pack(_pb(metadata))
        with self._lock:
            self._ops[name] = {"op": op, "left": polls, "result": result, "on_done": on_done,
                               "error": error}
            if polls <= 0:
                self._finish(name)
            return _copy(self._ops[name]["op"])

    def _finish(self, name: str) -> None:
        entry = self._ops[name]
        op = entry["op"]
        result = entry["result"]
        if entry["on_done"] is not None:
            produced = entry["on_done"]()
            result = produced if produced is not None else result
        op.done = True
        if entry["error"] is not None:
            err = entry["error"]
            op.error.CopyFrom(status_pb2.Status(code=err.code.value[0], message=err.message))
        elif result is not None:
            op.response.Pack(_pb(result))
        else:
            op.response.Pack(_pb(_empty()))

    def get(self, name: str) -> operations_pb2.Operation:
        with self._lock:
            entry = self._ops.get(name)
            if entry is None:
                raise not_found(name)
            if not entry["op"].done:
                entry["left"] -= 1
                if entry["left"] <= 0:
                    self._finish(name)
            return _copy(entry["op"])

    def pending(self) -> list[str]:
        with self._lock:
            return [n for n, e in self._ops.items() if not e["op"].done]


def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()


def _pb(message: Any) -> Any:
    return type(message).pb(message) if isinstance(message, proto.Message) else message


def _copy(op: operations_pb2.Operation) -> operations_pb2.Operation:
    out = operations_pb2.Operation()
    out.CopyFrom(op)
    return out


class IamPolicies:
    """IAM policies per resource name, with etags: a stale etag on Set gives ABORTED.

    Propagation (``propagation_s``): Google's "Access change propagation" page
    (cloud.google.com/iam/docs/access-change-propagation) says a policy change "typically
    propagate[s] in 2 minutes, but could potentially take 7 minutes or longer": GetIamPolicy
    shows a new binding at once, but the services that enforce it (Cloud Run's front end,
    Secret Manager for a starting revision, Cloud Build's source fetch, Artifact Registry's
    push) ignore it until then. ``members()`` is the stored policy (what GetIamPolicy returns);
    ``effective()`` / ``effective_members()`` is what enforcement sees. A revoked member loses
    access at once (the stricter of the two cases for a deployment tool). Policies that live
    elsewhere (Cloud Storage buckets, in the emulator) report their changes with ``note()``.
    """

    def __init__(self) -> None:
        self._policies: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self.propagation_s = 0.0
        self._granted_at: dict[tuple[str, str, str], float] = {}

    def note(self, resource: str, before: dict[str, set[str]], after: dict[str, set[str]]
             ) -> None:
        """Record a policy change of ``resource``: {role: members} before and after."""
        with self._lock:
            self._record(resource, before, after)

    def _record(self, resource: str, before: dict[str, set[str]],
                after: dict[str, set[str]]) -> None:
        now = time.monotonic()
        for role, members in after.items():
            for member in members - before.get(role, set()):
                self._granted_at[(resource, role, member)] = now
        for role, members in before.items():
            for member in members - after.get(role, set()):
                self._granted_at.pop((resource, role, member), None)

    def effective(self, resource: str, role: str, members: set[str]) -> set[str]:
        """The subset of a policy's ``members`` for ``role`` that enforcement honours now."""
        cutoff = time.monotonic() - self.propagation_s
        with self._lock:
            return {m for m in members
                    if self._granted_at.get((resource, role, m), float("-inf")) <= cutoff}

    def effective_members(self, resource: str, role: str) -> set[str]:
        return self.effective(resource, role, self.members(resource, role))

    def get(self, resource: str) -> Any:
        from google.iam.v1 import policy_pb2

        with self._lock:
            version = self._versions.setdefault(resource, 0)
            policy = policy_pb2.Policy()
            if resource in self._policies:
                policy.CopyFrom(self._policies[resource])
            policy.etag = _etag(version)
            policy.version = policy.version or 1
            return policy

    def set(self, resource: str, policy: Any, validate_member: Callable[[str], None] | None = None
            ) -> Any:
        from google.iam.v1 import policy_pb2

        with self._lock:
            version = self._versions.setdefault(resource, 0)
            if policy.etag and policy.etag != _etag(version):
                raise FakeError(grpc.StatusCode.ABORTED,
                                "There were concurrent policy changes. Please retry the whole "
                                "read-modify-write with exponential backoff.")
            for binding in policy.bindings:
                if not binding.role.startswith(("roles/", "projects/", "organizations/")):
                    raise invalid(f"Role {binding.role} is not supported.")
                for member in binding.members:
                    if validate_member is not None:
                        validate_member(member)
            stored = policy_pb2.Policy()
            stored.CopyFrom(policy)
            stored.etag = b""
            before = _by_role(self._policies.get(resource))
            self._policies[resource] = stored
            self._versions[resource] = version + 1
            stored_out = policy_pb2.Policy()
            stored_out.CopyFrom(stored)
            stored_out.etag = _etag(version + 1)
            self._record(resource, before, _by_role(stored))
            return stored_out

    def members(self, resource: str, role: str) -> set[str]:
        with self._lock:
            policy = self._policies.get(resource)
            if policy is None:
                return set()
            return {m for b in policy.bindings if b.role == role for m in b.members}

    def forget(self, resource: str) -> None:
        with self._lock:
            self._policies.pop(resource, None)
            self._versions.pop(resource, None)
            for key in [k for k in self._granted_at if k[0] == resource]:
                del self._granted_at[key]


def _by_role(policy: Any) -> dict[str, set[str]]:
    if policy is None:
        return {}
    out: dict[str, set[str]] = {}
    for binding in policy.bindings:
        out.setdefault(binding.role, set()).update(binding.members)
    return out


def _etag(version: int) -> bytes:
    return base64.b64encode(f"v{version}".encode())


# --------------------------------------------------------------------------------------------
class FakeCloud:
    """One in-process gRPC server hosting every registered FakeService on 127.0.0.1."""

    def __init__(self, project: str = "test-project", project_number: str = "123456789012",
                 services: Iterable[type[FakeService]] | None = None):
        self.project = project
        self.project_number = project_number
        self.log: list[Call] = []
        self.faults: list[Fault] = []
        self.denied: set[str] = set()
        self.hooks: list[list[Any]] = []  # [match, fn, times_left]
        self.enforce_apis = False
        # Organization policies in effect on the project, by constraint name without the
        # "constraints/" prefix: {"enforce": True} for a boolean constraint, {"allowed_values":
        # [...]} / {"denied_values": [...]} for a list constraint (served by orgpolicy.py, and
        # enforced where noted: DRS in validate_member, run.* in run.py).
        self.org_policies: dict[str, dict[str, Any]] = {}
        self.operations = Operations()
        self.iam = IamPolicies()
        self.services: dict[str, FakeService] = {}
        self.routes: dict[str, Route] = {}
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None
        self.port: int | None = None
        self._counter = itertools.count(1)
        for cls in services if services is not None else discover_services():
            self.add_service(cls)

    # -- lifecycle ---------------------------------------------------------------------------
    def add_service(self, cls: type[FakeService]) -> FakeService:
        service = cls(self)
        self.services[cls.key] = service
        return service

    def start(self) -> FakeCloud:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for service in self.services.values():
            routes = routes_of(*service.client)
            implemented = service.handlers()
            for method, route in routes.items():
                if route.service == "google.longrunning.Operations":
                    impl = self._operation_handler(method)
                    owner: FakeService | None = None
                else:
                    impl = implemented.get(snake(method))
                    owner = service
                self.routes[route.path] = route
                if route.kind == "stream_stream":
                    handler = grpc.stream_stream_rpc_method_handler(
                        self._stream_behaviour(route, impl, owner),
                        request_deserializer=_deserializer(route.request_cls),
                        response_serializer=_serializer(route.response_cls),
                    )
                else:
                    handler = grpc.unary_unary_rpc_method_handler(
                        self._behaviour(route, impl, owner),
                        request_deserializer=_deserializer(route.request_cls),
                        response_serializer=_serializer(route.response_cls),
                    )
                handlers.setdefault(route.service, {})[method] = handler
        for service_name, methods in handlers.items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service_name, methods),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> FakeCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "FakeCloud not started"
        return f"127.0.0.1:{self.port}"

    # -- test controls -----------------------------------------------------------------------
    def fail_next(self, method: str, code: grpc.StatusCode, times: int | None = 1,
                  message: str | None = None, reason: str | None = None,
                  metadata: dict[str, str] | None = None, lose_response: bool = False) -> None:
        """Fail the next ``times`` calls (None: all) whose path ends with ``method``, e.g.
        "google.cloud.secretmanager.v1.SecretManagerService/AddSecretVersion" or just
        "AddSecretVersion". The handler does not run for a failed call, unless
        ``lose_response``: then it runs and only its answer is replaced by the error."""
        with self._lock:
            self.faults.append(Fault(method.lstrip("/"), code, times,
                                     message or f"injected {code.name}", reason,
                                     metadata or {}, lose_response))

    def before(self, method: str, fn: Callable[[Any], None], times: int = 1) -> None:
        """Run ``fn(request)`` just before the handler of the next ``times`` matching calls:
        simulates another client acting concurrently (e.g. creating the same resource)."""
        with self._lock:
            self.hooks.append([method.lstrip("/"), fn, times])

    def _take_hook(self, path: str) -> Callable[[Any], None] | None:
        with self._lock:
            for hook in self.hooks:
                if path.endswith(hook[0]) and hook[2] > 0:
                    hook[2] -= 1
                    return hook[1]
        return None

    def deny(self, permission: str) -> None:
        """Every RPC needing ``permission`` fails with Google's PERMISSION_DENIED wording."""
        self.denied.add(permission)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
            self.denied.clear()

    def calls(self, method: str | None = None, service: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.log
                    if (method is None or c.method == method or c.method.endswith(method))
                    and (service is None or c.service.endswith(service))]

    def mutating_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.log if c.mutating]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def record(self, call: Call) -> None:
        with self._lock:
            self.log.append(call)

    def api_enabled(self, api: str) -> bool:
        usage = self.services.get("serviceusage")
        return usage is None or usage.is_enabled(api)  # type: ignore[attr-defined]

    def validate_member(self, member: str) -> None:
        """IAM rejects bindings to service accounts that do not exist (yet), and public members
        under domain-restricted sharing."""
        kind, _, email = member.partition(":")
        if kind not in ("user", "serviceAccount", "group", "domain", "allUsers",
                        "allAuthenticatedUsers", "principal", "principalSet"):
            raise invalid(f"Invalid member {member!r}.")
        if kind in ("allUsers", "allAuthenticatedUsers") and self.domain_restricted_sharing:
            # Domain-restricted sharing (constraint iam.allowedPolicyMemberDomains): only the
            # organization's customer IDs may appear in a policy; allUsers is refused with this
            # FAILED_PRECONDITION (cloud.google.com/resource-manager/docs/organization-policy/
            # restricting-domains; Cloud Run's "Allowing public (unauthenticated) access" page
            # recommends disabling the invoker IAM check instead).
            raise FakeError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "One or more users named in the policy do not belong to a permitted customer.",
                violations=[("constraints/iam.allowedPolicyMemberDomains",
                             f"orgpolicy:projects/{self.project}?configvalue={member}",
                             f"User {member} is not in permitted organization.")])
        accounts = self.services.get("iam")
        own = email.endswith(f"@{self.project}.iam.gserviceaccount.com")
        if (kind == "serviceAccount" and own and accounts is not None
                and not accounts.exists(email)):  # type: ignore[attr-defined]
            raise invalid(f"Service account {email} does not exist.")

    @property
    def domain_restricted_sharing(self) -> bool:
        return bool(self.org_policies.get("iam.allowedPolicyMemberDomains", {})
                    .get("allowed_values"))

    def constraint_enforced(self, constraint: str) -> bool:
        """A boolean organization-policy constraint in force on the project."""
        return bool(self.org_policies.get(constraint, {}).get("enforce"))

    def next_id(self) -> int:
        return next(self._counter)

    # -- dispatch ----------------------------------------------------------------------------
    def _take_fault(self, path: str, lose_response: bool = False) -> Fault | None:
        """The next fault for ``path`` of the kind asked: one that replaces the handler, or
        (``lose_response``) one that hides the answer of a handler that succeeded."""
        with self._lock:
            for fault in self.faults:
                if (path.endswith(fault.match) and fault.lose_response == lose_response
                        and (fault.times is None or fault.times > 0)):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _behaviour(self, route: Route, impl: Callable[..., Any] | None,
                   owner: FakeService | None) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            call = Call(route.service, route.method, request)
            self.record(call)
            try:
                fault = self._take_fault(route.path)
                if fault is not None:
                    raise FakeError(fault.code, fault.message, fault.reason,
                                    metadata=fault.metadata)
                if impl is None:
                    raise FakeError(grpc.StatusCode.UNIMPLEMENTED,
                                    f"{route.method} is not implemented by the fake cloud")
                if (owner is not None and self.enforce_apis and owner.api
                        and not self.api_enabled(owner.api)):
                    raise service_disabled(owner.api, self.project)
                permission = getattr(impl, "__fake_permission__", None)
                if permission and permission in self.denied:
                    resource = _resource_of(request) or f"projects/{self.project}"
                    raise permission_denied(permission, resource)
                hook = self._take_hook(route.path)
                if hook is not None:
                    hook(request)
                answer = impl(request, context)
                lost = self._take_fault(route.path, lose_response=True)
                if lost is not None:  # the work is done, only the answer is lost
                    raise FakeError(lost.code, lost.message, lost.reason, metadata=lost.metadata)
                return answer
            except FakeError as err:
                call.code = err.code.name
                context.abort_with_status(err.to_status())
            except Exception as exc:  # a bug in a fake: surface it clearly to the client
                call.code = "INTERNAL"
                context.abort(grpc.StatusCode.INTERNAL, f"fake cloud bug: {exc!r}")

        return handle

    def _stream_behaviour(self, route: Route, impl: Callable[..., Any] | None,
                          owner: FakeService | None) -> Callable[[Any, Any], Any]:
        """A bidirectional stream: the first request passes exactly the checks of a unary call
        (log, faults, API enablement, permission, hooks); then ``impl(requests, context)``, a
        generator over the whole request stream (first request included), yields responses."""

        def admit(request: Any, context: Any) -> Any:
            return _ADMITTED

        admit.__fake_permission__ = getattr(impl, "__fake_permission__", None)  # type: ignore[attr-defined]
        check = self._behaviour(route, admit if impl is not None else None, owner)

        def handle(requests: Any, context: grpc.ServicerContext) -> Any:
            first = next(requests, None)
            if first is None:
                return
            check(first, context)  # aborts the call (raises) when a check fails
            assert impl is not None
            try:
                yield from impl(itertools.chain([first], requests), context)
            except FakeError as err:
                context.abort_with_status(err.to_status())

        return handle

    def _operation_handler(self, method: str) -> Callable[..., Any] | None:
        if method == "GetOperation":
            return lambda request, context: self.operations.get(request.name)
        if method == "CancelOperation":
            return lambda request, context: _empty()
        return None


_ADMITTED = object()


def _resource_of(request: Any) -> str | None:
    for attr in ("name", "parent", "resource"):
        value = getattr(request, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def discover_services() -> list[type[FakeService]]:
    """Every FakeService subclass listed in ``SERVICES`` of a module of this package."""
    import pkgutil

    import tests.fakecloud as package

    found: list[type[FakeService]] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in ("core", "storage"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found.extend(getattr(module, "SERVICES", ()))
    return found
