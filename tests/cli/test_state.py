"""Deployment state lives in the model bucket, so every machine sees the same state."""

from __future__ import annotations

import dataclasses
import json

from orpheus_deploy.config import load_settings
from orpheus_deploy.gcp import Cloud, OperationPolicy
from orpheus_deploy.state import DeploymentState, load_state, save_state

BUCKET = "orpheus-models-test-project"


def _cloud() -> Cloud:
    # A new Cloud per call: nothing is remembered in the process between "machines".
    return Cloud(load_settings(), OperationPolicy.fast())


def test_state_round_trips_through_the_bucket(fake_cloud, run_cli):
    assert run_cli("setup", "--api-key", "state-key-0123456789-abcdef").exit_code == 0
    settings = load_settings()
    assert load_state(_cloud(), settings) == DeploymentState()

    state = DeploymentState(model_object="m.gguf", model_crc32c="AAAAAA==", model_size=12,
                            backend_image_digest="sha256:" + "a" * 64)
    saved = save_state(_cloud(), settings, state)
    assert saved.updated_at is not None
    loaded = load_state(_cloud(), settings)
    assert loaded.model_object == "m.gguf" and loaded.backend_image_digest.endswith("a" * 64)
    raw = fake_cloud.storage.storage.get_file(BUCKET, "_orpheus/state.json")
    assert json.loads(raw)["model_size"] == 12


def test_unknown_keys_survive_a_save(fake_cloud, run_cli):
    assert run_cli("setup", "--api-key", "state-key-0123456789-abcdef").exit_code == 0
    settings = load_settings()
    _cloud().storage().bucket(BUCKET).blob("_orpheus/state.json").upload_from_string(
        json.dumps({"model_object": "x.gguf", "future_field": {"a": 1}}))
    state = load_state(_cloud(), settings)
    save_state(_cloud(), settings, dataclasses.replace(state, frontend_image_digest="sha256:b"))
    data = json.loads(fake_cloud.storage.storage.get_file(BUCKET, "_orpheus/state.json"))
    assert data["future_field"] == {"a": 1}
    assert data["model_object"] == "x.gguf" and data["frontend_image_digest"] == "sha256:b"


def test_corrupt_state_reads_as_empty(fake_cloud, run_cli):
    assert run_cli("setup", "--api-key", "state-key-0123456789-abcdef").exit_code == 0
    _cloud().storage().bucket(BUCKET).blob("_orpheus/state.json").upload_from_string("{not json")
    assert load_state(_cloud(), load_settings()) == DeploymentState()


def test_no_bucket_reads_as_empty(fake_cloud):
    assert load_state(_cloud(), load_settings()) == DeploymentState()
