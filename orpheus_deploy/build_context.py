"""The Cloud Build source archive: the files ``.gcloudignore`` lets through, as a deterministic tar.

``gcloud builds submit`` reads the same ``.gcloudignore`` (gitignore syntax plus the
``#!include:FILE`` directive), so `orpheus build` and a hand-run ``gcloud builds submit`` upload the
same files. The archive is byte-for-byte reproducible (sorted names, uid/gid 0, no user names,
fixed mtimes, gzip without a timestamp) so that its SHA-256 identifies the build input: when it and
the recorded image digests are unchanged, `deploy --all` skips the 20-minute CUDA build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orpheus_deploy.errors import InputError

IGNORE_FILE = ".gcloudignore"
# What gcloud ignores when a directory has no .gcloudignore (plus whatever .gitignore says).
DEFAULT_IGNORE = [".gcloudignore", ".git", ".gitignore", "#!include:.gitignore"]
# A fixed timestamp (2020-01-01) rather than 0: some tools warn about 1970 mtimes.
_FIXED_MTIME = 1577836800


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    source: str


def _translate(glob: str) -> str:
    """gitignore glob (without anchoring/negation/trailing slash) -> regex body."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i) and (i == 0 or glob[i - 1] == "/"):
            out.append("(?:.*/)?")  # zero or more leading directories
            i += 3
        elif glob.startswith("/**", i) and i + 3 == n:
            out.append("/.*")  # everything inside
            i += 3
        elif glob.startswith("**", i) and i + 2 == n and (i == 0 or glob[i - 1] == "/"):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1:end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_ignore(lines: list[str], base: Path | None = None) -> list[_Rule]:
    """Compile gitignore-style lines; ``#!include:FILE`` pulls in FILE (relative to base)."""
    rules: list[_Rule] = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if line.startswith("#!include:"):
            if base is not None:
                included = base / line[len("#!include:"):].strip()
                if included.is_file():
                    rules.extend(parse_ignore(included.read_text().splitlines(), base))
            continue
        if not line.strip() or line.startswith("#"):
            continue
        # Trailing spaces are ignored unless escaped with a backslash.
        line = re.sub(r"(?<!\\) +$", "", line)
        negate = line.startswith("!")
        # "!x" negates; "\\!x" and "\\#x" are literal names starting with ! or #.
        if negate or line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        body = _translate(line)
        if not anchored:
            body = "(?:.*/)?" + body
        rules.append(_Rule(re.compile(f"^{body}$"), negate, dir_only, raw))
    return rules


def is_ignored(rules: list[_Rule], rel_path: str, is_dir: bool) -> bool:
    """Last matching rule wins, as in git. ``rel_path`` is POSIX and relative to the root."""
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.regex.match(rel_path):
            ignored = not rule.negate
    return ignored


def is_excluded(rules: list[_Rule], rel_path: str, is_dir: bool) -> bool:
    """Whether the path or any directory above it is ignored (what ends up out of the archive)."""
    parts = rel_path.split("/")
    for i in range(1, len(parts)):
        if is_ignored(rules, "/".join(parts[:i]), is_dir=True):
            return True
    return is_ignored(rules, rel_path, is_dir)


def load_rules(root: Path) -> list[_Rule]:
    path = root / IGNORE_FILE
    lines = path.read_text().splitlines() if path.is_file() else DEFAULT_IGNORE
    return parse_ignore(lines, root)


def list_files(root: Path) -> list[str]:
    """Files (POSIX paths relative to root, sorted) that the build context contains.

    An ignored directory is not descended into, so (as in git and gcloud) a ``!`` rule cannot
    re-include a file whose parent directory is excluded.
    """
    rules = load_rules(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if full.is_symlink():  # listed as an entry below, never followed
                filenames.append(d)
            elif not is_ignored(rules, prefix + d, is_dir=True):
                kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            if not is_ignored(rules, prefix + f, is_dir=False):
                found.append(prefix + f)
    return sorted(found)


@dataclass(frozen=True)
class BuildContext:
    data: bytes  # the .tar.gz
    sha256: str
    files: list[str]

    @property
    def size(self) -> int:
        return len(self.data)


def pack(root: Path) -> BuildContext:
    """The deterministic .tar.gz of ``list_files(root)``."""
    files = list_files(root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            path = root / rel
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = _FIXED_MTIME
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
                tar.addfile(info)
                continue
            # Only the executable bit carries meaning in a build; umask noise would change the hash.
            info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            content = path.read_bytes()
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as out:
        out.write(raw.getvalue())
    data = gz.getvalue()
    return BuildContext(data=data, sha256=hashlib.sha256(data).hexdigest(), files=files)


def project_root(candidates: Sequence[Path] | None = None) -> Path:
    """The source tree to build: the checkout this package runs from, else the working directory.

    A wheel installed from an index carries no cloudbuild.yaml; refusing here matters because
    packing whatever directory we are in (site-packages, a home directory) would upload it.
    """
    if candidates is None:
        candidates = [Path(__file__).resolve().parent.parent, Path.cwd()]
    for root in candidates:
        if (root / "cloudbuild.yaml").is_file() and (root / "runtime").is_dir():
            return root
    raise InputError(
        "no source tree to build: cloudbuild.yaml and runtime/ were not found in "
        + " or ".join(str(c) for c in candidates),
        "run `orpheus build` from a checkout of orpheus-deploy (git clone, then pip install .)",
    )
