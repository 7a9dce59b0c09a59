"""Loader nodes: pick a backend per stage and return a handle, never weights (``pipeline/backends.py``)."""

from __future__ import annotations

from typing import Any

from ..model_loaders.handles import DTYPES
from .base import CATEGORY, choice, toggle
from .pipeline.backends import (
    DEVICES,
    LOADER_NODES,
    LORA_OPTIONS,
    RESIDENCY_CHOICES,
    STAGES,
    backend_choices,
    make_handle,
)


def _loader_node(stage: str, class_name: str, description: str) -> type:
    loader = STAGES[stage]

    class LoaderNode:
        DESCRIPTION = description
        CATEGORY = f"{CATEGORY}/loaders"
        RETURN_TYPES = (loader.socket,)
        RETURN_NAMES = ("model",)
        OUTPUT_TOOLTIPS = (f"A handle to the {loader.stage} model: settings only, no weights.",)
        FUNCTION = "load"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            spec: dict[str, Any] = {
                "required": {
                    "backend": choice(backend_choices(stage), f"Which {loader.stage} model to use. 'preview' needs no weights "
                                      "and no GPU; the others load a checkpoint (hub id or a folder in "
                                      "models/cinereel or models/diffusers)."),
                    "dtype": choice(DTYPES, "Weight precision. bfloat16 is the recommended setting on GPUs."),
                    "device": choice(DEVICES, "Where the model runs. auto: CUDA when present, else CPU."),
                    "residency": choice(RESIDENCY_CHOICES, "in_process: load into ComfyUI's process. subprocess: load "
                                        "in a worker process that is ended on unload, so every byte is freed. "
                                        "auto: subprocess for the language model, in-process otherwise."),
                    "unload_comfy_models": toggle("Ask ComfyUI to unload its own models before this one loads "
                                                  "(frees VRAM for CineReel's model).", True),
                }
            }
            if loader.options:
                spec["optional"] = {name: _widget(name, declaration) for name, declaration in loader.options}
            return spec

        def load(self, backend: str, dtype: str, device: str, residency: str, unload_comfy_models: bool,
                 **options: Any) -> dict[str, Any]:
            handle = make_handle(stage, backend, dtype, device, residency, unload_comfy_models, **options)
            # The browser extension matches this to the resident model's key to badge the one resident loader.
            return {"ui": {"cinereel_handle": [{"key": handle.key, "label": handle.label}]}, "result": (handle,)}

    LoaderNode.__name__ = LoaderNode.__qualname__ = class_name
    return LoaderNode


def _widget(name: str, declaration: tuple) -> tuple:
    """A LoRA option is a list of the LoRA files ComfyUI knows (``none`` first); headless it is any path."""
    if name in LORA_OPTIONS:
        from ..model_loaders.wan_loras import lora_choices

        return choice(lora_choices(), declaration[1]["tooltip"])
    return declaration


DESCRIPTIONS = {
    "llm": ("CineReel LLM Loader (director + critic)",
            "Chooses the language model that plans the reel (director) and scores clips (critic). "
            "One checkpoint serves both roles, so switching role costs no second load."),
    "keyframes": ("CineReel Keyframe Model Loader",
                  "Chooses the image model that draws character portraits and per-shot keyframes."),
    "motion": ("CineReel Motion Model Loader",
               "Chooses the image-to-video model that animates each keyframe into a clip."),
    "voice": ("CineReel Voice Loader",
              "Chooses the text-to-speech engine that narrates each shot in the plan's language."),
    "music": ("CineReel Music Loader", "Chooses the model that scores the instrumental music bed."),
}

NODES = {class_name: (_loader_node(stage, class_name, DESCRIPTIONS[stage][1]), DESCRIPTIONS[stage][0])
         for class_name, stage in LOADER_NODES.items()}
