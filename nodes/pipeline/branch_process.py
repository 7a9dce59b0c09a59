"""A side branch in a process of its own: the headless runner's sound stages beside its picture stages.

In a thread, the sound stages' Python (loudness, true peak, resampling) and the picture stages' Python take
turns on one interpreter lock, and each slows the other; in a process they use the second core. The process
starts before the director, so it imports its libraries (scipy.signal alone takes most of a second) while the
director writes the plan, then waits for the REEL.

The parent starts ``child_main.py`` with its own interpreter; the child imports the pack by its folder path
under the parent's package name (as a Ray worker does) and connects back over an authenticated
``multiprocessing.connection`` (``children.listen_for_child``, as a model worker does), so what crosses it (the
function to run, the REEL, an exception) refers to the same modules on both sides. The child works under the
parent's run lock (``rundir.parents_run_lock``): the parent holds it for the whole reel. It knows the model
families the pack registers and those of ``CINEREEL_WORKER_PLUGINS``; a family registered only in the parent's
process cannot run there (``knows``), and the runner keeps the thread for it.

Messages, child to parent: ``("ready", families)``, then ``("stage", name, seconds)`` as stages end, and
``("done", result)`` or ``("failed", exception)``; parent to child: ``("run", fn, args, run_root)`` or
``("close",)``. Ctrl-C reaches both processes. ``stop`` ends a child that has not sent its outcome with
SIGTERM (the parent's own SIGTERM, or an error before the child's work is done that the caller does not want
to wait for), which it takes like Ctrl-C: its atomic writes remove their temporary files. The child dies
with its parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ...model_loaders.children import PendingChild, die_with_parent, end_child, listen_for_child, send_address

PACKAGE = __package__.rsplit(".", 2)[0]  # the pack's name in this process (ComfyUI names it after its folder)
PACK_ROOT = Path(__file__).resolve().parents[2]
CHILD_SCRIPT = Path(__file__).resolve().parent / "child_main.py"
STOP_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 60.0


class BranchFailed(RuntimeError):
    """The branch's process ended without a result, or its error could not be sent back as it was."""


class BranchProcess:
    """One side branch's process: started early, given one function to run, then ended."""

    def __init__(self, name: str, warm_up: tuple[str, ...] = ()):
        self.name = name
        listener, authkey = listen_for_child()
        try:
            self._process = subprocess.Popen(
                [sys.executable, str(CHILD_SCRIPT), PACKAGE, str(PACK_ROOT), "branch", name, *warm_up],
                stdin=subprocess.PIPE, **die_with_parent())
        except BaseException:
            listener.close()
            raise
        assert self._process.stdin is not None
        send_address(self._process.stdin, listener, authkey)
        self._pending: PendingChild | None = PendingChild(listener, self._process)  # so the child never waits
        self._conn: Connection | None = None
        self._families: set[str] | None = None
        self._started = False
        self._outcome: tuple[str, Any] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self._process.pid

    def knows(self, families: set[str]) -> bool:
        """Whether the child can build models of every one of ``families`` (it reports them once it has
        imported the pack and the plugins, before its warm-up imports). False when it could not start."""
        known = self._ready()
        return known is not None and families <= known

    def run(self, fn: Callable[..., Any], args: tuple, run_root: Path,
            on_stage: Callable[[str, float], None] | None) -> None:
        """Start ``fn(*args, on_stage)`` in the child, under the parent's lock on ``run_root``; stage
        messages reach ``on_stage`` from a reader thread. ``result`` waits for it."""
        if self._ready() is None:
            raise BranchFailed(f"the {self.name} process ended before it started (exit code "
                               f"{self._process.wait()})")
        assert self._conn is not None
        self._conn.send(("run", fn, args, str(run_root)))
        self._reader = threading.Thread(target=self._read, args=(on_stage,), name=f"cinereel-{self.name}-reader",
                                        daemon=True)
        self._reader.start()

    def result(self) -> Any:
        """What ``fn`` returned; its exception raised here if it failed. It does not wait for the child to exit:
        its interpreter's tear-down (a quarter of a second with SciPy loaded) overlaps what comes next, and
        ``stop`` reaps it."""
        assert self._reader is not None, "run() first"
        self._reader.join()
        kind, value = self._outcome or ("lost", None)
        if kind == "done":
            return value
        if kind == "failed":
            raise value
        raise BranchFailed(f"the {self.name} process ended without finishing (exit code {self._process.wait()});"
                           " run the same command again to resume where it stopped")

    def stop(self) -> None:
        """Wait for a child that has sent its outcome to exit; end any other now (an interrupt or an error in
        the parent) and wait for it to clean up."""
        end_child(self._process, STOP_WAIT_S, terminate=self._outcome is None)
        if self._reader is not None:
            self._reader.join()
        self._close_connection()

    def close(self) -> None:
        """Tell a child that was never given work to exit."""
        if self._reader is None and self._process.poll() is None:
            if self._ready() is not None and self._conn is not None:
                try:
                    self._conn.send(("close",))
                except OSError:
                    pass
            self._process.wait()
        self._close_connection()

    # -- the connection -----------------------------------------------------------------------------------
    def _ready(self) -> set[str] | None:
        """The child's families once it said it is ready; None when it never connected or said so."""
        if self._families is None:
            if self._pending is not None:
                self._conn = self._pending.wait(CONNECT_TIMEOUT_S)
                self._pending = None
            message = self._receive()
            self._families = set(message[1]) if message and message[0] == "ready" else set()
            self._started = bool(message and message[0] == "ready")
        return self._families if self._started else None

    def _receive(self) -> tuple | None:
        if self._conn is None:
            return None
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return None

    def _read(self, on_stage: Callable[[str, float], None] | None) -> None:
        while (message := self._receive()) is not None:
            if message[0] == "stage":
                if on_stage is not None:
                    on_stage(message[1], message[2])
            elif message[0] in ("done", "failed"):
                self._outcome = (message[0], message[1])
                return

    def _close_connection(self) -> None:
        for end in (self._conn, self._pending):
            if end is not None:
                end.close()
        self._conn = self._pending = None


# -- the child ----------------------------------------------------------------------------------------------

class _Stopped(KeyboardInterrupt):
    """SIGTERM from the parent: stop like Ctrl-C."""


def child_main(name: str, warm_up: list[str]) -> int:
    """The child's side (``child_main.py`` calls it once the pack is imported)."""
    import importlib

    from ...model_loaders import preview  # noqa: F401 - registers the weightless families
    from ...model_loaders.children import connect_to_parent
    from ...model_loaders.residency import family_names, load_worker_plugins
    from .rundir import parents_run_lock

    os.dup2(2, 1)  # the parent's standard output is the reel's path alone: what the stages print goes to stderr
    signal.signal(signal.SIGTERM, _stop)
    try:
        conn = connect_to_parent(sys.stdin)
    except (OSError, ValueError, KeyboardInterrupt):
        return 1  # the parent went away first
    try:
        load_worker_plugins()
        conn.send(("ready", family_names()))
        for module in warm_up:  # while the parent's director works
            importlib.import_module(module)
        message = conn.recv()
        if message[0] != "run":
            return 0
        _, fn, args, run_root = message
        with parents_run_lock(Path(run_root)):
            result = fn(*args, lambda stage, seconds: conn.send(("stage", stage, seconds)))
        conn.send(("done", result))
        return 0
    except (KeyboardInterrupt, EOFError):  # stopped, or the parent went away
        return 130
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        # The parent's traceback starts where it raises it again: the note says where it came from.
        note = f"raised in the {name} process:\n{traceback.format_exc().rstrip()}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10 prints no notes, but keeps them on the exception for whoever reads it
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]
        _send_failure(conn, exc, name)
        return 1


def _stop(signum: int, frame: object) -> None:
    raise _Stopped()


def _send_failure(conn: Connection, exc: BaseException, name: str) -> None:
    """``exc`` itself when it can be sent, so the parent raises what a thread would have raised."""
    try:
        conn.send(("failed", exc))
    except Exception:  # noqa: BLE001 - an exception whose arguments cannot be sent
        conn.send(("failed", BranchFailed(f"the {name} stages failed: {type(exc).__name__}: {exc}")))
