"""The API key never appears in any output, log record or exception text, on any path."""

from __future__ import annotations

import json
import stat

import grpc

KEY = "Sup3rSecretValue-0123456789-xyzXYZ"
ROTATED = "Rot4tedSecretValue-0123456789-qrs"


def _assert_clean(result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.everything
        assert secret[:16] not in result.everything


def test_key_never_printed_or_logged(fake_cloud, run_cli):
    runs = [
        run_cli("-v", "setup", "--api-key", KEY),
        run_cli("-v", "--json", "setup", "--api-key", KEY),
        run_cli("-v", "setup", "--api-key", "-", input=KEY),
        run_cli("-v", "setup", "--rotate-key", "--api-key", ROTATED),
        run_cli("-v", "--json", "setup", "--rotate-key", "--api-key", "-", input=KEY + "\n"),
    ]
    for result in runs:
        assert result.exit_code == 0, result.output
        _assert_clean(result, KEY, ROTATED)
    payloads = fake_cloud.services["secretmanager"].payloads("orpheus-api-key")
    # Each rotation destroys the versions before it: only the newest still holds a key.
    assert payloads == [b"", b"", KEY.encode()]


def test_named_keys_never_printed_or_logged(fake_cloud, run_cli, tmp_path):
    from runtime.frontend.key_set import KeySet

    assert run_cli("setup", "--api-key", KEY).exit_code == 0
    path = tmp_path / "ci.key"
    runs = [run_cli("-v", "--json", "keys", "create", "ci", "--key-file", str(path))]
    ci = path.read_text().strip()
    # A failed create prints nothing of the key it generated, and leaves no file behind.
    fake_cloud.fail_next("AddSecretVersion", grpc.StatusCode.UNAVAILABLE, times=None)
    failed = run_cli("-v", "--json", "keys", "create", "web", "--key-file",
                     str(tmp_path / "web.key"))
    fake_cloud.clear_faults()
    assert failed.exit_code != 0 and not (tmp_path / "web.key").exists()
    runs += [run_cli("-v", "keys", "list"), run_cli("-v", "--json", "keys", "list"),
             run_cli("-v", "keys", "revoke", "ci"), run_cli("-v", "keys", "list")]
    for result in runs:
        assert result.exit_code == 0, result.everything
    for result in [*runs, failed]:
        _assert_clean(result, KEY, ci)
    latest = fake_cloud.services["secretmanager"].payloads("orpheus-api-key")[-1]
    assert [name for name, _ in KeySet.parse(latest.decode()).named_keys()] == ["default"]


def test_key_not_in_error_paths(fake_cloud, run_cli):
    assert run_cli("setup", "--api-key", KEY).exit_code == 0
    for code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.UNAVAILABLE):
        fake_cloud.fail_next("AddSecretVersion", code, times=None)
        result = run_cli("-v", "setup", "--rotate-key", "--api-key", ROTATED)
        assert result.exit_code != 0
        assert "Traceback" in result.stderr  # -v: the full traceback, still without the key
        _assert_clean(result, KEY, ROTATED)
        fake_cloud.clear_faults()


def test_invalid_key_not_echoed(fake_cloud, run_cli):
    bad = "Sup3r Secret With Spaces 0123456789"
    result = run_cli("-v", "setup", "--api-key", bad)
    assert result.exit_code == 2
    assert bad not in result.everything and "Sup3r" not in result.everything


def _generated(fake_cloud) -> str:
    return fake_cloud.services["secretmanager"].payloads("orpheus-api-key")[-1].decode()


def test_a_generated_key_is_not_in_json_output(fake_cloud, run_cli):
    # A --json result is kept and shared (a CI log, an artifact): the key never goes there.
    result = run_cli("-v", "--json", "setup")
    assert result.exit_code == 0, result.output
    key = _generated(fake_cloud)
    _assert_clean(result, key)
    out = json.loads(result.stdout)
    assert "api_key" not in out and out["api_key_secret"] == "orpheus-api-key"
    assert "gcloud secrets versions access latest --secret=orpheus-api-key" in result.stdout


def test_a_generated_key_is_not_printed_in_ci(fake_cloud, run_cli):
    result = run_cli("setup", env={"CI": "true"})
    assert result.exit_code == 0, result.output
    _assert_clean(result, _generated(fake_cloud))
    assert "--api-key-file" in result.stderr


def test_a_generated_key_is_shown_once_on_a_terminal(fake_cloud, run_cli):
    result = run_cli("setup", env={"CI": ""})
    assert result.exit_code == 0, result.output
    assert f"API key: {_generated(fake_cloud)}" in result.stdout


def test_api_key_file_is_written_for_its_owner_only(fake_cloud, run_cli, tmp_path):
    target = tmp_path / "key.txt"
    result = run_cli("--json", "setup", "--api-key-file", str(target), env={"CI": "true"})
    assert result.exit_code == 0, result.output
    key = _generated(fake_cloud)
    _assert_clean(result, key)
    assert target.read_text() == key + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(result.stdout)["api_key_file"] == str(target)


def test_api_key_file_in_a_missing_directory_changes_nothing(fake_cloud, run_cli, tmp_path):
    result = run_cli("setup", "--api-key-file", str(tmp_path / "nope" / "key.txt"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert fake_cloud.mutating_calls() == []


def test_an_existing_api_key_file_or_link_is_refused_and_changes_nothing(fake_cloud, run_cli,
                                                                        tmp_path):
    # Never written over, never followed: a file someone else can read, or a link planted to
    # make the key land elsewhere, is refused before anything is created in the cloud.
    existing = tmp_path / "key.txt"
    existing.write_text("old content, readable by all")
    existing.chmod(0o644)
    elsewhere = tmp_path / "elsewhere.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(elsewhere)
    for path in (existing, link):
        for args in (["setup"], ["deploy", "--all"]):
            result = run_cli("--json", *args, "--api-key-file", str(path), env={"CI": "true"})
            assert result.exit_code == 2, result.everything
            assert f"{path} already exists" in result.stderr
            assert fake_cloud.mutating_calls() == []
    assert existing.read_text() == "old content, readable by all"
    assert not elsewhere.exists() and link.is_symlink()


def test_api_key_file_is_removed_when_no_key_was_generated(fake_cloud, run_cli, tmp_path):
    target = tmp_path / "key.txt"
    fake_cloud.fail_next("CreateSecret", grpc.StatusCode.PERMISSION_DENIED, times=None)
    failed = run_cli("setup", "--api-key-file", str(target))
    assert failed.exit_code != 0 and not target.exists()
    fake_cloud.clear_faults()
    given = run_cli("setup", "--api-key", KEY, "--api-key-file", str(target))
    assert given.exit_code == 0, given.everything
    assert not target.exists()
    _assert_clean(given, KEY)
