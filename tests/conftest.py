"""Test-wide setup shared by every suite.

Fixture modules live in tests/fixtures/plugin_*.py (one per area: cloud, gguf, snac, llama, ...)
and are registered here by file name, so that adding an area never means editing this file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("plugin_*.py")
)


def pytest_configure(config: object) -> None:
    # Nothing in the suite may probe the GCE metadata server or read this machine's gcloud state.
    os.environ["NO_GCE_CHECK"] = "true"
    os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
    os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
    sandbox = Path(tempfile.mkdtemp(prefix="orpheus-tests-"))
    os.environ["CLOUDSDK_CONFIG"] = str(sandbox / "gcloud")
    os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    os.environ.pop("GOOGLE_CLOUD_PROJECT", None)
    # CI services set CI=true and the CLI then withholds secrets from its output; the tests that
    # are about that mode set it themselves, every other test runs as on a developer's terminal.
    os.environ.pop("CI", None)
    for name in list(os.environ):
        if name.startswith("ORPHEUS_"):
            del os.environ[name]
