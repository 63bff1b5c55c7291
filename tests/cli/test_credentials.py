"""Without credentials or emulator variables, cloud commands fail fast with the ADC message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CLOUD_COMMANDS = [
    ["setup"],
    ["setup", "--api-key", "no-creds-key-0123456789abc"],
    ["--project", "some-project-1", "setup"],
    ["--project", "some-project-1", "upload-model", "{gguf}"],
    ["--project", "some-project-1", "build"],
    ["--project", "some-project-1", "deploy-backend"],
    ["--project", "some-project-1", "deploy-frontend"],
    ["--project", "some-project-1", "test"],
    ["--project", "some-project-1", "status"],
    ["--project", "some-project-1", "--yes", "destroy"],
]


def bare_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORPHEUS_", "GOOGLE_", "CLOUDSDK_"))
           and k not in ("STORAGE_EMULATOR_HOST",)}
    env.update({"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9",
                "GCE_METADATA_IP": "127.0.0.1:9"})
    return env


@pytest.mark.parametrize("args", CLOUD_COMMANDS, ids=lambda a: " ".join(a))
def test_no_credentials_message_without_traceback(args, run_cli, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    argv = [a.replace("{gguf}", str(gguf)) for a in args]
    result = run_cli(*argv, subprocess=True, env=bare_env(tmp_path), input="", timeout=60)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    if "not implemented yet" in result.output:
        return  # a command of a later issue, still a stub
    assert result.exit_code == 4, result.output
    assert "gcloud auth application-default login" in result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_needs_no_credentials(run_cli, tmp_path):
    result = run_cli("--project", "some-project-1", "config", subprocess=True,
                     env=bare_env(tmp_path), timeout=60)
    assert result.exit_code == 0, result.output
    assert "orpheus-models-some-project-1" in result.stdout


def _cloud_with(monkeypatch, credentials):
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.gcp import credentials as creds

    monkeypatch.setattr(creds, "default_credentials", lambda: (credentials, "adc-project"))
    return Cloud(Settings(project="my-deploy-project"))


def test_user_credentials_without_a_quota_project_use_the_deployment_project(monkeypatch):
    # Service Usage is a client-based API: with user ADC and no quota project, Google refuses
    # the call ("requires a quota project, which is not set by default").
    from google.oauth2.credentials import Credentials

    cloud = _cloud_with(monkeypatch, Credentials(token="t"))
    assert cloud.credentials().quota_project_id == "my-deploy-project"


def test_a_quota_project_the_user_chose_is_kept(monkeypatch):
    from google.oauth2.credentials import Credentials

    cloud = _cloud_with(monkeypatch, Credentials(token="t", quota_project_id="billing-proj"))
    assert cloud.credentials().quota_project_id == "billing-proj"


def test_service_account_credentials_get_no_quota_project(monkeypatch):
    from google.oauth2 import service_account

    key = service_account.Credentials(
        signer=object(), service_account_email="ci@p.iam.gserviceaccount.com",
        token_uri="https://oauth2.googleapis.com/token")
    cloud = _cloud_with(monkeypatch, key)
    assert cloud.credentials() is key
