"""Child-process and readiness helpers shared by the launcher, `orpheus local` and the tests.

Standard library only: the backend image has no third-party Python packages.
"""

from __future__ import annotations

import ctypes
import sys
import urllib.error
import urllib.request
from collections.abc import Callable


def death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent dies.

    Linux only. libc is looked up here, in the parent, so that between fork and exec the child
    makes one plain call (no dlopen, which could deadlock on a lock another thread held).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(1, sig)  # 1 = PR_SET_PDEATHSIG

    return set_death_signal


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET url, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None
