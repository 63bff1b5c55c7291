"""`orpheus keys create|list|revoke` against the fake Secret Manager."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from google.cloud import run_v2, secretmanager_v1

from runtime.frontend.key_set import KeySet

SECRET = "orpheus-api-key"
SETUP_KEY = "setup-key-0123456789-abcdefXYZ"
State = secretmanager_v1.SecretVersion.State


@pytest.fixture
def cloud(fake_cloud: Any, run_cli: Any) -> Any:
    result = run_cli("setup", "--api-key", SETUP_KEY)
    assert result.exit_code == 0, result.everything
    fake_cloud.clear_log()
    return fake_cloud


def stored(cloud: Any) -> KeySet:
    secrets = cloud.services["secretmanager"]
    return KeySet.parse(secrets.payload(f"projects/{cloud.project_number}/secrets/{SECRET}"
                                        "/versions/latest").decode())


def version_states(cloud: Any) -> list[str]:
    versions = cloud.services["secretmanager"].versions[
        f"projects/{cloud.project_number}/secrets/{SECRET}"]
    return [State(v["version"].state).name for v in versions]


def created_key(result: Any, name: str) -> str:
    assert result.exit_code == 0, result.everything
    [line] = [x for x in result.stdout.splitlines() if x.startswith(f"API key '{name}': ")]
    return line.split(": ", 1)[1]


def test_create_two_keys_list_and_revoke(cloud: Any, run_cli: Any) -> None:
    listed = run_cli("keys", "list")
    assert listed.exit_code == 0, listed.everything
    assert "default" in listed.stdout and f"…{SETUP_KEY[-4:]}" in listed.stdout

    ci = created_key(run_cli("keys", "create", "ci"), "ci")
    web = created_key(run_cli("keys", "create", "web"), "web")
    assert ci.startswith("ok_") and len(ci) > 40 and ci != web
    keys = stored(cloud)
    assert dict(keys.named_keys()) == {"default": SETUP_KEY.encode(), "ci": ci.encode(),
                                       "web": web.encode()}
    # Each change leaves one live version: no older version can bring a key back.
    assert version_states(cloud) == ["DESTROYED", "DESTROYED", "ENABLED"]

    everything = run_cli("keys", "list")
    data = json.loads(run_cli("--json", "keys", "list").stdout)
    assert [(k["name"], k["last4"], k["revoked"]) for k in data["keys"]] == [
        ("default", SETUP_KEY[-4:], None), ("ci", ci[-4:], None), ("web", web[-4:], None)]
    assert all(k["created"] for k in data["keys"])
    for key in (SETUP_KEY, ci, web):  # list shows the last four characters only
        assert key not in everything.everything and key not in json.dumps(data)

    revoked = run_cli("keys", "revoke", "ci")
    assert revoked.exit_code == 0, revoked.everything
    assert "revoked; running frontends refuse it within 30 s" in revoked.stderr
    keys = stored(cloud)
    assert dict(keys.named_keys()) == {"default": SETUP_KEY.encode(), "web": web.encode()}
    tombstone = keys.get("ci")
    assert tombstone is not None and not tombstone.active and tombstone.last4 == ci[-4:]
    assert all(ci.encode() not in p for p in cloud.services["secretmanager"].payloads(SECRET))
    listed = json.loads(run_cli("--json", "keys", "list").stdout)["keys"]
    assert [k["name"] for k in listed if k["revoked"]] == ["ci"]


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("keys", "revoke", "nobody"), 6, "There is no API key named 'nobody' (keys: default)"),
    (("keys", "create", "default"), 9, "A key named 'default' already exists"),
    (("keys", "create", "Bad Name"), 2, "is not a valid key name"),
    (("keys", "revoke", "default"), 2, "'default' is the only API key"),
])
def test_bad_requests_change_nothing(cloud: Any, run_cli: Any, args: tuple[str, ...], code: int,
                                     needle: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == code, result.everything
    assert needle in result.stderr
    assert cloud.mutating_calls() == []
    assert SETUP_KEY not in result.everything


def test_revoking_twice_says_so(cloud: Any, run_cli: Any) -> None:
    created_key(run_cli("keys", "create", "ci"), "ci")
    assert run_cli("keys", "revoke", "ci").exit_code == 0
    cloud.clear_log()
    again = run_cli("keys", "revoke", "ci")
    assert again.exit_code == 6
    assert "The API key 'ci' was already revoked" in again.stderr
    assert cloud.mutating_calls() == []
    # The name can be used again.
    assert created_key(run_cli("keys", "create", "ci"), "ci")


@pytest.mark.parametrize("how", ["json", "ci"])
def test_no_key_on_stdout_in_json_mode_or_on_ci(cloud: Any, run_cli: Any, tmp_path: Path,
                                                 how: str) -> None:
    args = ("--json",) if how == "json" else ()
    env = {"CI": "true"} if how == "ci" else None
    refused = run_cli(*args, "keys", "create", "ci", env=env)
    assert refused.exit_code == 2
    assert "--key-file" in refused.everything
    assert cloud.mutating_calls() == []

    path = tmp_path / "ci.key"
    result = run_cli(*args, "keys", "create", "ci", "--key-file", str(path), env=env)
    assert result.exit_code == 0, result.everything
    key = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dict(stored(cloud).named_keys())["ci"] == key.encode()
    assert key not in result.everything
    if how == "json":
        data = json.loads(result.stdout)
        assert data["name"] == "ci" and data["last4"] == key[-4:]
        assert data["key_file"] == str(path)

    # An existing file is never written over, and nothing is created then.
    cloud.clear_log()
    again = run_cli(*args, "keys", "create", "other", "--key-file", str(path), env=env)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert cloud.mutating_calls() == []
    assert path.read_text().strip() == key


def test_setup_rotate_key_replaces_default_and_keeps_named_keys(cloud: Any, run_cli: Any) -> None:
    ci = created_key(run_cli("keys", "create", "ci"), "ci")
    new_default = "rotated-key-0123456789-abcdef"
    result = run_cli("setup", "--rotate-key", "--api-key", new_default)
    assert result.exit_code == 0, result.everything
    assert dict(stored(cloud).named_keys()) == {"default": new_default.encode(),
                                                "ci": ci.encode()}
    assert all(SETUP_KEY.encode() not in p
               for p in cloud.services["secretmanager"].payloads(SECRET))


def test_a_frontend_deployed_before_named_keys_is_pointed_at_a_redeploy(cloud: Any,
                                                                         run_cli: Any) -> None:
    name = f"projects/{cloud.project}/locations/us-central1/services/orpheus-frontend"
    legacy_env = run_v2.EnvVar(name="API_KEY_SECRET", value_source=run_v2.EnvVarSource(
        secret_key_ref=run_v2.SecretKeySelector(secret=SECRET, version="latest")))
    cloud.services["run"].services[name] = run_v2.Service(
        name=name, template=run_v2.RevisionTemplate(
            containers=[run_v2.Container(env=[legacy_env])]))
    result = run_cli("keys", "create", "ci")
    assert result.exit_code == 0, result.everything
    assert "run `orpheus deploy-frontend` once" in result.stderr
