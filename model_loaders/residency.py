"""The residency manager: one large model resident at a time.

``with RESIDENCY.use(handle) as model:`` loads the model if it is not the
resident one, evicting the current model first: every reference dropped,
``gc.collect()``, ``torch.cuda.empty_cache()`` when CUDA is in use, and on
Linux ``malloc_trim(0)`` so freed host memory really goes back to the
operating system. Handles with the same ``key`` (the director and the critic
on one checkpoint) share one residency.

A handle with ``residency="subprocess"`` runs its model in a worker process
(see ``worker.py``); evicting it ends that process, so the OS reclaims every
byte. Every load and eviction is logged with its duration and the process
memory before and after.

The manager is re-entrant and locked: ComfyUI's executor thread and its
server thread (the "free memory" button) may both call it.

A thread inside ``side_branch(name)`` (the headless runner's sound stages,
beside the picture stages, in their own process or in a thread) uses weightless models only: each ``use`` loads
its own instance and unloads it at the end of the block, without touching the
resident slot or its lock. Its loads are logged with ``"branch": name``, and
``log_since`` shows each thread the entries of its own branch.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from .handles import ModelHandle

log = logging.getLogger("cinereel.residency")

Loader = Callable[[ModelHandle], Any]
Unloader = Callable[[Any], None]


class Family(NamedTuple):
    name: str
    load: Loader
    unload: Unloader | None = None
    weightless: bool = False  # holds no weights (the preview backends): nothing to free around its load


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, load: Loader, unload: Unloader | None = None, weightless: bool = False) -> None:
    """Declare how to load a model family. ``load`` imports its heavy libraries itself, lazily. A
    ``weightless`` family (a preview backend) holds no weights, so switching to or from it frees nothing."""
    _FAMILIES[name] = Family(name, load, unload, weightless)


def load_worker_plugins() -> None:
    """Extra model families from files that define ``register(register_family)`` (``CINEREEL_WORKER_PLUGINS``):
    a backend outside the pack, or a test's, in a process the pack starts (a model worker, a Ray worker, the
    sound branch's process) as well as in the one that set the variable."""
    import importlib.util
    from pathlib import Path

    for plugin in filter(None, os.environ.get("CINEREEL_WORKER_PLUGINS", "").split(os.pathsep)):
        spec = importlib.util.spec_from_file_location(f"_cinereel_plugin_{Path(plugin).stem}", plugin)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.register(register_family)


def is_weightless(handle: ModelHandle) -> bool:
    """Whether ``handle``'s model holds no weights and runs in this process (a preview backend)."""
    registered = _FAMILIES.get(handle.family)
    return registered is not None and registered.weightless and handle.residency != "subprocess"


_branch = threading.local()


def current_branch() -> str | None:
    """The side branch this thread runs in (``side_branch``), or None on the main line."""
    return getattr(_branch, "name", None)


@contextmanager
def side_branch(name: str) -> Iterator[None]:
    """Run this thread's ``RESIDENCY.use`` blocks beside the resident model: weightless models only."""
    _branch.name = name
    try:
        yield
    finally:
        _branch.name = None


def family_names() -> list[str]:
    """Every registered family, sorted."""
    return sorted(_FAMILIES)


def family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"no model family {name!r} is registered (known: {', '.join(sorted(_FAMILIES))})") from None


def load_model(handle: ModelHandle) -> Any:
    """Load ``handle`` in this process with its family's loader (the worker calls this too)."""
    return family(handle.family).load(handle)


# -- memory ------------------------------------------------------------------

def process_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def release_freed_memory() -> None:
    """Return freed memory to the OS: Python's, CUDA's cache, and glibc's heap."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl or another libc without malloc_trim
            pass


def cuda_peak_bytes() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def free_comfy_models() -> bool:
    """Ask ComfyUI's memory manager to unload its own models; False when ComfyUI is not present."""
    mm = sys.modules.get("comfy.model_management")
    if mm is None:
        return False
    mm.unload_all_models()
    mm.soft_empty_cache()
    return True


# -- the manager -------------------------------------------------------------

@dataclass
class _Resident:
    handle: ModelHandle
    model: Any
    rss_before_load: int


class ResidencyManager:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()  # a side branch logs while the main line holds _lock for a whole use
        self._resident: _Resident | None = None
        self._log: list[dict[str, Any]] = []
        self._listeners: list[Callable[[dict[str, Any], ModelHandle | None], None]] = []
        self.reuses = 0

    def add_listener(self, callback: Callable[[dict[str, Any], ModelHandle | None], None]) -> None:
        """Call ``callback(log_entry, resident_handle)`` after every load and eviction (the UI shows it)."""
        self._listeners.append(callback)

    # -- public API --------------------------------------------------------
    @contextmanager
    def use(self, handle: ModelHandle) -> Iterator[Any]:
        """The live model for ``handle``, loading it (and evicting another) if needed.

        Do not keep references to the model after the ``with`` block: the
        manager must hold the only one so eviction can free it.
        """
        branch = current_branch()
        if branch is not None:
            with self._beside(handle, branch) as model:
                yield model
            return
        with self._lock:
            yield self._ensure(handle)

    def evict(self, reason: str = "requested") -> bool:
        """Unload the resident model, if any. Returns True when something was evicted."""
        with self._lock:
            if self._resident is None:
                return False
            self._evict(reason)
            return True

    @property
    def resident(self) -> ModelHandle | None:
        with self._lock:
            return self._resident.handle if self._resident else None

    @property
    def log(self) -> list[dict[str, Any]]:
        """Every load and eviction so far, oldest first (a copy), side branches included."""
        with self._log_lock:
            return [dict(entry) for entry in self._log]

    def log_since(self, mark: int) -> list[dict[str, Any]]:
        """What happened after ``mark`` in the calling thread's branch (the main line's, outside ``side_branch``)."""
        branch = current_branch()
        with self._log_lock:
            return [dict(entry) for entry in self._log[mark:] if entry.get("branch") == branch]

    def mark(self) -> int:
        """A position in the log; ``log_since(mark)`` returns what happened after it."""
        with self._log_lock:
            return len(self._log)

    def loads(self, since: int = 0) -> int:
        return sum(1 for e in self.log_since(since) if e["event"] == "load")

    # -- internals ---------------------------------------------------------
    @contextmanager
    def _beside(self, handle: ModelHandle, branch: str) -> Iterator[Any]:
        if not is_weightless(handle):
            raise RuntimeError(f"{handle.label} holds weights: only weightless models run beside the resident one "
                               f"(side branch {branch!r})")
        rss_before, started = process_rss(), time.perf_counter()
        model = load_model(handle)
        self._append("load", handle, seconds=time.perf_counter() - started, rss_before=rss_before,
                     rss_after=process_rss(), branch=branch)
        try:
            yield model
        finally:
            rss_before, started = process_rss(), time.perf_counter()
            if _FAMILIES[handle.family].unload:
                _FAMILIES[handle.family].unload(model)
            del model
            self._append("evict", handle, seconds=time.perf_counter() - started, rss_before=rss_before,
                         rss_after=process_rss(), reason=f"the {branch} branch is done with it", branch=branch)

    def _ensure(self, handle: ModelHandle) -> Any:
        if self._resident is not None and self._resident.handle.key == handle.key:
            self.reuses += 1
            return self._resident.model
        if self._resident is not None:
            self._evict(f"making room for {handle.label}")
        if handle.option("unload_comfy_models", False) and free_comfy_models():
            log.info("asked ComfyUI to unload its models before loading %s", handle.label)
        if not is_weightless(handle):  # a full collection costs tens of milliseconds and frees nothing here
            release_freed_memory()
        rss_before = process_rss()
        started = time.perf_counter()
        if handle.residency == "subprocess":
            from .worker import WorkerModel

            model = WorkerModel.start(handle)
        else:
            model = load_model(handle)
        self._resident = _Resident(handle, model, rss_before)
        self._append(
            "load",
            handle,
            seconds=time.perf_counter() - started,
            rss_before=rss_before,
            rss_after=process_rss(),
            worker_pid=getattr(model, "pid", None),
            cuda_peak_bytes=cuda_peak_bytes(),
        )
        return model

    def _evict(self, reason: str) -> None:
        resident = self._resident
        assert resident is not None
        started = time.perf_counter()
        rss_before = process_rss()
        handle, model = resident.handle, resident.model
        self._resident = None
        resident.model = None
        try:
            ref = weakref.ref(model)
        except TypeError:
            ref = None
        try:
            if handle.residency == "subprocess":
                model.stop()
            elif _FAMILIES.get(handle.family) and _FAMILIES[handle.family].unload:
                _FAMILIES[handle.family].unload(model)
        finally:
            del model, resident
            if not is_weightless(handle):
                release_freed_memory()
        leaked = ref is not None and ref() is not None
        if leaked:
            log.warning("%s is still referenced after eviction; its memory cannot be freed", handle.label)
        self._append(
            "evict",
            handle,
            seconds=time.perf_counter() - started,
            rss_before=rss_before,
            rss_after=process_rss(),
            reason=reason,
            still_referenced=leaked,
        )

    def _append(self, event: str, handle: ModelHandle, **facts: Any) -> None:
        entry = {"event": event, "family": handle.family, "checkpoint": handle.checkpoint,
                 "key": handle.key, "role": handle.role, "time": time.time(), **facts}
        with self._log_lock:
            self._log.append(entry)
        for listener in self._listeners:
            try:
                listener(dict(entry), self._resident.handle if self._resident else None)
            except Exception:  # noqa: BLE001 - a UI hook must never break a load
                log.exception("residency listener failed")
        log.info("%s %s (%.2fs, rss %.0f -> %.0f MB)", event, handle.label, entry["seconds"],
                 entry["rss_before"] / 2**20, entry["rss_after"] / 2**20)


RESIDENCY = ResidencyManager()


def in_worker_process() -> bool:
    return os.environ.get("CINEREEL_WORKER") == "1"
