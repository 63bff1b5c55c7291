"""The desired-state pattern every cloud object of the deployment follows.

A resource is one small class per kind of Google Cloud object::

    class Secret(Resource):
        kind = "secret"
        def name(self) -> str                         # "orpheus-api-key"; key is "secret/<name>"
        def desired(self, settings) -> Spec           # pure function of the settings
        def read(self, cloud) -> Spec | None          # None when the object does not exist
        def diff(self, desired, actual) -> list[Change]   # default: compare dataclass fields
        def apply(self, cloud, spec) -> None          # create or update; idempotent
        def delete(self, cloud) -> bool               # False when it was already absent

``Spec`` is a frozen dataclass (or anything with ``==``); fields set to ``None`` in the desired
spec mean "don't care" and are not diffed. Resources are constructed with the Settings
(``Secret(settings)``) so ``name``/``key`` are known without a cloud.

A phase (``orpheus_deploy.phases``) is an ordered list of resources plus :class:`Action` steps
(work that is not state: upload, build, smoke test). Commands use the helpers below:
``plan_resource`` (diff only), ``reconcile`` (apply what differs), ``status`` (read), and
deleting in reverse order for destroy.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud

CREATE = "create"
UPDATE = "update"
UNCHANGED = "unchanged"
DELETE = "delete"
ABSENT = "absent"


@dataclass(frozen=True)
class Change:
    """One field that differs: ``field`` as the API names it, then actual and desired values."""

    field: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class Result:
    """What a plan or reconcile found/did for one resource."""

    key: str
    action: str  # CREATE | UPDATE | UNCHANGED | DELETE | ABSENT
    changes: tuple[Change, ...] = ()
    detail: str = ""

    @property
    def mutating(self) -> bool:
        return self.action in (CREATE, UPDATE, DELETE)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "action": self.action, "detail": self.detail,
                "changes": [{"field": c.field, "before": _jsonable(c.before),
                             "after": _jsonable(c.after)} for c in self.changes]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def diff_fields(desired: Any, actual: Any) -> list[Change]:
    """Field-by-field diff of two spec dataclasses; ``None`` in desired means don't care."""
    changes: list[Change] = []
    for f in dataclasses.fields(desired):
        want = getattr(desired, f.name)
        have = getattr(actual, f.name, None)
        if want is not None and want != have:
            changes.append(Change(f.name, have, want))
    return changes


class Resource(ABC):
    """Base class; see the module docstring for the protocol."""

    kind: ClassVar[str]

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @abstractmethod
    def desired(self, settings: Settings) -> Any: ...

    @abstractmethod
    def read(self, cloud: Cloud) -> Any | None: ...

    def diff(self, desired: Any, actual: Any | None) -> list[Change]:
        if actual is None:
            return []
        return diff_fields(desired, actual)

    @abstractmethod
    def apply(self, cloud: Cloud, spec: Any) -> None: ...

    @abstractmethod
    def delete(self, cloud: Cloud) -> bool: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}>"


class Action(ABC):
    """A step of a phase that is not desired state (upload, build, smoke test)."""

    key: str

    @abstractmethod
    def run(self, cloud: Cloud) -> Result: ...


def plan_resource(resource: Resource, cloud: Cloud) -> Result:
    """Diff desired against the cloud without changing anything."""
    desired = resource.desired(resource.settings)
    actual = resource.read(cloud)
    if actual is None:
        return Result(resource.key, CREATE)
    changes = resource.diff(desired, actual)
    return Result(resource.key, UPDATE if changes else UNCHANGED, tuple(changes))


def reconcile(resource: Resource, cloud: Cloud) -> Result:
    """Apply the desired spec only where it differs; a second call makes no mutating request."""
    result = plan_resource(resource, cloud)
    if result.action != UNCHANGED:
        resource.apply(cloud, resource.desired(resource.settings))
    return result


def status(resource: Resource, cloud: Cloud) -> Result:
    actual = resource.read(cloud)
    return Result(resource.key, UNCHANGED if actual is not None else ABSENT)


def destroy(resources: list[Resource], cloud: Cloud) -> list[Result]:
    """Delete in reverse order of creation."""
    results = []
    for resource in reversed(resources):
        deleted = resource.delete(cloud)
        results.append(Result(resource.key, DELETE if deleted else ABSENT))
    return results


@dataclass
class PhaseReport:
    """Results of running a phase, rendered by the UI (table or --json)."""

    phase: str
    results: list[Result] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # extra fields of the --json result

    @property
    def changed(self) -> bool:
        return any(r.mutating for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "changed": self.changed,
                "results": [r.as_dict() for r in self.results], "messages": self.messages,
                **self.data}
