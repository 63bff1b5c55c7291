"""The two files the local stack needs: the Orpheus GGUF and the SNAC decoder in ONNX form.

Given paths are checked and used as they are. Without them, both come from a cache
(``$ORPHEUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/orpheus``, else ``~/.cache/orpheus``): the GGUF is
downloaded once over HTTPS; the decoder is exported once from the public SNAC checkpoint, which
needs torch and snac (``pip install 'orpheus-deploy[export]'``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orpheus_deploy.errors import InputError, OrpheusError
from orpheus_deploy.local.download import Progress, download

# Orpheus 3B fine-tuned (English voices), Q4_K_M: about 2 GB, fast enough for real time on a
# recent laptop's GPU and on many CPUs; the same community quantisation Orpheus-FastAPI uses.
DEFAULT_MODEL_URL = (
    "https://huggingface.co/lex-au/Orpheus-3b-FT-Q4_K_M.gguf/resolve/main/Orpheus-3b-FT-Q4_K_M.gguf"
)
SNAC_CHECKPOINT = "hubertsiuzdak/snac_24khz"
SNAC_FILE = "snac_24khz_decoder.onnx"


@dataclass(frozen=True)
class Assets:
    model: Path
    snac: Path


def cache_dir() -> Path:
    configured = os.environ.get("ORPHEUS_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "orpheus"


def check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"model file not found: {path}", "pass --model PATH/TO/model.gguf")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise InputError(f"{path} is not a GGUF model",
                             "pass the .gguf file (llama.cpp format) of an Orpheus model")
    return path


def ensure_model(model: Path | None, url: str = DEFAULT_MODEL_URL,
                 progress: Progress | None = None) -> Path:
    if model is not None:
        return check_gguf(model)
    dest = cache_dir() / "models" / url.rsplit("/", 1)[-1].split("?", 1)[0]
    return check_gguf(download(url, dest, progress))


def ensure_snac(snac: Path | None, checkpoint: str = SNAC_CHECKPOINT) -> Path:
    """The given decoder, else the cached export, else export ``checkpoint`` once into the cache."""
    if snac is not None:
        if not snac.is_file():
            raise InputError(f"SNAC decoder not found: {snac}",
                             "pass --snac PATH/TO/snac_decoder.onnx")
        return snac
    dest = cache_dir() / SNAC_FILE
    if dest.is_file():
        return dest
    if not all(importlib.util.find_spec(m) for m in ("torch", "snac", "onnx")):
        raise OrpheusError(
            "the SNAC decoder has not been exported yet, and exporting it needs torch and snac",
            "pip install 'orpheus-deploy[export]' (one time), or pass --snac PATH/TO/decoder.onnx",
        )
    from runtime.codec.snac_onnx import companion_paths

    dest.parent.mkdir(parents=True, exist_ok=True)
    # The exporter writes three graphs (whole utterance, and the streaming step graph and the fast
    # start's head graph named after the first); export into a scratch directory and move them
    # all, so that a failed or interrupted export never leaves part of the set in the cache.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".snac-export-") as scratch:
        out = Path(scratch) / dest.name
        result = subprocess.run(
            [sys.executable, "-m", "runtime.codec.export_snac", "--checkpoint", checkpoint,
             "--out", str(out)],
            check=False, capture_output=True, text=True,
        )
        if result.returncode != 0 or not out.is_file():
            lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
            raise OrpheusError(
                f"exporting the SNAC decoder from {checkpoint} failed: {reason}",
                "check the internet connection, or pass --snac PATH/TO/decoder.onnx")
        for made, final in zip(companion_paths(out), companion_paths(dest), strict=True):
            if made.is_file():
                os.replace(made, final)
        os.replace(out, dest)
    return dest
