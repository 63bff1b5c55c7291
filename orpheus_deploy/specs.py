"""The two Cloud Run service specs, as pure functions of the settings (design sections 3 and 6).

Nothing here talks to a server: ``plan`` prints these, ``deploy`` sends them in one
``update_service(allow_missing=True)`` call each, and unit tests assert them field by field.
``google.cloud.run_v2`` is imported inside the functions so that importing this module (the CLI
does, at start-up) stays cheap and free of Google Cloud imports.

Deliberately *not* set: ``template.revision`` (Cloud Run names revisions itself; a fixed name makes
the second deploy fail), ``traffic`` (the default sends 100% to the latest ready revision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orpheus_deploy.config import FRONTEND_TIMEOUT_MARGIN_S, Settings
from orpheus_deploy.models import DEFAULT_MODEL_NAME, backend_model_files_env, frontend_models_env

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import run_v2

    from orpheus_deploy.models import ModelEntry

# Who made the service, visible in the console and used by `status`/`destroy` to recognise ours.
MANAGED_BY_LABEL = ("managed-by", "orpheus-deploy")

# Startup probe of the backend: llama-server answers GET /health with 503 while the model loads
# and 200 once ready. A multi-GB .gguf read through the Cloud Storage FUSE mount can take minutes,
# so the probe allows 90 x 10 s = 15 min. Cloud Run caps failure_threshold * period_seconds at
# 600 s for CPU-only services and 1800 s with a GPU (cloud.google.com/run/docs/configuring/
# healthchecks); period and initial delay are each capped at 240 s.
STARTUP_PROBE_PERIOD_S = 10
STARTUP_PROBE_TIMEOUT_S = 5
STARTUP_PROBE_FAILURES = 90
# The frontend's app starts in seconds (ONNX session + FastAPI), but with Direct VPC egress a new
# instance "might experience connection establishment delays of a minute or more" (Direct VPC
# egress page, Limitations), so its probe is GET /ready, which passes only once the backend's
# host answers (runtime/frontend/egress.py); 24 x 10 s = 4 minutes covers that delay with room
# (Cloud Run allows up to 600 s for a CPU service).
FRONTEND_PROBE_PATH = "/ready"
FRONTEND_PROBE_FAILURES = 24

GPU_RESOURCE = "nvidia.com/gpu"


def _labels(settings: Settings, component: str) -> dict[str, str]:
    key, value = MANAGED_BY_LABEL
    return {key: value, "orpheus-name": settings.name, "orpheus-component": component}


def _require_digest(image: str) -> str:
    # Deploying by digest makes a revision immutable: a tag can move under a running service, and
    # a re-deploy of the same digest is recognisably a no-op.
    if "@sha256:" not in image:
        raise ValueError(f"image must be pinned by digest (…@sha256:…), got {image!r}")
    return image


def _container(component: str, image: str, port: int, probe_failures: int,
               probe_path: str = "/health", **fields: Any) -> run_v2.Container:
    """What both apps' containers share: the image by digest, the one port Cloud Run sends
    requests to, and an HTTP startup probe there (503 while not ready, 200 when ready)."""
    from google.cloud import run_v2

    return run_v2.Container(
        name=component,
        image=_require_digest(image),
        ports=[run_v2.ContainerPort(name="http1", container_port=port)],
        startup_probe=run_v2.Probe(
            http_get=run_v2.HTTPGetAction(path=probe_path, port=port),
            period_seconds=STARTUP_PROBE_PERIOD_S,
            timeout_seconds=STARTUP_PROBE_TIMEOUT_S,
            failure_threshold=probe_failures,
        ),
        **fields,
    )


def _template(settings: Settings, component: str, service_account: str, min_instances: int,
              max_instances: int, **fields: Any) -> run_v2.RevisionTemplate:
    """What both services' revision templates share: labels, identity, the second-generation
    execution environment, and the scaling bounds."""
    from google.cloud import run_v2

    return run_v2.RevisionTemplate(
        labels=_labels(settings, component),
        service_account=service_account,
        execution_environment=run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
        scaling=run_v2.RevisionScaling(
            min_instance_count=min_instances,
            max_instance_count=max_instances,
        ),
        **fields,
    )


def backend_service_spec(settings: Settings, image: str, model_object: str,
                         models: Sequence[ModelEntry] = ()) -> run_v2.Service:
    """The GPU inference service: internal-only, IAM-protected, scale 0..max, model mounted RO.

    ``models``: the manifest (orpheus_deploy/models.py), default first. With one model the
    environment is exactly the single-model one (MODEL_PATH); with several, the launcher runs
    llama-server's router over MODEL_FILES (names -> objects under MODELS_DIR), keeping at most
    MODELS_MAX on the GPU, and loads MODEL_PATH (the default) at start-up.
    """
    from google.cloud import run_v2
    from google.protobuf import duration_pb2

    n = settings.names
    if not model_object:
        raise ValueError("model_object is required (run `orpheus upload-model` first)")
    env = {
        "MODEL_PATH": f"{n.mount_path}/{model_object}",
        "N_GPU_LAYERS": str(settings.n_gpu_layers),
        "N_CTX": str(settings.n_ctx),
        "N_PARALLEL": str(settings.n_parallel),
    }
    if len(models) > 1:
        if models[0].object != model_object:
            raise ValueError("the manifest's first model must be the default model_object")
        env.update({
            "MODELS_DIR": n.mount_path,
            "MODEL_FILES": backend_model_files_env(models),
            # Above the model count it changes nothing; rendering the effective value keeps a
            # models_max edit from rolling a revision that would behave the same.
            "MODELS_MAX": str(min(settings.models_max, len(models))),
        })
    container = _container(
        "backend", image, n.backend_port, STARTUP_PROBE_FAILURES,
        env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
        resources=run_v2.ResourceRequirements(
            limits={"cpu": settings.backend_cpu, "memory": settings.backend_memory,
                    GPU_RESOURCE: str(settings.gpu_count)},
            # A GPU instance must have CPU always allocated (Cloud Run rejects throttling), and
            # the boost shortens the cold start, which is dominated by reading the model.
            cpu_idle=False,
            startup_cpu_boost=True,
        ),
        volume_mounts=[run_v2.VolumeMount(name=n.volume, mount_path=n.mount_path)],
    )
    template = _template(
        settings, "backend", n.backend_sa_email,
        settings.backend_min_instances, settings.backend_max_instances,
        # llama-server's parallel slots are the real concurrency; more requests would only queue
        # inside one instance while a second instance (a second GPU) is what costs money.
        max_instance_request_concurrency=settings.backend_concurrency,
        timeout=duration_pb2.Duration(seconds=settings.backend_timeout_s),
        node_selector=run_v2.NodeSelector(accelerator=settings.gpu_type),
        gpu_zonal_redundancy_disabled=not settings.gpu_zonal_redundancy,
        containers=[container],
        volumes=[run_v2.Volume(
            name=n.volume,
            gcs=run_v2.GCSVolumeSource(bucket=n.bucket, read_only=True),
        )],
    )
    return run_v2.Service(
        name=n.backend_service_path,
        labels=_labels(settings, "backend"),
        # Only requests that come through a VPC in this project reach it; the frontend's Direct
        # VPC egress is that path. IAM is still checked (invoker_iam_disabled stays False).
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
        invoker_iam_disabled=False,
        template=template,
    )


def frontend_timeout_s(settings: Settings) -> int:
    """Cloud Run's request timeout for the frontend (at least a minute past a backend call's)."""
    return max(settings.api_timeout_s + FRONTEND_TIMEOUT_MARGIN_S, settings.frontend_timeout_s)


# The frontend's fair-use limits (runtime/frontend/limits.py), by the name `orpheus status`
# shows, and the environment variable that carries each.
FRONTEND_LIMIT_VARIABLES = {
    "key_max_streams": "ORPHEUS_KEY_MAX_STREAMS",
    "key_requests_per_minute": "ORPHEUS_KEY_REQUESTS_PER_MINUTE",
    "backend_slots": "ORPHEUS_BACKEND_SLOTS",
    "queue_size": "ORPHEUS_QUEUE_SIZE",
    "queue_timeout_s": "ORPHEUS_QUEUE_TIMEOUT",
    "request_timeout_s": "ORPHEUS_REQUEST_TIMEOUT",
}


def frontend_limits_env(settings: Settings) -> dict[str, str]:
    """The frontend's fair-use settings. Its backend slot budget is the backend's whole
    capacity: llama-server's parallel slots on every instance."""
    values = {
        "key_max_streams": settings.key_max_streams,
        "key_requests_per_minute": settings.key_requests_per_minute,
        "backend_slots": settings.n_parallel * settings.backend_max_instances,
        "queue_size": settings.queue_size,
        "queue_timeout_s": settings.queue_timeout_s,
        "request_timeout_s": frontend_timeout_s(settings),
    }
    return {FRONTEND_LIMIT_VARIABLES[k]: str(v) for k, v in values.items()}


def frontend_service_spec(settings: Settings, image: str, backend_uri: str,
                          models: Sequence[ModelEntry] = ()) -> run_v2.Service:
    """The public CPU API: checks the API key, calls the backend with an ID token via the VPC.

    With several ``models``, ORPHEUS_MODELS tells it which voice belongs to which model.
    """
    from google.cloud import run_v2
    from google.protobuf import duration_pb2

    n = settings.names
    if not backend_uri.startswith("https://") and not backend_uri.startswith("http://"):
        raise ValueError(f"backend_uri must be an http(s) URL, got {backend_uri!r}")
    env = {
        "ORPHEUS_API_URL": f"{backend_uri.rstrip('/')}/v1/completions",
        "ORPHEUS_BACKEND_AUTH": "google-id-token",
        "ORPHEUS_MODEL_NAME": DEFAULT_MODEL_NAME,
        "ORPHEUS_TEMPERATURE": _num(settings.temperature),
        "ORPHEUS_TOP_P": _num(settings.top_p),
        "ORPHEUS_REPETITION_PENALTY": _num(settings.repetition_penalty),
        "ORPHEUS_MAX_TOKENS": str(settings.max_tokens),
        "ORPHEUS_API_TIMEOUT": str(settings.api_timeout_s),
        **frontend_limits_env(settings),
    }
    if len(models) > 1:
        env["ORPHEUS_MODELS"] = frontend_models_env(models)
    # The API keys come from a secret *volume* that follows the secret's latest version, not an
    # environment variable: Cloud Run resolves a secret variable once, when an instance starts,
    # while "reading a volume always fetches the secret value from Secret Manager"
    # (cloud.google.com/run/docs/configuring/services/secrets). The frontend re-reads the file
    # every api_key_refresh_s, so `orpheus keys create/revoke` needs no redeploy.
    env["API_KEY_FILE"] = f"{n.key_mount_path}/{n.key_file}"
    env["ORPHEUS_API_KEY_REFRESH_S"] = _num(settings.api_key_refresh_s)
    container = _container(
        "frontend", image, n.frontend_port, FRONTEND_PROBE_FAILURES, FRONTEND_PROBE_PATH,
        env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
        volume_mounts=[run_v2.VolumeMount(name=n.key_volume, mount_path=n.key_mount_path)],
        resources=run_v2.ResourceRequirements(
            limits={"cpu": settings.frontend_cpu, "memory": settings.frontend_memory},
            # Request-based CPU (the cheap default): audio is decoded while the response streams,
            # which is inside the request, so throttling between requests costs nothing.
            cpu_idle=True,
            startup_cpu_boost=True,
        ),
    )
    template = _template(
        settings, "frontend", n.frontend_sa_email,
        settings.frontend_min_instances, settings.frontend_max_instances,
        max_instance_request_concurrency=settings.frontend_concurrency,
        # Long texts stream for a while; the frontend's own backend timeout is the tighter bound.
        # A WebSocket lasts at most this long too (the frontend closes it just before).
        timeout=duration_pb2.Duration(seconds=frontend_timeout_s(settings)),
        # Direct VPC egress with ALL_TRAFFIC: the call to the backend's *.run.app URL must leave
        # through the VPC to count as internal (PRIVATE_RANGES_ONLY would send it over the
        # internet, where the internal-only backend refuses it). Private Google Access on the
        # subnet (resources/network.py) lets that traffic reach Google APIs without a NAT.
        vpc_access=run_v2.VpcAccess(
            egress=run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC,
            network_interfaces=[run_v2.VpcAccess.NetworkInterface(
                network=settings.network, subnetwork=settings.subnet)],
        ),
        containers=[container],
        volumes=[run_v2.Volume(
            name=n.key_volume,
            secret=run_v2.SecretVolumeSource(
                # The bare name is the documented form for a secret in the service's own
                # project (a full resource path is for another project's secret).
                secret=n.secret,
                items=[run_v2.VersionToPath(path=n.key_file, version="latest")]),
        )],
    )
    return run_v2.Service(
        name=n.frontend_service_path,
        labels=_labels(settings, "frontend"),
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
        # Public by design (the API key is its lock). Cloud Run's "Allowing public
        # (unauthenticated) access" page recommends disabling the invoker IAM check over an
        # allUsers binding, which domain-restricted sharing (iam.allowedPolicyMemberDomains)
        # refuses; the setting also applies at once, where a binding takes minutes.
        invoker_iam_disabled=True,
        template=template,
    )


def _num(value: float) -> str:
    # 0.6 rather than 0.6000000000000001 or "0.60": what a person would type in the console.
    return repr(float(value))
