"""Deployment state that must survive between machines (a CI runner, a laptop).

It lives in the cloud, as the JSON object ``_orpheus/state.json`` in the model bucket, so any
machine with access to the project sees the same model manifest (orpheus_deploy/models.py) and
image digests. Unknown keys
written by newer versions are preserved on save.

API::

    state = load_state(cloud, settings)   # empty DeploymentState when absent (or no bucket yet)
    state = dataclasses.replace(state, backend_image_digest="sha256:...")
    save_state(cloud, settings, state)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpheus_deploy.gcp.errors import translated

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud


@dataclass(frozen=True)
class DeploymentState:
    model_object: str | None = None
    model_crc32c: str | None = None
    model_size: int | None = None
    # The default model's GGUF dimensions (orpheus_deploy.gguf_meta.GgufDims), for the GPU
    # memory budget; None when recorded by an older version.
    model_dims: dict[str, Any] | None = None
    # Further models (languages, custom voices): orpheus_deploy.models.ModelEntry.to_state().
    models: list[dict[str, Any]] = field(default_factory=list)
    backend_image_digest: str | None = None
    frontend_image_digest: str | None = None
    updated_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "extra"}
        return json.dumps({**self.extra, **data}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeploymentState:
        data = json.loads(text)
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        if not isinstance(values.get("models", []), list):
            values["models"] = []  # hand-edited into something else: no extra models
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


def load_state(cloud: Cloud, settings: Settings) -> DeploymentState:
    from google.api_core import exceptions

    names = settings.names
    with translated("read the deployment state", names.project):
        blob = cloud.storage().bucket(names.bucket).blob(names.state_object)
        try:
            text = blob.download_as_text(retry=cloud.policy.storage_retry())
        except exceptions.NotFound:
            return DeploymentState()
    try:
        return DeploymentState.from_json(text)
    except (ValueError, TypeError):
        # A corrupt state file must not block deploys; start over and overwrite it on save.
        return DeploymentState()


def save_state(cloud: Cloud, settings: Settings, state: DeploymentState) -> DeploymentState:
    names = settings.names
    state = dataclasses.replace(state, updated_at=time.time())
    with translated("save the deployment state", names.project):
        blob = cloud.storage().bucket(names.bucket).blob(names.state_object)
        blob.upload_from_string(state.to_json(), content_type="application/json",
                                retry=cloud.policy.storage_retry())
    return state
