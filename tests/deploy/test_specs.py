"""The two Cloud Run service specs, field by field, with no server (design sections 3 and 6)."""

from __future__ import annotations

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
    assert t.volumes == []
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
        "ORPHEUS_API_TIMEOUT": "120",
        "ORPHEUS_KEY_MAX_STREAMS": "0",
        "ORPHEUS_KEY_REQUESTS_PER_MINUTE": "0",
        "ORPHEUS_BACKEND_SLOTS": "4",
        "ORPHEUS_QUEUE_SIZE": "16",
        "ORPHEUS_QUEUE_TIMEOUT": "30",
        "ORPHEUS_REQUEST_TIMEOUT": "300",
    }
    [secret_env] = [e for e in c.env if e.value_source.secret_key_ref.secret]
    assert secret_env.name == "API_KEY_SECRET"
    assert secret_env.value == ""
    ref = secret_env.value_source.secret_key_ref
    assert (ref.secret, ref.version) == ("orpheus-api-key", "latest")
    assert c.startup_probe.http_get.path == "/health"


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
