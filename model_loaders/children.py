"""Child processes (ffmpeg, model workers) that end when CineReel's process ends, however it ends.

A ``kill -9`` of the parent runs no clean-up code, so the child must learn of it
from the kernel: on Linux the parent-death signal (``prctl(PR_SET_PDEATHSIG)``)
kills it. Where no such signal exists (macOS, Windows) the children still stop
once they read the end of their closed pipes, and a resumed run removes what
they left half-written.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> dict[str, Any]:
    """Keyword arguments for ``subprocess.Popen``/``run`` that end the child with this process."""
    if not sys.platform.startswith("linux"):
        return {}
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return {"preexec_fn": arm}
