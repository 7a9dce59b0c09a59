"""What CineReel uses of ComfyUI, each with a plain fallback when ComfyUI is absent.

The pack runs headless and in tests without ComfyUI; inside ComfyUI it reports
progress to the UI, honours the interrupt (cancel) button, writes under
ComfyUI's output folder, and lists checkpoints from its model folders.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any


class Cancelled(Exception):
    """The user cancelled the run (ComfyUI's interrupt, or Ctrl-C headless)."""


_headless_cancel = threading.Event()


def comfy_present() -> bool:
    return "comfy.model_management" in sys.modules or "folder_paths" in sys.modules


def request_cancel() -> None:
    """Headless cancel (Ctrl-C handler, tests)."""
    _headless_cancel.set()


def clear_cancel() -> None:
    _headless_cancel.clear()


def is_cancel(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's cancel (ours, or ComfyUI's interrupt), not a failure to report and go on."""
    return isinstance(exc, (Cancelled, KeyboardInterrupt)) or type(exc).__name__ == "InterruptProcessingException"


def check_cancel() -> None:
    """Raise if the user cancelled. Call between steps and inside long loops.

    Inside ComfyUI this raises ComfyUI's own InterruptProcessingException, which
    its executor turns into a clean "interrupted" state.
    """
    mm = sys.modules.get("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
    if _headless_cancel.is_set():
        raise Cancelled("cancelled")


# Where new progress bars report instead of a bar of their own: a batch phase's one bar (``progress_into``).
_progress_sink: ContextVar[Callable[[float], None] | None] = ContextVar("cinereel_progress_sink", default=None)


@contextmanager
def progress_into(sink: Callable[[float], None]) -> Iterator[None]:
    """Bars made inside this block report their fraction done (0 to 1) to ``sink`` and draw nothing."""
    token = _progress_sink.set(sink)
    try:
        yield
    finally:
        _progress_sink.reset(token)


class Progress:
    """A progress bar over ``total`` jobs: ComfyUI's bar when present, else a callback or nothing.

    ``step(done, of)`` moves the bar inside the current job (a model's denoising steps), so a
    long render shows progress between jobs too; both honour cancel.
    """

    RESOLUTION = 1000  # bar units per job

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None):
        self.total = max(int(total), 1)
        self.current = 0
        self._callback = callback
        self._bar = None
        self._sink = _progress_sink.get()
        utils = sys.modules.get("comfy.utils")
        if self._sink is None and utils is not None and hasattr(utils, "ProgressBar"):
            self._bar = utils.ProgressBar(self.total * self.RESOLUTION)

    def update(self, steps: int = 1) -> None:
        self.current = min(self.current + steps, self.total)
        self._show(self.current * self.RESOLUTION)
        if self._callback is not None:
            self._callback(self.current, self.total)
        check_cancel()

    def step(self, done: int, of: int) -> None:
        """Progress inside the current job: ``done`` of ``of`` denoising steps."""
        fraction = min(max(done / max(of, 1), 0.0), 1.0)
        self._show(round((self.current + fraction) * self.RESOLUTION))
        check_cancel()

    def _show(self, value: int) -> None:
        if self._sink is not None:
            self._sink(min(value / (self.total * self.RESOLUTION), 1.0))
        if self._bar is not None:
            self._bar.update_absolute(min(value, self.total * self.RESOLUTION), self.total * self.RESOLUTION)


def output_root() -> Path:
    """ComfyUI's output folder inside ComfyUI; ``$CINEREEL_OUTPUT`` or ./output headless."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("CINEREEL_OUTPUT", "output")).resolve()


MODEL_FOLDER = "cinereel"


def register_model_folder() -> None:
    """Register ``models/cinereel`` with ComfyUI's ``folder_paths`` (diffusers-format folders live there)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None or MODEL_FOLDER in folder_paths.folder_names_and_paths:
        return
    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([path], {"folder"} if isinstance(
        next(iter(folder_paths.folder_names_and_paths.values()))[1], set) else ["folder"])


def model_folders() -> list[Path]:
    """Folders that may hold diffusers/transformers checkpoint folders (ComfyUI's ``diffusers`` and ``cinereel``)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return []
    register_model_folder()
    found: list[Path] = []
    for name in ("cinereel", "diffusers", "LLM"):
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry:
            found.extend(Path(p) for p in entry[0])
    return found


def send_ui_event(event: str, data: dict[str, Any]) -> None:
    """Push a live update to the browser (the js/ extension listens); silently nothing headless."""
    server_mod = sys.modules.get("server")
    instance = getattr(getattr(server_mod, "PromptServer", None), "instance", None)
    if instance is not None and hasattr(instance, "send_sync"):
        instance.send_sync(event, data)


# -- ComfyUI's memory manager ------------------------------------------------------

class ResidentEntry:
    """CineReel's resident model as one entry of ComfyUI's list of loaded models.

    ``comfy.model_management.current_loaded_models`` is what ComfyUI unloads when asked: the Unload
    Models / Free Memory buttons (``POST /free``), an out-of-memory recovery, ``--disable-smart-memory``,
    and its own loads when they need room. Listing the resident model there makes each of those evict it
    through the residency manager. The entry has the methods ComfyUI calls on its ``LoadedModel`` (2024
    and 0.3.6x alike); ``model`` and ``model.model`` (there, a ModelPatcher and its module) are read only
    for identity, reference counts and a class name in a debug log, so both are this entry.
    """

    def __init__(self, device: Any, label: str):
        self.device = device
        self.label = label
        self.model = self  # a live reference too: 2024's cleanup_models drops entries with refcount <= 2
        self.currently_used = False  # never handed to ControlNet's re-load of "models in use"
        self.unloading = False

    def model_unload(self, memory_to_free: Any = None, unpatch_weights: bool = True) -> bool:
        from ...model_loaders.residency import RESIDENCY

        self.unloading = True  # ComfyUI removes the entry from its list itself
        RESIDENCY.evict("ComfyUI unloaded models")
        return True

    def model_memory(self) -> int:
        return 0

    def model_loaded_memory(self) -> int:
        return 0

    def model_offloaded_memory(self) -> int:
        return 0

    def model_memory_required(self, device: Any) -> int:
        return 0

    def model_use_more_vram(self, extra_memory: Any, force_patch_weights: bool = False) -> int:
        return 0

    def is_dead(self) -> bool:
        return False

    def real_model(self) -> ResidentEntry:
        return self  # not None: 0.3.6x's cleanup_models keeps the entry


_ENTRY: ResidentEntry | None = None


def follow_residency(_event: dict[str, Any], resident: Any) -> None:
    """Residency listener: keep ComfyUI's list of loaded models showing CineReel's resident model."""
    global _ENTRY
    mm = sys.modules.get("comfy.model_management")
    loaded = getattr(mm, "current_loaded_models", None)
    if not isinstance(loaded, list):
        return  # headless, or a ComfyUI without the list: the CineReel Unload Models node still frees it
    if _ENTRY is not None and not _ENTRY.unloading and any(e is _ENTRY for e in loaded):
        loaded[:] = [e for e in loaded if e is not _ENTRY]
    _ENTRY = None
    if resident is not None:
        _ENTRY = ResidentEntry(mm.get_torch_device(), resident.label)
        loaded.append(_ENTRY)


def add_get_route(path: str, answer: Callable[[], Any]) -> bool:
    """Serve ``answer()`` as JSON at ``GET path`` on ComfyUI's server; False when there is no server."""
    server_mod = sys.modules.get("server")
    instance = getattr(getattr(server_mod, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "routes"):
        return False
    from aiohttp import web

    async def respond(_request: Any) -> Any:
        return web.json_response(answer())

    instance.routes.get(path)(respond)
    return True
