"""How fast does `orpheus --help` start, next to bare Python and to importing a Cloud client?

Run: .venv/bin/python -m bench.cli_startup [--runs N]
Prints a table, then one JSON object as the final line. Target: `orpheus --help` within 0.25 s
of `python -c pass`. Also times a cloud command failing for lack of credentials (NO_GCE_CHECK
set), which should exit within a second. The commands are interleaved so that machine noise
affects each alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   stdin=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    python = sys.executable
    script = shutil.which("orpheus", path=str(Path(python).parent)) or ""
    orpheus = [script] if script else [python, "-m", "orpheus_deploy.cli"]
    home = tempfile.mkdtemp(prefix="orpheus-bench-")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORPHEUS_", "GOOGLE_")) and k != "STORAGE_EMULATOR_HOST"}
    env.update({"HOME": home, "CLOUDSDK_CONFIG": f"{home}/gcloud", "NO_GCE_CHECK": "true",
                "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"})
    cases = {
        "python_pass": [python, "-c", "pass"],
        "orpheus_help": [*orpheus, "--help"],
        "import_run_v2": [python, "-c", "import google.cloud.run_v2"],
        "setup_no_credentials": [*orpheus, "--project", "bench-project", "setup"],
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for cmd in cases.values():  # warm the OS file cache once
        _time(cmd, env)
    for _ in range(args.runs):
        for name, cmd in cases.items():
            samples[name].append(_time(cmd, env))

    median = {name: statistics.median(values) for name, values in samples.items()}
    overhead = median["orpheus_help"] - median["python_pass"]
    print(f"{'case':<22}{'median s':>10}{'min s':>10}")
    for name, values in samples.items():
        print(f"{name:<22}{median[name]:>10.3f}{min(values):>10.3f}")
    print(f"orpheus --help over bare python: {overhead:+.3f} s (target <= 0.250 s)")
    result = {
        "runs": args.runs,
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "help_overhead_s": round(overhead, 4),
        "help_vs_import_run_v2_ratio": round(median["orpheus_help"] / median["import_run_v2"],
                                             3),
        "target_overhead_s": 0.25,
        "meets_target": overhead <= 0.25,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
