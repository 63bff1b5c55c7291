"""The two Cloud Run service specs, field by field, with no server (design sections 3 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.cloud import run_v2

from orpheus_deploy.config import Settings
from orpheus_deploy.specs import backend_service_spec, frontend_service_spec

PROJECT = "orpheus-test-1"
REPO = f"us-central1-docker.pkg.dev/{PROJECT}/orpheus-repo"
BACKEND_IMAGE = f"{REPO}/orpheus-backend@sha256:{'b' * 64}"
FRONTEND_IMAGE = f"{REPO}/orpheus-frontend@sha256:{'f' * 64}"
BACKEND_URI = "https://orpheus-backend-abc123-uc.a.run.app"


@pytest.fixture
def settings() -> Settings:
    return Settings(project=PROJECT)


def env_of(container: run_v2.Container) -> dict[str, str]:
    return {e.name: e.value for e in container.env if not e.value_source.secret_key_ref.secret}


def test_backend_spec_field_by_field(settings: Settings) -> None:
    svc = backend_service_spec(settings, BACKEND_IMAGE, "Orpheus-3b-FT-Q4_K_M.gguf")
    assert svc.name == f"projects/{PROJECT}/locations/us-central1/services/orpheus-backend"
    assert svc.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    assert svc.invoker_iam_disabled is False
    t = svc.template
    assert t.revision == ""  # Cloud Run names revisions; setting one breaks the second deploy
    assert t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    assert t.node_selector.accelerator == "nvidia-l4"
    assert t.gpu_zonal_redundancy_disabled is True
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (0, 1)
    assert t.max_instance_request_concurrency == 4
    assert t.timeout.total_seconds() == 600
    assert t.service_account == f"orpheus-backend@{PROJECT}.iam.gserviceaccount.com"
    assert t.vpc_access.network_interfaces == []  # only the caller needs the VPC path
    [vol] = t.volumes
    assert (vol.name, vol.gcs.bucket, vol.gcs.read_only) == (
        "model-storage", f"orpheus-models-{PROJECT}", True)
    [c] = t.containers
    assert c.image == BACKEND_IMAGE
    assert [p.container_port for p in c.ports] == [1234]
    assert dict(c.resources.limits) == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert c.resources.cpu_idle is False
    assert c.resources.startup_cpu_boost is True
    assert [(m.name, m.mount_path) for m in c.volume_mounts] == [("model-storage", "/models")]
    assert env_of(c) == {"MODEL_PATH": "/models/Orpheus-3b-FT-Q4_K_M.gguf", "N_GPU_LAYERS": "999",
                         "N_CTX": "16384", "N_PARALLEL": "4"}
    probe = c.startup_probe
    assert probe.http_get.path == "/health"
    assert probe.http_get.port == 1234
    budget = probe.initial_delay_seconds + probe.period_seconds * probe.failure_threshold
    assert 600 <= budget <= 1800  # a multi-GB model load fits; Cloud Run's GPU cap is 1800 s
    assert probe.timeout_seconds <= probe.period_seconds


def test_frontend_spec_field_by_field(settings: Settings) -> None:
    svc = frontend_service_spec(settings, FRONTEND_IMAGE, BACKEND_URI)
    assert svc.name == f"projects/{PROJECT}/locations/us-central1/services/orpheus-frontend"
    assert svc.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    t = svc.template
    assert t.revision == ""
    assert t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    assert t.node_selector.accelerator == ""
    assert t.service_account == f"orpheus-frontend@{PROJECT}.iam.gserviceaccount.com"
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (0, 10)
    assert t.max_instance_request_concurrency == 3
    assert t.vpc_access.egress == run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
    [nic] = t.vpc_access.network_interfaces
    assert (nic.network, nic.subnetwork) == ("default", "default")
    [c] = t.containers
    assert c.image == FRONTEND_IMAGE
    assert [p.container_port for p in c.ports] == [5005]
    assert dict(c.resources.limits) == {"cpu": "1", "memory": "1Gi"}
    assert env_of(c) == {
        "ORPHEUS_API_URL": f"{BACKEND_URI}/v1/completions",
        "ORPHEUS_BACKEND_AUTH": "google-id-token",
        "ORPHEUS_MODEL_NAME": "orpheus",
        "ORPHEUS_TEMPERATURE": "0.6",
        "ORPHEUS_TOP_P": "0.9",
        "ORPHEUS_REPETITION_PENALTY": "1.1",
        "ORPHEUS_MAX_TOKENS": "2000",
        "ORPHEUS_API_TIMEOUT": "300",
        "API_KEY_FILE": "/secrets/orpheus/api-keys.json",
        "ORPHEUS_API_KEY_REFRESH_S": "30.0",
        "ORPHEUS_KEY_MAX_STREAMS": "0",
        "ORPHEUS_KEY_REQUESTS_PER_MINUTE": "0",
        "ORPHEUS_BACKEND_SLOTS": "4",
        "ORPHEUS_QUEUE_SIZE": "16",
        "ORPHEUS_QUEUE_TIMEOUT": "30",
        "ORPHEUS_REQUEST_TIMEOUT": "360",
    }
    # The keys: a secret volume that follows the latest version (re-read, no redeploy), not a
    # secret environment variable (resolved once, when an instance starts).
    assert not [e for e in c.env if e.value_source.secret_key_ref.secret]
    [mount] = c.volume_mounts
    assert (mount.name, mount.mount_path) == ("api-keys", "/secrets/orpheus")
    [volume] = t.volumes
    assert (volume.name, volume.secret.secret) == ("api-keys", "orpheus-api-key")
    assert [(i.path, i.version) for i in volume.secret.items] == [("api-keys.json", "latest")]
    # Not ready until the backend's host answers (Direct VPC egress may take a minute or more
    # to connect on a new instance), and the probe allows several minutes for it.
    assert c.startup_probe.http_get.path == "/ready"
    assert c.startup_probe.period_seconds * c.startup_probe.failure_threshold >= 180
    # Public through the disabled invoker check, not an allUsers binding.
    assert svc.invoker_iam_disabled is True


def test_first_request_deadline_covers_a_cold_gpu_start(settings: Settings) -> None:
    """ORPHEUS_API_TIMEOUT bounds the wait for the backend's first answer, which after idle
    includes a GPU cold start: GPU instance ~5 s (Cloud Run GPU docs), image start ~60 s, the
    model from Cloud Storage ~35 s, into GPU memory ~2 s, one probe period 10 s (README)."""
    cold_start_estimate_s = 5 + 60 + 35 + 2 + 10
    f = frontend_service_spec(settings, FRONTEND_IMAGE, BACKEND_URI)
    deadline = int(env_of(f.template.containers[0])["ORPHEUS_API_TIMEOUT"])
    assert deadline >= 2 * cold_start_estimate_s
    # Cloud Run must not end the request before the frontend's own deadline does.
    assert f.template.timeout.total_seconds() > deadline


def test_settings_flow_into_specs() -> None:
    s = Settings(project=PROJECT, name="tts", region="europe-west4", gpu_zonal_redundancy=True,
                 backend_cpu="8", backend_memory="32Gi", backend_max_instances=2, n_parallel=2,
                 frontend_cpu="2", frontend_memory="2Gi", network="vpc1", subnet="sub1",
                 temperature=0.5)
    b = backend_service_spec(s, BACKEND_IMAGE, "m.gguf")
    assert b.name == f"projects/{PROJECT}/locations/europe-west4/services/tts-backend"
    assert b.template.gpu_zonal_redundancy_disabled is False
    assert b.template.scaling.max_instance_count == 2
    assert dict(b.template.containers[0].resources.limits)["memory"] == "32Gi"
    assert env_of(b.template.containers[0])["N_PARALLEL"] == "2"
    assert b.template.volumes[0].gcs.bucket == f"tts-models-{PROJECT}"
    f = frontend_service_spec(s, FRONTEND_IMAGE, BACKEND_URI + "/")
    nic = f.template.vpc_access.network_interfaces[0]
    assert (nic.network, nic.subnetwork) == ("vpc1", "sub1")
    assert env_of(f.template.containers[0])["ORPHEUS_API_URL"] == f"{BACKEND_URI}/v1/completions"
    assert env_of(f.template.containers[0])["ORPHEUS_TEMPERATURE"] == "0.5"
    assert f.template.service_account.startswith("tts-frontend@")


def test_limits_and_the_request_timeout_flow_into_the_frontend() -> None:
    s = Settings(project=PROJECT, n_parallel=2, backend_max_instances=3, key_max_streams=2,
                 key_requests_per_minute=90, queue_size=5, queue_timeout_s=12,
                 frontend_timeout_s=3600)
    f = frontend_service_spec(s, FRONTEND_IMAGE, BACKEND_URI)
    env = env_of(f.template.containers[0])
    assert (env["ORPHEUS_KEY_MAX_STREAMS"], env["ORPHEUS_KEY_REQUESTS_PER_MINUTE"]) == ("2", "90")
    # The frontend's slot budget is the backend's whole capacity.
    assert env["ORPHEUS_BACKEND_SLOTS"] == "6"
    assert (env["ORPHEUS_QUEUE_SIZE"], env["ORPHEUS_QUEUE_TIMEOUT"]) == ("5", "12")
    # Cloud Run ends requests and WebSockets at the timeout; the frontend knows it.
    assert f.template.timeout.total_seconds() == 3600
    assert env["ORPHEUS_REQUEST_TIMEOUT"] == "3600"
    # Never shorter than a backend call plus a minute.
    short = frontend_service_spec(Settings(project=PROJECT, frontend_timeout_s=60,
                                           api_timeout_s=120), FRONTEND_IMAGE, BACKEND_URI)
    assert short.template.timeout.total_seconds() == 180


@pytest.mark.parametrize("image", ["repo/orpheus-backend:latest", "repo/orpheus-backend"])
def test_images_must_be_pinned_by_digest(settings: Settings, image: str) -> None:
    with pytest.raises(ValueError, match="digest"):
        backend_service_spec(settings, image, "m.gguf")
    with pytest.raises(ValueError, match="digest"):
        frontend_service_spec(settings, image, BACKEND_URI)


def test_backend_needs_a_model(settings: Settings) -> None:
    with pytest.raises(ValueError, match="upload-model"):
        backend_service_spec(settings, BACKEND_IMAGE, "")


def test_specs_are_pure(settings: Settings) -> None:
    a = backend_service_spec(settings, BACKEND_IMAGE, "m.gguf")
    b = backend_service_spec(settings, BACKEND_IMAGE, "m.gguf")
    assert run_v2.Service.serialize(a) == run_v2.Service.serialize(b)


def _two_models():  # -> list[ModelEntry]
    from orpheus_deploy.gguf_meta import ORPHEUS_3B
    from orpheus_deploy.models import ModelEntry

    return [ModelEntry(name="orpheus", object="Orpheus-3b-FT-Q4_K_M.gguf", default=True,
                       size=2_000_000_000, dims=ORPHEUS_3B),
            ModelEntry(name="orpheus-fr", object="lang/fr.gguf", language="fr",
                       voices=("pierre", "amélie"), prompt="{text}", size=2_000_000_000)]


def test_one_model_renders_the_single_model_environment(settings: Settings) -> None:
    [default, _] = _two_models()
    backend = backend_service_spec(settings, BACKEND_IMAGE, default.object, [default])
    frontend = frontend_service_spec(settings, FRONTEND_IMAGE, BACKEND_URI, [default])
    assert backend == backend_service_spec(settings, BACKEND_IMAGE, default.object)
    assert frontend == frontend_service_spec(settings, FRONTEND_IMAGE, BACKEND_URI)


def test_several_models_are_understood_by_both_apps(settings: Settings, tmp_path,
                                                    tiny_snac_onnx) -> None:
    """The specs' MODEL_FILES / ORPHEUS_MODELS are exactly what the launcher and the frontend
    parse: the CLI and the apps agree on names, files, voices and prompts."""
    from runtime.backend.settings import load_settings as backend_settings
    from runtime.frontend.settings import load_settings as frontend_settings

    models = _two_models()
    backend = env_of(backend_service_spec(settings.replace(models_max=5), BACKEND_IMAGE,
                                          models[0].object, models).template.containers[0])
    assert backend["MODELS_DIR"] == "/models" and backend["MODELS_MAX"] == "2"
    launcher, _ = backend_settings(backend)
    assert launcher.router and launcher.default_model == "orpheus"
    assert launcher.model_files == {"orpheus": Path("/models/Orpheus-3b-FT-Q4_K_M.gguf"),
                                    "orpheus-fr": Path("/models/lang/fr.gguf")}

    frontend = env_of(frontend_service_spec(settings, FRONTEND_IMAGE, BACKEND_URI,
                                            models).template.containers[0])
    # The spec mounts the key set where Cloud Run's secret volume puts it; here, a local file.
    key_file = tmp_path / "api-keys.json"
    key_file.write_text("k")
    frontend["API_KEY_FILE"] = str(key_file)
    catalog = frontend_settings(**frontend, SNAC_MODEL_PATH=str(tiny_snac_onnx)).catalog()
    assert catalog.routed and [m.name for m in catalog.models] == ["orpheus", "orpheus-fr"]
    assert catalog.resolve_voice("Amélie")[0].prompt == "{text}"
    assert catalog.resolve_voice("tara")[0].name == "orpheus"
