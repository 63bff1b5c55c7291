"""Settings precedence, sources, derived names, `orpheus init` and `orpheus config`."""

from __future__ import annotations

import json

import pytest

from orpheus_deploy.config import GlobalOptions, load_settings
from orpheus_deploy.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(workdir):
    settings = load_settings(project="proj-123")
    assert settings.region == "us-central1"
    assert settings.gpu_type == "nvidia-l4" and settings.backend_cpu == "4"
    assert settings.backend_memory == "16Gi" and settings.backend_max_instances == 1
    assert settings.sources["region"] == "default"


def test_precedence_flag_over_env_over_file_over_default(workdir, monkeypatch):
    (workdir / "orpheus.toml").write_text(
        'project = "file-project"\nregion = "europe-west4"\nn_parallel = 8\n'
        '[backend]\nbackend_max_instances = 3\n')
    monkeypatch.setenv("ORPHEUS_REGION", "asia-southeast1")
    monkeypatch.setenv("ORPHEUS_TEMPERATURE", "0.5")
    settings = load_settings(GlobalOptions(project="flag-project"))
    assert settings.project == "flag-project" and settings.sources["project"] == "flag"
    assert settings.region == "asia-southeast1"
    assert settings.sources["region"] == "env ORPHEUS_REGION"
    assert settings.n_parallel == 8 and settings.sources["n_parallel"] == "orpheus.toml"
    assert settings.backend_max_instances == 3
    assert settings.temperature == 0.5
    assert settings.max_tokens == 2000 and settings.sources["max_tokens"] == "default"


def test_names_derive_from_name_project_region(workdir):
    names = load_settings(project="proj-123").names
    assert names.backend_service == "orpheus-backend"
    assert names.frontend_service == "orpheus-frontend"
    assert names.bucket == "orpheus-models-proj-123"
    assert names.build_bucket == "orpheus-build-proj-123"
    assert names.secret == "orpheus-api-key"
    assert names.repo == "orpheus-repo"
    assert names.image("backend") == (
        "us-central1-docker.pkg.dev/proj-123/orpheus-repo/orpheus-backend:latest")
    assert names.backend_sa_email == "orpheus-backend@proj-123.iam.gserviceaccount.com"
    assert (names.volume, names.mount_path) == ("model-storage", "/models")
    assert (names.backend_port, names.frontend_port) == (1234, 5005)
    other = load_settings(project="proj-123", name="tts2", region="europe-west4").names
    assert other.bucket == "tts2-models-proj-123" and other.secret == "tts2-api-key"
    assert other.image("frontend", "v2") == (
        "europe-west4-docker.pkg.dev/proj-123/tts2-repo/tts2-frontend:v2")


@pytest.mark.parametrize("content, needle", [
    ("n_parallel = \"lots\"\n", "n_parallel"),
    ("regoin = \"us-central1\"\n", "regoin"),
    ("region = \"Not A Region\"\n", "region"),
    ("backend_min_instances = 2\n", "backend_min_instances"),
    ("name = \"Bad_Name\"\n", "name"),
    ("frontend_timeout_s = 7200\n", "3600"),
    ("key_max_streams = -1\n", "key_max_streams"),
    ("queue_timeout_s = 0\n", "queue_timeout_s"),
    # The frontend's request timeout is api_timeout_s + 60 at least: over Cloud Run's 3600.
    ("api_timeout_s = 3541\n", "use at most 3540"),
    ("temperature = 2.5\n", "temperature"),
    ("top_p = 0\n", "top_p"),
    ("repetition_penalty = 3.5\n", "repetition_penalty"),
    ("max_tokens = 6\n", "max_tokens"),
    ("this is not toml", "TOML"),
])
def test_bad_config_is_a_clear_error(workdir, content, needle):
    (workdir / "orpheus.toml").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(project="proj-123")
    assert needle in str(info.value)


def test_the_frontends_sampling_bounds_are_checked_before_a_deploy(workdir, fake_cloud,
                                                                    run_cli):
    from orpheus_deploy.config import FRONTEND_SAMPLING_BOUNDS, Bounds
    from runtime.frontend.settings import Settings as FrontendSettings

    # The same bounds as the frontend's own settings, which refuse to start outside them.
    for key, bounds in FRONTEND_SAMPLING_BOUNDS.items():
        metadata = FrontendSettings.model_fields[key].metadata  # annotated_types Ge, Gt, Le
        limits = {type(m).__name__.lower(): float(getattr(m, type(m).__name__.lower()))
                  for m in metadata}
        assert set(limits) <= {"ge", "gt", "le"}, (key, limits)
        low_open = "gt" in limits
        assert bounds == Bounds(limits["gt" if low_open else "ge"], limits.get("le"),
                                low_open=low_open), key
    assert str(FRONTEND_SAMPLING_BOUNDS["top_p"]) == "(0, 1]"
    load_settings(project="proj-123", temperature=2.0, top_p=1.0, repetition_penalty=3.0,
                  max_tokens=7)  # the edges themselves are accepted

    refused = run_cli("plan", env={"ORPHEUS_TOP_P": "1.5"})
    assert refused.exit_code == 2
    assert "Invalid top_p 1.5 (from env ORPHEUS_TOP_P) → the frontend accepts (0, 1]" \
        in refused.stderr
    assert fake_cloud.log == []


def test_bad_env_value(workdir, monkeypatch):
    monkeypatch.setenv("ORPHEUS_GPU_ZONAL_REDUNDANCY", "maybe")
    with pytest.raises(ConfigError, match="ORPHEUS_GPU_ZONAL_REDUNDANCY"):
        load_settings(project="proj-123")


def test_missing_project_names_the_fixes(workdir):
    settings = load_settings()
    assert settings.project is None
    with pytest.raises(ConfigError, match="--project"):
        _ = settings.names


def test_init_writes_a_commented_file_that_round_trips(workdir, run_cli):
    result = run_cli("--project", "proj-123", "init")
    assert result.exit_code == 0, result.output
    text = (workdir / "orpheus.toml").read_text()
    assert text.count("\n# ") > 20
    assert tomllib.loads(text) == {"project": "proj-123"}
    # Uncommenting every setting gives valid settings equal to the defaults.
    uncommented = "\n".join(line[2:] if line.startswith("# ") and " = " in line else line
                            for line in text.splitlines()
                            if "model_object" not in line)
    (workdir / "orpheus.toml").write_text(uncommented)
    assert load_settings() == load_settings(project="proj-123")
    again = run_cli("init")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run_cli("init", "--force").exit_code == 0


def test_config_command_shows_values_and_sources(workdir, run_cli, monkeypatch):
    (workdir / "orpheus.toml").write_text('region = "europe-west4"\n')
    monkeypatch.setenv("ORPHEUS_N_CTX", "4096")
    result = run_cli("--json", "--project", "proj-123", "config")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["region"] == {"value": "europe-west4", "source": "orpheus.toml"}
    assert data["settings"]["n_ctx"] == {"value": 4096, "source": "env ORPHEUS_N_CTX"}
    assert data["settings"]["project"]["source"] == "flag"
    assert data["names"]["bucket"] == "orpheus-models-proj-123"
    human = run_cli("--project", "proj-123", "config")
    assert "europe-west4" in human.stdout and "orpheus.toml" in human.stdout


def test_explicit_missing_config_file(workdir, run_cli):
    result = run_cli("--config", str(workdir / "nope.toml"), "config")
    assert result.exit_code == 2
    assert "orpheus init" in result.stderr
