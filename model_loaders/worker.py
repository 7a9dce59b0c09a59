"""Worker-process residency: a model that lives in a child process.

The parent starts ``worker_main.py`` with the interpreter it runs on, the
child imports the pack by file path (it does not need to be importable by
name), loads the handle with the same family loader an in-process load
uses, and serves method calls over a ``multiprocessing.connection``
(authenticated, local). Evicting the model ends the process, so the
operating system takes back every byte it held, CUDA context included.

Arguments and results cross the process boundary pickled: keep worker APIs
to plain data (str, dict, list, numbers, numpy arrays, bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from .children import accept_child, die_with_parent, listen_for_child, send_address
from .handles import ModelHandle

PACK_ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = Path(__file__).resolve().parent / "worker_main.py"
CONNECT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


class WorkerError(RuntimeError):
    """An exception raised inside the worker process, with its traceback."""


class WorkerModel:
    """Proxy to a model in a worker process: ``proxy.method(*args)`` runs ``model.method`` there.

    It has the attributes the model has, as the worker listed them when it loaded: its public methods
    (run there) and its plain public values (copied here); ``getattr(proxy, name, default)`` answers for
    the model, so a stage can ask whether its model offers something (``encode_prompts``)."""

    def __init__(self, handle: ModelHandle, process: subprocess.Popen, conn: Connection):
        self._handle = handle
        self._process = process
        self._conn = conn
        self._lock = threading.Lock()
        self._methods: frozenset[str] = frozenset()
        self._values: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @classmethod
    def start(cls, handle: ModelHandle) -> "WorkerModel":
        listener, authkey = listen_for_child()
        env = {**os.environ, "CINEREEL_WORKER": "1"}
        process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(PACK_ROOT)],
            stdin=subprocess.PIPE,
            env=env,
            **die_with_parent(),  # a killed ComfyUI or CLI takes its model worker (and its VRAM) with it
        )
        assert process.stdin is not None
        send_address(process.stdin, listener, authkey)
        conn = _accept(listener, process)
        worker = cls(handle, process, conn)
        try:
            listed = worker._request(("load", handle.to_dict()))
            worker._methods, worker._values = frozenset(listed["methods"]), dict(listed["values"])
        except BaseException:
            worker.stop()
            raise
        return worker

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._request(("call", method, args, kwargs))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never looked up remotely (nor before __init__ has set the lists)
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        if name not in self._methods:
            raise AttributeError(f"the {self._handle.label} model has no {name!r}")
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)

    def _request(self, message: tuple) -> Any:
        with self._lock:
            if not self.alive:
                raise WorkerError(f"the {self._handle.label} worker (pid {self.pid}) is not running "
                                  f"(exit code {self._process.returncode})")
            try:
                self._conn.send(message)
                status, payload = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                code = self._process.wait(timeout=STOP_TIMEOUT_S)
                raise WorkerError(f"the {self._handle.label} worker died (exit code {code}): {exc}") from None
        if status == "ok":
            return payload
        raise WorkerError(payload)

    def stop(self) -> None:
        """End the worker process and wait until it is gone."""
        if self.alive:
            try:
                with self._lock:
                    self._conn.send(("close",))
            except (OSError, BrokenPipeError):
                pass
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT_S)
        self._conn.close()


def _accept(listener: Listener, process: subprocess.Popen) -> Connection:
    """Wait for the child to connect, failing fast if it exits first."""
    conn = accept_child(listener, process, CONNECT_TIMEOUT_S)
    if conn is None:
        raise WorkerError(
            f"the model worker did not connect (exit code {process.poll()}); "
            "run with residency 'in_process' to see the error directly"
        )
    return conn
