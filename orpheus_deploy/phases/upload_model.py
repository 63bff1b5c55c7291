"""Phase `upload-model`: put the GGUF in the model bucket and record it in the cloud state.

- Without ``--voices`` the file becomes the default (English) model; with ``--voices a,b
  [--language fr]`` it is registered as a further model of the manifest (orpheus_deploy/
  models.py): voice names unique across models, the GPU memory budget checked, all before upload.

- The file must start with the GGUF magic; anything else is refused before any network call.
- CRC32C end to end: computed locally, sent as the object's expected checksum (Cloud Storage
  rejects the upload if the bytes it received differ), and compared again on the result.
- Skipped when the object already exists with the same size and CRC32C.
- Resumable: the session URL is kept under the state dir (``ORPHEUS_STATE_DIR``, default
  ``~/.cache/orpheus``), keyed by file identity and destination, so an interrupted run
  continues from the bytes the server confirmed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orpheus_deploy.errors import EXIT_FAILURE, EXIT_NOT_FOUND, CloudError, InputError
from orpheus_deploy.gcp import Cloud
from orpheus_deploy.gcp.errors import translated
from orpheus_deploy.gpu_memory import memory_budget
from orpheus_deploy.models import (
    DEFAULT_LANGUAGE,
    DEFAULT_MODEL_NAME,
    DEFAULT_PROMPT,
    ModelEntry,
    check_registration,
    extra_entries,
    manifest,
    model_name_from_object,
    validate_language,
    validate_name,
    validate_prompt,
    validate_voices,
    with_model,
)
from orpheus_deploy.resources.base import CREATE, UNCHANGED, UPDATE, PhaseReport, Result
from orpheus_deploy.state import DeploymentState, load_state, save_state

if TYPE_CHECKING:
    from orpheus_deploy.config import Settings
    from orpheus_deploy.gguf_meta import GgufDims
    from orpheus_deploy.ui import UI

GGUF_MAGIC = b"GGUF"
DEFAULT_CHUNK_MB = 16
_READ_BLOCK = 8 * 1024 * 1024


def check_gguf(path: Path) -> None:
    """Refuse anything that is not a GGUF model (by its magic bytes)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a GGUF file") from None
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise InputError(
            f"{path} is not a GGUF model file (it does not start with the GGUF magic bytes)",
            "pass the .gguf file, e.g. Orpheus-3b-FT-Q4_K_M.gguf")


def validate_object_name(name: str) -> str:
    if not name or len(name.encode()) > 1024 or any(c in name for c in "\r\n#[]*?"):
        raise InputError(f"Invalid object name {name!r}", "use a plain file name like "
                                                          "model.gguf")
    if name.startswith(("_orpheus/", ".well-known/")) or name in (".", ".."):
        raise InputError(f"Object name {name!r} is reserved", "choose another --name")
    return name


def file_crc32c(path: Path) -> str:
    """CRC32C of the file, base64 of the big-endian value (the form Cloud Storage reports)."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with path.open("rb") as handle:
        while block := handle.read(_READ_BLOCK):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


def chunk_size() -> int:
    from orpheus_deploy.gcp.resumable import CHUNK_ALIGN

    megabytes = float(os.environ.get("ORPHEUS_UPLOAD_CHUNK_MB") or DEFAULT_CHUNK_MB)
    size = int(megabytes * 1024 * 1024) // CHUNK_ALIGN * CHUNK_ALIGN
    return max(size, CHUNK_ALIGN)


def state_dir() -> Path:
    if os.environ.get("ORPHEUS_STATE_DIR"):
        return Path(os.environ["ORPHEUS_STATE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "orpheus"


class SessionStore:
    """The resumable session URL of one (file, destination) pair, on local disk (mode 0600:
    anyone holding the URL can write to the upload)."""

    def __init__(self, path: Path, bucket: str, object_name: str, size: int, crc32c: str):
        stat = path.stat()
        identity = "|".join([str(path.resolve()), str(size), str(stat.st_mtime_ns), bucket,
                             object_name, crc32c])
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        self.file = state_dir() / "uploads" / f"{digest}.json"
        self.meta = {"bucket": bucket, "object": object_name, "size": size, "crc32c": crc32c,
                     "source": str(path.resolve())}

    def load(self) -> str | None:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        url = data.get("session_url")
        return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None

    def save(self, url: str) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({**self.meta, "session_url": url}, handle)
        os.replace(tmp, self.file)

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)


@dataclass(frozen=True)
class Registration:
    """What `upload-model --voices ...` asks for: a further model with its own voices."""

    voices: str
    language: str | None = None
    model_name: str | None = None
    prompt: str | None = None


def run_upload(settings: Settings, ui: UI, path: Path, object_name: str | None = None,
               cloud: Cloud | None = None, register: Registration | None = None) -> PhaseReport:
    """Upload ``path``; record it as the default model, or (``register``) as a further model
    of the manifest (orpheus_deploy/models.py). Everything that can be refused is refused
    before the first byte is sent."""
    from orpheus_deploy.gguf_meta import read_dims

    check_gguf(path)  # before credentials or network: bad input changes nothing
    object_name = validate_object_name(object_name or path.name)
    dims = read_dims(path)
    size = path.stat().st_size
    entry = _new_entry(register, object_name, size, dims) if register else None
    cloud = cloud or Cloud(settings)
    cloud.ensure_credentials()
    names = settings.names
    with ui.spinner(f"computing CRC32C of {path.name}"):
        crc32c = file_crc32c(path)
    key = f"object/{names.bucket}/{object_name}"
    report = PhaseReport("upload-model")

    client = cloud.storage()
    with translated(f"read bucket {names.bucket}", cloud.project):
        bucket = client.lookup_bucket(names.bucket, retry=cloud.policy.storage_retry())
        if bucket is None:
            raise CloudError(f"Bucket {names.bucket} does not exist",
                             f"run `orpheus setup --project {cloud.project}` first",
                             EXIT_NOT_FOUND, kind="not_found")
        existing = bucket.get_blob(object_name, retry=cloud.policy.storage_retry())

    if entry is not None:
        entry = dataclasses.replace(entry, crc32c=crc32c)

    def recorded(state: DeploymentState) -> DeploymentState:
        """``state`` with this model recorded (a registration checked against it)."""
        if entry is None:
            return dataclasses.replace(state, model_object=object_name, model_crc32c=crc32c,
                                       model_size=size,
                                       model_dims=dims.as_dict() if dims else None)
        check_registration(entry, state, settings.model_object or state.model_object)
        return with_model(state, entry)

    # The GPU must hold the new manifest: refused here rather than after a multi-GB upload.
    memory_budget(settings, manifest(settings, recorded(load_state(cloud, settings)))).check()

    if existing is not None and existing.size == size and existing.crc32c == crc32c:
        report.results.append(Result(key, UNCHANGED,
                                     detail=f"{_human(size)}, crc32c {crc32c} already there"))
    else:
        _upload(cloud, ui, path, names.bucket, object_name, size, crc32c)
        report.results.append(Result(key, UPDATE if existing is not None else CREATE,
                                     detail=f"{_human(size)}, crc32c {crc32c} verified"))

    # Read again: the upload took minutes, and what was saved meanwhile (a build's image
    # digests, another model) must not be lost by saving the state read before it.
    state = load_state(cloud, settings)
    new_state = recorded(state)
    if entry is not None:
        before = next((e for e in extra_entries(state) if e.name == entry.name), None)
        action = CREATE if before is None else (UNCHANGED if before == entry else UPDATE)
        report.results.append(Result(f"model/{entry.name}", action, detail=entry.describe()))
    if new_state != state:
        save_state(cloud, settings, new_state)
        what = f"model {entry.name}" if entry is not None else f"model_object = {object_name}"
        report.results.append(Result(f"state/{names.state_object}", UPDATE, detail=what))
    report.data.update({"bucket": names.bucket, "object": object_name, "size": size,
                        "crc32c": crc32c, "model": entry.name if entry else DEFAULT_MODEL_NAME})
    ui.report(report)
    return report


def _new_entry(register: Registration, object_name: str, size: int,
               dims: GgufDims | None) -> ModelEntry:
    """The manifest entry, validated without any network call."""
    return ModelEntry(
        name=validate_name(register.model_name or model_name_from_object(object_name)),
        object=object_name,
        language=validate_language(register.language or DEFAULT_LANGUAGE),
        voices=validate_voices(register.voices),
        prompt=validate_prompt(register.prompt or DEFAULT_PROMPT),
        size=size, dims=dims)


def _upload(cloud: Cloud, ui: UI, path: Path, bucket_name: str, object_name: str, size: int,
            crc32c: str) -> None:
    from orpheus_deploy.gcp.resumable import ResumableSession, SessionExpired

    client = cloud.storage()
    sessions = SessionStore(path, bucket_name, object_name, size, crc32c)
    url = sessions.load()
    if url:
        ui.info(f"Resuming the interrupted upload of {path.name}")
    resource: dict[str, Any] | None = None
    with ui.byte_progress(f"uploading {path.name}", size) as progress, path.open("rb") as stream:
        task = progress.orpheus_task  # type: ignore[attr-defined]
        for _attempt in range(2):  # a second time only when a saved session has expired
            if url is None:
                url = _new_session(cloud, client, bucket_name, object_name, size, crc32c)
                sessions.save(url)
            # The storage client's own authorized HTTP session: same credentials, same
            # emulator switch, no second transport to configure.
            session = ResumableSession(client._http, url, size, cloud.policy)
            try:
                with translated(f"upload {path.name}", cloud.project):
                    resource = session.upload(
                        stream, chunk_size(),
                        lambda done: progress.update(task, completed=done))
                break
            except SessionExpired:
                sessions.clear()
                url = None
            except CloudError as err:
                if _is_checksum_error(err):
                    sessions.clear()  # a corrupt session must not be resumed
                raise
    sessions.clear()
    if resource is None:
        raise CloudError("Upload failed: the upload session expired twice", "re-run the command",
                         EXIT_FAILURE)
    remote_crc = resource.get("crc32c")
    if remote_crc != crc32c or int(resource.get("size", -1)) != size:
        raise CloudError(
            f"Upload of {path.name} is corrupt: Cloud Storage has crc32c {remote_crc}, "
            f"the file has {crc32c}", "re-run the command to upload it again", EXIT_FAILURE)


def _new_session(cloud: Cloud, client: Any, bucket_name: str, object_name: str, size: int,
                 crc32c: str) -> str:
    blob = client.bucket(bucket_name).blob(object_name)
    blob.crc32c = crc32c  # Cloud Storage verifies the received bytes against this
    with translated(f"start the upload of {object_name}", cloud.project):
        return blob.create_resumable_upload_session(
            content_type="application/octet-stream", size=size, checksum=None,
            retry=cloud.policy.storage_retry())


def _is_checksum_error(err: CloudError) -> bool:
    text = str(err).lower()
    return "crc32c" in text or "checksum" in text


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
