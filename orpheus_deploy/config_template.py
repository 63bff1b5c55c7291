"""The commented orpheus.toml that `orpheus init` writes, generated from the Settings defaults
so that it can never drift from them."""

from __future__ import annotations

from orpheus_deploy.config import SETTING_FIELDS

_SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Deployment", [
        ("name", "prefix of every resource name (services, bucket, secret, repo, accounts)"),
        ("project", "Google Cloud project ID (default: the ADC project)"),
        ("region", "Cloud Run region with L4 GPUs, e.g. us-central1, europe-west4"),
        ("model_object", "GGUF object in the model bucket (default: what upload-model recorded)"),
        ("image_tag", "tag of both images; deploys pin the built digest"),
    ]),
    ("Backend: llama.cpp server on one NVIDIA L4", [
        ("gpu_type", "Cloud Run GPU type"),
        ("gpu_count", "one GPU per instance"),
        ("gpu_zonal_redundancy", "false uses the cheaper non-redundant GPU quota"),
        ("backend_cpu", "an L4 needs at least 4 CPU"),
        ("backend_memory", "an L4 needs at least 16Gi"),
        ("backend_min_instances", "0 scales to zero when idle"),
        ("backend_max_instances", ""),
        ("backend_concurrency", "requests per instance; match n_parallel"),
        ("n_parallel", "llama.cpp parallel slots sharing the GPU"),
        ("n_ctx", "total context across all slots"),
        ("n_gpu_layers", "999 offloads every layer"),
        ("backend_timeout_s", "request timeout, seconds"),
        ("models_max", "most models (languages, custom voices) on the GPU at once"),
        ("gpu_memory_gib", "GPU memory for the budget check, GiB (0: known from gpu_type)"),
    ]),
    ("Frontend: public API on CPU", [
        ("frontend_cpu", ""),
        ("frontend_memory", ""),
        ("frontend_min_instances", ""),
        ("frontend_max_instances", ""),
        ("frontend_concurrency", ""),
        ("api_key_refresh_s", "a key made or revoked with `orpheus keys` works within this"),
        ("frontend_timeout_s", "Cloud Run request timeout: the longest stream or WebSocket, "
                               "1..3600 s"),
        ("network", "VPC for Direct VPC egress to the internal backend"),
        ("subnet", "subnet (Private Google Access is turned on by deploy)"),
    ]),
    ("Fair use: enforced by each frontend instance on its own (README, Limits)", [
        ("key_max_streams", "per API key: streams at once (0: no limit)"),
        ("key_requests_per_minute", "per API key (0: no limit)"),
        ("queue_size", "requests waiting for one of the backend's slots"),
        ("queue_timeout_s", "longest wait for a slot before a 503"),
    ]),
    ("Generation defaults", [
        ("temperature", "0 to 2 (the frontend refuses other values)"),
        ("top_p", "above 0, at most 1"),
        ("repetition_penalty", "above 0, at most 3"),
        ("max_tokens", "at least 7 (one audio frame)"),
        ("api_timeout_s", "frontend timeout for one backend call, seconds; at most 3540 (the "
                          "frontend's request timeout is this + 60)"),
    ]),
]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_template(project: str | None = None, region: str | None = None) -> str:
    given = {"project": project, "region": region}
    lines = ["# orpheus.toml: settings for `orpheus` (flags > ORPHEUS_* env > this file > defaults)"
             ".",
             "# Uncomment a line to change it. `orpheus config` shows the effective values.", ""]
    covered: set[str] = set()
    for title, keys in _SECTIONS:
        lines.append(f"# --- {title} ---")
        for key, comment in keys:
            covered.add(key)
            default = SETTING_FIELDS[key].default
            if comment:
                lines.append(f"# {comment}")
            if given.get(key):
                lines.append(f"{key} = {_toml_value(given[key])}")
            elif default is None:
                lines.append(f'# {key} = ""')
            else:
                lines.append(f"# {key} = {_toml_value(default)}")
        lines.append("")
    missing = set(SETTING_FIELDS) - covered
    assert not missing, f"template lacks {missing}"
    return "\n".join(lines)
