"""A file that receives a newly generated secret (an API key) instead of stdout.

Where the key must not be printed (--json output, CI logs), the command writes it to a file that
only the user can read. The file is created before anything is changed in the cloud, empty, with
mode 0600 and O_EXCL (an existing file, or a link planted there, is never overwritten or
followed), so that a bad path fails before a key exists that nobody could read.
"""

from __future__ import annotations

import os
from pathlib import Path

from orpheus_deploy.errors import InputError


def is_ci() -> bool:
    """Whether this runs on a CI service (they set CI=true), whose logs many people can read."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class SecretFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InputError(f"{path} already exists", "name a new file: the key is never "
                                                       "written over another file") from None
        except FileNotFoundError:
            raise InputError(f"Cannot create {path}: the directory {path.parent} does not "
                             "exist", "create it first, or name a file in an existing "
                                      "directory") from None
        except OSError as exc:
            raise InputError(f"Cannot create {path}: {exc.strerror}",
                             "name a file in a directory you can write to") from None

    def write(self, value: str) -> None:
        assert self._fd is not None
        with os.fdopen(self._fd, "w", encoding="utf-8") as out:
            self._fd = None
            out.write(value + "\n")

    def discard(self) -> None:
        """Nothing was stored: remove the empty file again."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)
