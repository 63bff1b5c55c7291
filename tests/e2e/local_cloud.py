"""A local Google Cloud in which ``orpheus deploy --all`` really runs the two apps.

The fake gRPC services, the storage emulator and the Compute REST fake (tests/fakecloud), with
the Cloud Run runner attached (tests/fakecloud/runner.py): a revision that becomes ready is a
process on 127.0.0.1 behind its service's router. The CLI is run in-process with the
environment that points it here (``cli()``), so the same object serves pytest fixtures and
``python -m bench.reliability``.

    with LocalCloud(root, llama_server=..., snac_onnx=...) as lc:
        lc.cli("--json", "deploy", "--all", "--model", str(gguf))
        lc.frontend_url, lc.api_key
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakecloud.compute import FakeCompute
from tests.fakecloud.core import FakeCloud
from tests.fakecloud.runner import CloudRunRunner
from tests.fakecloud.storage import StorageEmulator
from tests.fixtures.plugin_cloud import FAKE_PROJECT, CliResult, cli_env, invoke_cli

REGION = "us-central1"
# The strict cloud's delays: long enough that each wait is really exercised, short for a test.
STRICT_IAM_PROPAGATION_S = 4.0
STRICT_VPC_EGRESS_DELAY_S = 12.0
# Build outputs of the images' earlier stages, by their path in the image (see the Dockerfiles).
LLAMA_SERVER_IN_IMAGE = "/usr/local/bin/llama-server"
SNAC_IN_IMAGE = "/opt/snac/snac_decoder.onnx"


class LocalCloud:
    def __init__(self, root: Path, *, llama_server: Path, snac_onnx: Path,
                 settings: dict[str, str] | None = None, startup_timeout_s: float = 120,
                 strict: bool = False) -> None:
        self.root = root
        self.llama_server = llama_server
        self.snac_onnx = snac_onnx
        self.settings = settings or {}  # extra ORPHEUS_* settings for every CLI run
        self.startup_timeout_s = startup_timeout_s
        self.strict = strict
        self.cloud: Any = None
        self.runner: CloudRunRunner | None = None
        self.env: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalCloud:
        self.cloud = FakeCloud(project=FAKE_PROJECT).start()
        try:
            self.cloud.storage = StorageEmulator(self.cloud).start()
            self.cloud.compute = FakeCompute(self.cloud, regions=[REGION]).start()
            self.runner = CloudRunRunner(
                self.cloud, self.cloud.storage, self.root / "cloudrun",
                artifacts={LLAMA_SERVER_IN_IMAGE: self.llama_server,
                           SNAC_IN_IMAGE: self.snac_onnx},
                startup_timeout_s=self.startup_timeout_s,
            ).attach()
        except BaseException:
            self.stop()
            raise
        self.env = {**cli_env(self.cloud.endpoint, self.cloud.storage.url, self.root / "cli"),
                    "ORPHEUS_REST_ENDPOINT": self.cloud.compute.url, **self.settings}
        if self.strict:
            self.be_strict()
        return self

    def be_strict(self) -> None:
        """Every strictness switch of the fake cloud on, with delays short enough for a test
        (Google's are minutes): what a first deploy meets on a real project that has been
        granted its GPU quota (Cloud Run grants none by default; a project without it is
        tests/deploy/test_doctor.py's and the quota tests' case, where deploy stops early)."""
        import grpc

        cloud = self.cloud
        cloud.enforce_apis = True  # a fresh project: only Service Usage is on
        cloud.iam.propagation_s = STRICT_IAM_PROPAGATION_S
        cloud.org_policies["iam.allowedPolicyMemberDomains"] = {"allowed_values": ["C0abc123"]}
        cloud.services["cloudbuild"].builder_needs_grants = True
        # The first CreateBuild starts a build but its answer never arrives.
        cloud.fail_next("CreateBuild", grpc.StatusCode.UNAVAILABLE, lose_response=True)
        assert self.runner is not None
        self.runner.vpc_egress_delay_s = STRICT_VPC_EGRESS_DELAY_S
        self.env.setdefault("ORPHEUS_IAM_PROPAGATION_S", "60")

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self.cloud is not None:
            for part in ("compute", "storage"):
                if getattr(self.cloud, part, None) is not None:
                    getattr(self.cloud, part).stop()
            self.cloud.stop()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- using it ----------------------------------------------------------------------------
    def cli(self, *args: str, **env: str) -> CliResult:
        """``orpheus *args`` in-process, pointed at this cloud (``env`` adds settings)."""
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(self.root / "cli" / "work")
            return invoke_cli(*args, env={**self.env, **env})

    def cli_json(self, *args: str, **env: str) -> dict[str, Any]:
        result = self.cli("--json", *args, **env)
        assert result.exit_code == 0, result.everything
        return dict(json.loads(result.stdout))

    def service(self, service_id: str) -> Any:
        return self.cloud.services["run"].get(service_id)

    @property
    def frontend_url(self) -> str:
        return str(self.service("orpheus-frontend").uri)

    @property
    def api_key(self) -> str:
        """The "default" key in the newest version of the API key secret, as ``orpheus setup``
        generated it."""
        return self.api_keys()["default"]

    def api_keys(self) -> dict[str, str]:
        """Name -> key of every active key in the newest version of the API key secret."""
        from runtime.frontend.key_set import KeySet

        latest = self.cloud.services["secretmanager"].payloads("orpheus-api-key")[-1]
        return {name: key.decode() for name, key in KeySet.parse(latest.decode()).named_keys()}

    def secret_versions(self) -> list[bytes]:
        return list(self.cloud.services["secretmanager"].payloads("orpheus-api-key"))

    def model_object(self, name: str) -> dict[str, Any] | None:
        return self.cloud.storage.object_metadata(f"orpheus-models-{FAKE_PROJECT}", name)
