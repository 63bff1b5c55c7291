"""`orpheus upload-model` against the real storage emulator."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

PROJECT = "test-project"
BUCKET = f"orpheus-models-{PROJECT}"
MiB = 1024 * 1024


def write_gguf(path: Path, payload_bytes: int, seed: int = 0) -> Path:
    """A valid GGUF whose one tensor holds ``payload_bytes`` of pseudo-random-ish data."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("upload-test")
    rng = np.random.default_rng(seed)
    # Random blocks repeated: cheap to make, but chunk order and offsets still matter.
    block = rng.integers(-128, 127, size=MiB, dtype=np.int8)
    data = np.resize(block, payload_bytes)
    data[:: MiB + 7] = np.arange(len(data[:: MiB + 7]), dtype=np.int64).astype(np.int8)
    writer.add_tensor("payload", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def crc32c_b64(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with path.open("rb") as handle:
        while block := handle.read(8 * MiB):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


@pytest.fixture
def bucket(fake_cloud, run_cli):
    result = run_cli("setup", "--api-key", "setup-key-0123456789-abcdef")
    assert result.exit_code == 0, result.output
    fake_cloud.clear_log()
    return BUCKET


def _upload_puts(cloud) -> list:
    return [c for c in cloud.log if c.service == "storage" and c.method.startswith("PUT /upload/")]


def _session_posts(cloud) -> list:
    return [c for c in cloud.log
            if c.service == "storage" and c.method.startswith("POST /upload/")
            and (c.request.query.get("uploadType") or [""])[0] == "resumable"]


def _state(fake_cloud):
    from orpheus_deploy.config import load_settings
    from orpheus_deploy.gcp import Cloud
    from orpheus_deploy.state import load_state

    return load_state(Cloud(load_settings()), load_settings())


def test_200mb_upload_crc_matches_and_second_run_uploads_nothing(
        fake_cloud, bucket, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ORPHEUS_UPLOAD_CHUNK_MB", "32")
    model = write_gguf(tmp_path / "Orpheus-big.gguf", 200 * MiB)
    try:
        size = model.stat().st_size
        expected_crc = crc32c_b64(model)
        result = run_cli("upload-model", str(model))
        assert result.exit_code == 0, result.output
        meta = fake_cloud.storage.object_metadata(bucket, model.name)
        assert meta["crc32c"] == expected_crc
        assert int(meta["size"]) == size
        # The expected checksum travelled with the session, so the server verified it.
        [session] = _session_posts(fake_cloud)
        assert session.request.body["crc32c"] == expected_crc
        sent = sum(c.request.content_length for c in _upload_puts(fake_cloud))
        assert sent == size

        state = _state(fake_cloud)
        assert (state.model_object, state.model_crc32c, state.model_size) == (
            model.name, expected_crc, size)

        fake_cloud.clear_log()
        again = run_cli("upload-model", str(model))
        assert again.exit_code == 0, again.output
        assert fake_cloud.mutating_calls() == []
        assert "Nothing to change" in again.output
    finally:
        model.unlink(missing_ok=True)


def test_interrupted_upload_resumes_where_it_stopped(fake_cloud, bucket, run_cli, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv("ORPHEUS_UPLOAD_CHUNK_MB", "4")
    monkeypatch.setenv("ORPHEUS_RETRY_DEADLINE_S", "0.3")
    model = write_gguf(tmp_path / "model.gguf", 24 * MiB, seed=1)
    size = model.stat().st_size
    # Let the status query and three 4 MiB chunks through, then every upload request fails.
    fake_cloud.storage.fail("PUT", "/upload/", status=503, times=None, after=4)
    first = run_cli("upload-model", str(model))
    assert first.exit_code == 8, first.output
    assert "re-run" in first.stderr and "Traceback" not in first.output
    assert fake_cloud.storage.object_metadata(bucket, model.name) is None
    confirmed = 3 * 4 * MiB

    fake_cloud.storage.clear_faults()
    fake_cloud.clear_log()
    second = run_cli("upload-model", str(model))
    assert second.exit_code == 0, second.output
    assert "Resuming" in second.output
    assert _session_posts(fake_cloud) == []  # the saved session was reused
    data_puts = [c for c in _upload_puts(fake_cloud)
                 if not c.request.content_range.startswith("bytes */")]
    assert data_puts[0].request.content_range.startswith(f"bytes {confirmed}-")
    assert sum(c.request.content_length for c in data_puts) == size - confirmed
    assert fake_cloud.storage.object_metadata(bucket, model.name)["crc32c"] == crc32c_b64(model)
    # The finished session is forgotten.
    assert not list((Path(os.environ["ORPHEUS_STATE_DIR"]) / "uploads").glob("*.json"))


def test_one_transient_failure_mid_upload_is_retried(fake_cloud, bucket, run_cli, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv("ORPHEUS_UPLOAD_CHUNK_MB", "1")
    model = write_gguf(tmp_path / "model.gguf", 3 * MiB, seed=2)
    fake_cloud.storage.fail("PUT", "/upload/", status=503, times=1, after=2)
    result = run_cli("upload-model", str(model), "--name", "custom.gguf")
    assert result.exit_code == 0, result.output
    assert fake_cloud.storage.object_metadata(bucket, "custom.gguf")["crc32c"] == crc32c_b64(model)
    assert _state(fake_cloud).model_object == "custom.gguf"


def test_changed_file_is_uploaded_again(fake_cloud, bucket, run_cli, tmp_path):
    model = write_gguf(tmp_path / "model.gguf", MiB, seed=3)
    assert run_cli("upload-model", str(model)).exit_code == 0
    write_gguf(model, MiB, seed=4)
    fake_cloud.clear_log()
    result = run_cli("upload-model", str(model))
    assert result.exit_code == 0
    assert len(_session_posts(fake_cloud)) == 1
    assert fake_cloud.storage.object_metadata(bucket, model.name)["crc32c"] == crc32c_b64(model)


def test_non_gguf_is_refused_before_any_byte_is_sent(fake_cloud, bucket, run_cli, tmp_path):
    not_model = tmp_path / "model.gguf"
    not_model.write_bytes(b"PK\x03\x04" + os.urandom(4096))
    result = run_cli("upload-model", str(not_model))
    assert result.exit_code == 2
    assert "not a GGUF" in result.stderr
    assert fake_cloud.log == []


def test_missing_bucket_says_run_setup(fake_cloud, run_cli, tmp_path):
    model = write_gguf(tmp_path / "model.gguf", 1024)
    result = run_cli("upload-model", str(model))
    assert result.exit_code == 6
    assert "orpheus setup" in result.stderr
    assert _session_posts(fake_cloud) == []


def test_missing_file_is_a_usage_error(fake_cloud, run_cli, tmp_path):
    result = run_cli("upload-model", str(tmp_path / "nope.gguf"))
    assert result.exit_code == 2
    assert "nope.gguf" in result.output
    assert fake_cloud.log == []


def test_what_is_saved_during_the_upload_is_kept(fake_cloud, bucket, run_cli, tmp_path,
                                                 monkeypatch):
    # The upload takes minutes; a build that ends meanwhile saves its image digests, another
    # upload registers its model. The state saved after the upload keeps both.
    import dataclasses

    from orpheus_deploy.config import load_settings
    from orpheus_deploy.models import ModelEntry, with_model
    from orpheus_deploy.phases import upload_model
    from orpheus_deploy.state import load_state, save_state

    digest = "sha256:" + "b" * 64
    meanwhile = [
        lambda state: dataclasses.replace(state, backend_image_digest=digest),
        lambda state: with_model(state, ModelEntry("de", "de.gguf", "de", ("hans",), size=MiB)),
    ]
    real_upload = upload_model._upload

    def upload_while_another_run_saves(cloud, *args):
        settings = load_settings()
        save_state(cloud, settings, meanwhile.pop(0)(load_state(cloud, settings)))
        real_upload(cloud, *args)

    monkeypatch.setattr(upload_model, "_upload", upload_while_another_run_saves)
    default = write_gguf(tmp_path / "en.gguf", MiB, seed=5)
    assert run_cli("upload-model", str(default)).exit_code == 0
    state = _state(fake_cloud)
    assert (state.model_object, state.backend_image_digest) == ("en.gguf", digest)

    french = write_gguf(tmp_path / "fr.gguf", MiB, seed=6)
    result = run_cli("upload-model", str(french), "--voices", "pierre", "--language", "fr")
    assert result.exit_code == 0, result.everything
    state = _state(fake_cloud)
    assert sorted(m["name"] for m in state.models) == ["de", "fr"]
    assert (state.model_object, state.backend_image_digest) == ("en.gguf", digest)
