"""The Ray actor: one long-lived CineReel worker per GPU (or per CPU slot), with its own residency manager.

This module imports only the standard library and is pickled by value (``ray_pool`` registers it), so a Ray
worker process can build the actor before the pack is importable there. The actor's first act is to import
the pack by its folder path under the driver's package name, as ComfyUI and the tests load it; then the jobs
it receives (pickled closures of the pack's own stage functions) resolve to the same modules. Where the
folder is not at the driver's path, a pack installed with pip (``cinereel``) is imported instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from typing import Any


def import_pack(package: str, root: str) -> Any:
    """The pack as ``package``: from ``root`` (the driver's checkout) when this machine has it, else installed."""
    if package in sys.modules:
        return sys.modules[package]
    init = os.path.join(root, "__init__.py")
    if not os.path.isfile(init):
        return importlib.import_module(package)
    spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[package]
        raise
    return module


class CineReelWorker:
    """Renders one job at a time under its process's residency manager: the model stays resident between
    jobs of a phase, so each worker loads each phase's model once."""

    def __init__(self, package: str, root: str, name: str):
        import_pack(package, root)
        self.name = name
        self.tasks = importlib.import_module(f"{package}.nodes.pipeline.ray_pool")
        importlib.import_module(f"{package}.model_loaders.residency").load_worker_plugins()

    def ready(self) -> dict[str, Any]:
        return {"worker": self.name, "pid": os.getpid(), "host": socket.gethostname()}

    def render(self, job: Any, handle: Any, run_root: str, return_artifact: bool,
               hand_out: Any = None) -> dict[str, Any]:
        return {**self.tasks.render_here(job, handle, run_root, return_artifact, hand_out), "worker": self.name}
