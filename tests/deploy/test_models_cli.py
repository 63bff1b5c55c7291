"""Several models through the CLI against the fake cloud (issue 14): `upload-model --voices`,
`remove-model`, and what `plan`, `deploy` and `status` make of the manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.deploy.test_deploy_cli import deploy_all, recorded_updates

BUCKET = "orpheus-models-test-project"


def ok(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.everything
    return dict(json.loads(result.stdout)) if result.stdout.strip() else {}


def rows(result: Any) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in ok(result)["results"]}


def test_register_plan_deploy_and_remove_a_language(
        cloud: Any, run_cli: Any, tiny_gguf_factory: Callable[..., Path],
        frontend_uri_hook: dict[str, Any]) -> None:
    english = tiny_gguf_factory("Q8_0")
    french = tiny_gguf_factory("Q8_0", code_offset=1000)
    ok(deploy_all(run_cli, english, "--no-test"))

    registered = rows(run_cli("--json", "upload-model", str(french), "--name", "fr.gguf",
                              "--voices", "Pierre, amelie,marie", "--language", "fr",
                              "--model-name", "orpheus-fr"))
    assert registered["model/orpheus-fr"]["action"] == "create"
    assert registered["state/_orpheus/state.json"]["action"] == "update"
    assert cloud.storage.object_metadata(BUCKET, "fr.gguf") is not None
    # The same command again changes nothing at all.
    cloud.clear_log()
    again = rows(run_cli("--json", "upload-model", str(french), "--name", "fr.gguf",
                         "--voices", "pierre,amelie,marie", "--language", "fr",
                         "--model-name", "orpheus-fr"))
    assert again["model/orpheus-fr"]["action"] == "unchanged"
    assert cloud.mutating_calls() == []

    # `plan` names the new model and what it costs on the GPU, before anything is deployed.
    plan = rows(run_cli("--json", "plan", "--no-validate"))
    assert plan["model/orpheus-fr"]["action"] == "create"
    assert "fr, voices pierre, amelie, marie, fr.gguf" in plan["model/orpheus-fr"]["detail"]
    assert plan["model/orpheus"]["action"] == "unchanged"
    assert "2 of 2 models resident at most" in plan["gpu-memory/nvidia-l4"]["detail"]
    assert plan["run-service/orpheus-backend"]["action"] == "update"

    ok(deploy_all(run_cli, None, "--no-test"))
    backend = {e.name: e.value
               for e in recorded_updates(cloud, "orpheus-backend")[-1].template.containers[0].env}
    assert json.loads(backend["MODEL_FILES"]) == {"orpheus": english.name,
                                                  "orpheus-fr": "fr.gguf"}
    assert (backend["MODELS_DIR"], backend["MODELS_MAX"]) == ("/models", "2")
    frontend = {e.name: e.value for e in
                recorded_updates(cloud, "orpheus-frontend")[-1].template.containers[0].env}
    assert [m["voices"] for m in json.loads(frontend["ORPHEUS_MODELS"])][1] == [
        "pierre", "amelie", "marie"]
    plan = rows(run_cli("--json", "plan", "--no-validate"))
    assert {plan[k]["action"] for k in ("model/orpheus", "model/orpheus-fr")} == {"unchanged"}

    # `status`: the models, their sizes, residency (the frontend has not seen the GPU: unknown)
    # and the memory budget.
    status = ok(run_cli("--json", "status"))
    assert [(m["name"], m["language"], m["size"], m["resident"]) for m in status["models"]] == [
        ("orpheus", "en", english.stat().st_size, "unknown"),
        ("orpheus-fr", "fr", french.stat().st_size, "unknown")]
    assert status["memory"]["fits"] is True
    assert sorted(status["memory"]["resident"]) == ["orpheus", "orpheus-fr"]
    human = run_cli("status")
    assert "orpheus-fr" in human.stdout and "GPU memory: 2 of 2 models" in human.stdout

    removed = rows(run_cli("--json", "remove-model", "orpheus-fr", "--delete-object"))
    assert removed["model/orpheus-fr"]["action"] == "delete"
    assert removed[f"object/{BUCKET}/fr.gguf"]["action"] == "delete"
    assert cloud.storage.object_metadata(BUCKET, "fr.gguf") is None
    plan = rows(run_cli("--json", "plan", "--no-validate"))
    assert plan["model/orpheus-fr"]["action"] == "delete"  # still served until the next deploy
    assert rows(run_cli("--json", "remove-model", "orpheus-fr"))["model/orpheus-fr"][
        "action"] == "absent"
    refused = run_cli("remove-model", "orpheus")
    assert refused.exit_code == 2 and "default model cannot be removed" in refused.stderr


def test_conflicts_and_models_over_the_gpu_budget_are_refused_before_any_upload(
        cloud: Any, run_cli: Any, tiny_gguf_factory: Callable[..., Path]) -> None:
    ok(run_cli("setup", "--api-key", "models-key-0123456789-abcdef"))
    ok(run_cli("--json", "upload-model", str(tiny_gguf_factory("Q8_0"))))
    french = tiny_gguf_factory("Q8_0", code_offset=1000)
    cloud.clear_log()

    taken = run_cli("upload-model", str(french), "--voices", "pierre,Tara")
    assert taken.exit_code == 2
    assert "already served by another model: 'tara' (model 'orpheus')" in taken.stderr
    misuse = run_cli("upload-model", str(french), "--language", "fr")
    assert misuse.exit_code == 2 and "add --voices" in misuse.stderr
    # 3 GiB: one tiny model with its KV cache and allowance (1.03 GiB) fits in the 1.5 GiB left
    # after the driver's reserve; two do not.
    small_gpu = run_cli("upload-model", str(french), "--voices", "pierre",
                        env={"ORPHEUS_GPU_MEMORY_GIB": "3"})
    assert small_gpu.exit_code == 2
    assert "do not fit in GPU memory" in small_gpu.stderr and "of 1.50 GiB" in small_gpu.stderr
    assert "models_max = 1" in small_gpu.stderr
    assert cloud.mutating_calls() == []  # nothing uploaded, state untouched

    # Registered with room to spare, then the GPU shrinks: plan and deploy refuse, with numbers.
    ok(run_cli("--json", "upload-model", str(french), "--voices", "pierre"))
    cloud.clear_log()
    plan = run_cli("plan", "--no-validate", env={"ORPHEUS_GPU_MEMORY_GIB": "3"})
    assert plan.exit_code == 2
    assert "2 of 2 models resident at most (models_max 2)" in plan.stderr
    assert "2.06 GiB of 1.50 GiB usable" in plan.stderr
    deploy = run_cli("deploy-backend", env={"ORPHEUS_GPU_MEMORY_GIB": "3"})
    assert deploy.exit_code == 2 and cloud.calls("UpdateService") == []
    # One resident at a time fits: the other is loaded on demand.
    fits = rows(run_cli("--json", "plan", "--no-validate",
                        env={"ORPHEUS_GPU_MEMORY_GIB": "3", "ORPHEUS_MODELS_MAX": "1"}))
    assert "1 of 2 models resident at most" in fits["gpu-memory/nvidia-l4"]["detail"]
