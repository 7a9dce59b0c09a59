"""Worker plugin (CINEREEL_WORKER_PLUGINS): registers the qwen3.5 and openai-compatible families in a
model worker process even where ``model_loaders/__init__.py`` does not import them yet.

The worker has imported the pack under its private alias; importing the modules through that alias
keeps their relative imports, and registers them in the worker's own residency registry.
"""

from __future__ import annotations

import importlib
import sys


def register(register_family) -> None:
    pack = register_family.__module__.rsplit(".model_loaders.", 1)[0]
    assert pack in sys.modules, pack
    importlib.import_module(f"{pack}.model_loaders.qwen")
    importlib.import_module(f"{pack}.model_loaders.openai_compat")
