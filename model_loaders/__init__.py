"""Model families CineReel can load, one module per family, and the residency manager.

Importing this package registers every family but imports none of the real
ones: a family's module (and torch, diffusers, transformers or kokoro with
it) is imported when a model of that family first loads, so ComfyUI's
start-up does not pay for it.
"""

from importlib import import_module
from typing import Any, Callable

from . import preview  # noqa: F401  (registers the weights-free preview families)
from .handles import ModelHandle
from .residency import RESIDENCY, ResidencyManager, register_family

# family -> (module in this package, load function, unload function)
REAL_FAMILIES = {
    "flux2-klein": ("flux2", "load_flux2", "unload_flux2"),
    "wan2.2-i2v": ("wan", "load_wan", "unload_wan"),
    "qwen3.5": ("qwen", "load_qwen", "unload_qwen"),
    "openai-compatible": ("openai_compat", "load_openai", "unload_openai"),
    "kokoro": ("kokoro_tts", "load_kokoro", "unload_kokoro"),
    "acestep": ("acestep", "load_acestep", "unload_acestep"),
}


def _deferred(module: str, function: str) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return getattr(import_module(f".{module}", __name__), function)(*args)

    call.__name__ = function
    return call


for _family, (_module, _load, _unload) in REAL_FAMILIES.items():
    register_family(_family, _deferred(_module, _load), _deferred(_module, _unload))

__all__ = ["ModelHandle", "RESIDENCY", "ResidencyManager", "register_family"]
