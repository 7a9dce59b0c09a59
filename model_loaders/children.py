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


def end_child(process: subprocess.Popen, timeout_s: float, terminate: bool = True) -> None:
    """End ``process`` and wait until it is gone: SIGTERM first (unless ``terminate`` is False: it was told
    already), then ``timeout_s`` for its clean-up, then SIGKILL."""
    import signal
    import subprocess

    if process.poll() is not None:
        return
    if terminate:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


class PendingChild:
    """``process``'s connection, accepted from now on in a background thread. A child's ``connect_to_parent``
    waits for the accept (the key is checked both ways), so a parent with other work before it needs the child
    starts this at once: the child goes on with its own work instead of waiting for the parent's."""

    def __init__(self, listener: Listener, process: subprocess.Popen):
        import threading

        self._listener, self._process = listener, process
        self._result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._accept, daemon=True, name="cinereel-accept-child")
        self._thread.start()

    def _accept(self) -> None:
        try:
            self._result["conn"] = self._listener.accept()
        except Exception as exc:  # noqa: BLE001 - ``wait`` reports the missing connection
            self._result["error"] = exc

    def wait(self, timeout_s: float) -> Connection | None:
        """The connection; None (and the process killed) if the process exits or ``timeout_s`` passes first.
        The listener is closed either way."""
        waited = 0.0
        while self._thread.is_alive() and waited < timeout_s:
            self._thread.join(0.1)
            waited += 0.1
            if self._process.poll() is not None and self._thread.is_alive():
                break
        try:
            if "conn" in self._result:
                return self._result["conn"]
            self._process.kill()
            self._process.wait()
            return None
        finally:
            self._listener.close()

    def close(self) -> None:
        """Give up on the connection (its process was ended): the listener, and a connection accepted since."""
        self._listener.close()
        if "conn" in self._result:
            self._result["conn"].close()


def accept_child(listener: Listener, process: subprocess.Popen, timeout_s: float) -> Connection | None:
    """Wait for ``process`` to connect; None (and the process killed) if it exits or times out first. The
    listener is closed either way."""
    return PendingChild(listener, process).wait(timeout_s)
