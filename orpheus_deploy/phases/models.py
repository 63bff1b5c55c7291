"""The model manifest in `plan`, `status` and `remove-model` (orpheus_deploy/models.py).

- ``plan``: one row per model that the services would start or stop serving, or serve
  differently (file, language, voices, prompt), read from the live services' environment; and the
  GPU memory budget, which refuses the plan when the resident models cannot fit.
- ``status``: the registered models, their sizes, which are resident on the GPU, and the budget.
  Residency comes from the frontend's ``GET /v1/models``, which reports what it last saw the
  backend's router say, without waking the GPU; "unknown" when it has not seen the backend.
- ``remove-model``: drop a further model from the manifest (and its GGUF with --delete-object).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import InputError
from orpheus_deploy.gpu_memory import MemoryBudget, memory_budget
from orpheus_deploy.models import (
    DEFAULT_LANGUAGE,
    DEFAULT_MODEL_NAME,
    DEFAULT_PROMPT,
    STANDARD_VOICES,
    ModelEntry,
    extra_entries,
    manifest,
    parse_frontend_models_env,
    without_model,
)
from orpheus_deploy.resources.base import (
    ABSENT,
    CREATE,
    DELETE,
    UNCHANGED,
    UPDATE,
    Change,
    PhaseReport,
    Result,
)
from orpheus_deploy.resources.cloudrun import container_env

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.state import DeploymentState

# What a status query of the frontend may take (it may be starting from zero, on CPU).
STATUS_TIMEOUT_S = 20.0
UNKNOWN = "unknown"


# -- plan ----------------------------------------------------------------------------------------
def deployed_models(backend: Any, frontend: Any, mount_path: str) -> dict[str, dict[str, Any]]:
    """What the live services serve: name -> object, language, voices, prompt."""
    backend_env, frontend_env = container_env(backend), container_env(frontend)
    default_path = backend_env.get("MODEL_PATH", "")
    if not default_path:
        return {}
    prefix = mount_path.rstrip("/") + "/"
    objects = {DEFAULT_MODEL_NAME: default_path.removeprefix(prefix)}
    try:
        files = json.loads(backend_env.get("MODEL_FILES") or "{}")
        objects.update({str(k): str(v) for k, v in files.items()})
    except (ValueError, AttributeError):
        pass
    described = parse_frontend_models_env(frontend_env.get("ORPHEUS_MODELS", ""))
    out: dict[str, dict[str, Any]] = {}
    for name, obj in objects.items():
        info = described.get(name, {})
        default_voices = list(STANDARD_VOICES) if name == DEFAULT_MODEL_NAME else []
        out[name] = {"object": obj, "language": info.get("language", DEFAULT_LANGUAGE),
                     "voices": list(info.get("voices", default_voices)),
                     "prompt": info.get("prompt", DEFAULT_PROMPT)}
    return out


def _desired(model: ModelEntry) -> dict[str, Any]:
    return {"object": model.object, "language": model.language, "voices": list(model.voices),
            "prompt": model.prompt}


def model_rows(models: list[ModelEntry], deployed: dict[str, dict[str, Any]]) -> list[Result]:
    rows: list[Result] = []
    for model in models:
        live = deployed.get(model.name)
        if live is None:
            rows.append(Result(f"model/{model.name}", CREATE, detail=model.describe()))
            continue
        changes = tuple(Change(k, live.get(k), v) for k, v in _desired(model).items()
                        if live.get(k) != v)
        rows.append(Result(f"model/{model.name}", UPDATE if changes else UNCHANGED, changes,
                           "" if changes else model.describe()))
    wanted = {m.name for m in models}
    for name, live in deployed.items():
        if name not in wanted:
            rows.append(Result(f"model/{name}", DELETE,
                               detail=f"no longer registered ({live['object']})"))
    return rows


def memory_row(budget: MemoryBudget) -> Result:
    return Result(f"gpu-memory/{budget.gpu_type}", UNCHANGED, detail=budget.summary())


def plan_models(settings: Settings, state: DeploymentState, backend: Any, frontend: Any
                ) -> list[Result]:
    """Rows for `plan` (none before a model is uploaded); raises ConfigError (with the numbers)
    when the models cannot fit."""
    models = manifest(settings, state)
    if not models:
        return []
    budget = memory_budget(settings, models)
    budget.check()
    return [*model_rows(models, deployed_models(backend, frontend, settings.names.mount_path)),
            memory_row(budget)]


# -- status --------------------------------------------------------------------------------------
def models_status(settings: Settings, cloud: Cloud, state: DeploymentState,
                  frontend_uri: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The registered models (with ``resident``: loaded, loading, unloaded or unknown) and the
    GPU memory budget."""
    models = manifest(settings, state)
    resident = _resident(settings, cloud, frontend_uri) if models else {}
    return ([{"name": m.name, "default": m.default, "language": m.language,
              "voices": list(m.voices), "object": m.object, "size": m.size,
              "resident": resident.get(m.name, UNKNOWN)} for m in models],
            memory_budget(settings, models).as_dict())


def _resident(settings: Settings, cloud: Cloud, frontend_uri: str | None) -> dict[str, str]:
    """Each model's status as the frontend last saw it from the backend; {} when not known."""
    if not frontend_uri:
        return {}
    import httpx

    from orpheus_deploy.errors import OrpheusError
    from orpheus_deploy.phases.smoke_test import api_key_from_secret

    try:
        key = api_key_from_secret(settings, cloud)
        response = httpx.get(f"{frontend_uri.rstrip('/')}/v1/models",
                             headers={"X-API-Key": key}, timeout=STATUS_TIMEOUT_S)
        cards = response.json().get("data", []) if response.status_code == 200 else []
    except (OrpheusError, httpx.HTTPError, ValueError, AttributeError):
        return {}
    return {str(c.get("id")): str(c.get("status") or UNKNOWN) for c in cards
            if isinstance(c, dict)}


# -- remove-model --------------------------------------------------------------------------------
def remove_model(settings: Settings, cloud: Cloud, name: str, delete_object: bool = False
                 ) -> PhaseReport:
    from orpheus_deploy.gcp import translated
    from orpheus_deploy.state import load_state, save_state

    if name == DEFAULT_MODEL_NAME:
        raise InputError("The default model cannot be removed",
                         "replace it: orpheus upload-model PATH (without --voices)")
    cloud.ensure_credentials()
    names = settings.names
    report = PhaseReport("remove-model")
    state = load_state(cloud, settings)
    registered = {e.name: e for e in extra_entries(state)}
    entry = registered.get(name)
    if entry is None:
        others = ", ".join(sorted(registered)) or "none"
        report.results.append(Result(f"model/{name}", ABSENT,
                                     detail=f"not registered (further models: {others})"))
        return report
    save_state(cloud, settings, without_model(state, name))
    report.results.append(Result(f"model/{name}", DELETE, detail=entry.describe()))
    report.results.append(Result(f"state/{names.state_object}", UPDATE,
                                 detail=f"model {name} removed"))
    if delete_object:
        blob = cloud.storage().bucket(names.bucket).blob(entry.object)
        with translated(f"delete gs://{names.bucket}/{entry.object}", cloud.project):
            existed = blob.exists(retry=cloud.policy.storage_retry())
            if existed:
                blob.delete(retry=cloud.policy.storage_retry())
        report.results.append(Result(f"object/{names.bucket}/{entry.object}",
                                     DELETE if existed else ABSENT))
    report.messages.append("Run `orpheus deploy` to stop serving it (until then the services "
                           "keep it).")
    return report
