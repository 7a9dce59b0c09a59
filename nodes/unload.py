"""The explicit unload node: evicts CineReel's resident model, passing its input through."""

from __future__ import annotations

from typing import Any

from ..model_loaders.residency import RESIDENCY, free_comfy_models
from .base import ANY, CATEGORY, toggle


def unload_models(also_comfy: bool = False) -> dict[str, Any]:
    """Evict the resident model (and ComfyUI's own models when asked); report what was freed."""
    resident = RESIDENCY.resident
    evicted = RESIDENCY.evict("unload node")
    comfy_freed = free_comfy_models() if also_comfy else False
    status = {"evicted": resident.label if (evicted and resident) else None, "comfy_models_unloaded": comfy_freed}
    return status


class UnloadModelsNode:
    DESCRIPTION = ("Unloads CineReel's resident model now, freeing its memory, and passes its input through "
                   "unchanged. Place it between stages to decide where memory is freed.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("value",)
    OUTPUT_TOOLTIPS = ("The input, unchanged.",)
    FUNCTION = "unload"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": (ANY, {"tooltip": "Anything (a REEL, a model handle...): passed through unchanged; the "
                                           "unload happens when this value is ready."}),
                "also_comfy_models": toggle("Also ask ComfyUI to unload its own models.", False),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")  # never cached: unloading is the point, every time the graph runs

    def unload(self, value: Any, also_comfy_models: bool) -> dict[str, Any]:
        status = unload_models(also_comfy_models)
        line = f"unloaded {status['evicted']}" if status["evicted"] else "nothing was resident"
        return {"ui": {"text": [line]}, "result": (value,)}


NODES = {"CineReelUnloadModels": (UnloadModelsNode, "CineReel Unload Models")}
