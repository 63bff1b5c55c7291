"""The CLI's surface: every command registered, fast --help without google.cloud imports."""

from __future__ import annotations

import json
import subprocess
import sys

COMMANDS = ["setup", "upload-model", "build", "deploy-backend", "deploy-frontend", "deploy",
            "test", "say", "plan", "status", "destroy", "local", "init", "config"]


def test_help_does_not_import_google_cloud():
    code = (
        "import sys, contextlib, io\n"
        "from orpheus_deploy.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['--help'])\n"
        "import json\n"
        "print(json.dumps({'rc': rc, 'mods': sorted(m for m in sys.modules"
        " if m.startswith(('google.cloud', 'grpc', 'google.api_core')))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert result["mods"] == []


def test_every_command_is_registered(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    for option in ("--project", "--region", "--yes", "--json", "--verbose"):
        assert option in result.stdout


def test_each_command_has_help(run_cli):
    for command in COMMANDS:
        result = run_cli(command, "--help")
        assert result.exit_code == 0, (command, result.output)


def test_unknown_option_is_a_usage_error(run_cli):
    result = run_cli("setup", "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_global_options_are_accepted_after_the_command(fake_cloud, run_cli) -> None:
    """The hints printed by the tool put --project last; that spelling must work."""
    before = run_cli("config", "--json")
    result = run_cli("config", "--project", "other-project", "--region=europe-west4", "--json")
    assert result.exit_code == 0, result.output
    assert "other-project" in result.stdout and "europe-west4" in result.stdout
    assert "other-project" not in before.stdout
