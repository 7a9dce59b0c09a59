"""Child processes (ffmpeg, model workers) that end when CineReel's process ends, however it ends.

A ``kill -9`` of the parent runs no clean-up code, so the child must learn of it
from the kernel: on Linux the parent-death signal (``prctl(PR_SET_PDEATHSIG)``)
kills it. Where no such signal exists (macOS, Windows) the children still stop
once they read the end of their closed pipes, and a resumed run removes what
they left half-written.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the connection's modules load with the first child that connects back
    import subprocess
    from multiprocessing.connection import Connection, Listener

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


# -- a child that connects back ------------------------------------------------------------------------------
# A child process of the pack's (a model worker, the headless runner's sound branch) talks to its parent over
# an authenticated ``multiprocessing.connection``: the parent listens, hands the address and a one-time key to
# the child through its stdin (not argv, which other users can read), and accepts.


def listen_for_child() -> tuple[Listener, bytes]:
    import secrets
    from multiprocessing.connection import Listener

    authkey = secrets.token_bytes(32)
    return Listener(authkey=authkey), authkey


def send_address(stdin: IO[bytes], listener: Listener, authkey: bytes) -> None:
    stdin.write(json.dumps({"address": listener.address, "authkey": authkey.hex()}).encode() + b"\n")
    stdin.close()


def connect_to_parent(stdin: IO[str]) -> Connection:
    """The child's side: read what ``send_address`` wrote and connect."""
    from multiprocessing.connection import Client

    setup = json.loads(stdin.readline())
    address = setup["address"]
    return Client(tuple(address) if isinstance(address, list) else address, authkey=bytes.fromhex(setup["authkey"]))


def accept_child(listener: Listener, process: subprocess.Popen, timeout_s: float) -> Connection | None:
    """Wait for ``process`` to connect; None (and the process killed) if it exits or times out first. The
    listener is closed either way."""
    import threading

    result: dict[str, Any] = {}

    def accept() -> None:
        try:
            result["conn"] = listener.accept()
        except Exception as exc:  # noqa: BLE001 - the caller reports the missing connection
            result["error"] = exc

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    waited = 0.0
    while thread.is_alive() and waited < timeout_s:
        thread.join(0.1)
        waited += 0.1
        if process.poll() is not None and thread.is_alive():
            break
    try:
        if "conn" in result:
            return result["conn"]
        process.kill()
        process.wait()
        return None
    finally:
        listener.close()
