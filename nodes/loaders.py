"""Loader nodes: pick a backend per stage and return a handle (never weights).

Each list offers the weights-free preview backend first, then the real
checkpoint's hub id, then diffusers/transformers folders found in ComfyUI's
model folders. The handle goes to the stage node, which makes the model
resident through the residency manager only when it has work to do.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..model_loaders.handles import DTYPES, ModelHandle
from ..model_loaders.preview import PREVIEW_CHECKPOINT
from .base import (CATEGORY, KEYFRAME_MODEL, LLM, MOTION_MODEL, MUSIC_MODEL, VOICE_MODEL, NotImplementedYet,
                   choice, toggle)
from .comfy import model_folders

DEVICES = ("auto", "cuda", "cpu", "mps")
RESIDENCY_CHOICES = ("auto", "in_process", "subprocess")


class Backend(NamedTuple):
    choice: str  # what the user sees in the list
    family: str
    checkpoint: str
    issue: int = 0  # the issue that implements it; 0 when it works today
    subprocess_by_default: bool = False


class StageLoader(NamedTuple):
    stage: str
    socket: str
    backends: tuple[Backend, ...]
    real_family: str  # family used for checkpoint folders found on disk
    real_issue: int


STAGES = {
    "llm": StageLoader("director and critic", LLM, (
        Backend("preview (rules + technical critic)", "preview-llm", PREVIEW_CHECKPOINT),
        Backend("Qwen/Qwen3.5-35B-A3B", "qwen3.5", "Qwen/Qwen3.5-35B-A3B", issue=5, subprocess_by_default=True),
        Backend("OpenAI-compatible server", "openai-compatible", "server", issue=5),
    ), "qwen3.5", 5),
    "keyframes": StageLoader("keyframes", KEYFRAME_MODEL, (
        Backend("preview (storyboard frames)", "preview-keyframes", PREVIEW_CHECKPOINT),
        Backend("black-forest-labs/FLUX.2-klein-4B", "flux2-klein", "black-forest-labs/FLUX.2-klein-4B", issue=4),
    ), "flux2-klein", 4),
    "motion": StageLoader("motion", MOTION_MODEL, (
        Backend("preview (Ken Burns moves)", "preview-motion", PREVIEW_CHECKPOINT),
        Backend("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "wan2.2-i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", issue=4),
    ), "wan2.2-i2v", 4),
    "voice": StageLoader("narration", VOICE_MODEL, (
        Backend("preview (eSpeak NG)", "preview-voice", PREVIEW_CHECKPOINT),
        Backend("hexgrad/Kokoro-82M", "kokoro", "hexgrad/Kokoro-82M", issue=5),
    ), "kokoro", 5),
    "music": StageLoader("music", MUSIC_MODEL, (
        Backend("preview (synth bed)", "preview-music", PREVIEW_CHECKPOINT),
        Backend("ACE-Step/acestep-v15-xl-turbo-diffusers", "acestep", "ACE-Step/acestep-v15-xl-turbo-diffusers", issue=5),
    ), "acestep", 5),
}


PREVIEW_CHOICES = {stage: loader.backends[0].choice for stage, loader in STAGES.items()}


def backend_choices(stage: str) -> list[str]:
    loader = STAGES[stage]
    folders = [f"folder: {p.name}" for root in model_folders() if root.is_dir()
               for p in sorted(root.iterdir()) if p.is_dir()]
    return [b.choice for b in loader.backends] + folders


def resolve_backend(stage: str, selected: str) -> Backend:
    loader = STAGES[stage]
    for backend in loader.backends:
        if backend.choice == selected:
            return backend
    if selected.startswith("folder: "):
        name = selected[len("folder: "):]
        for root in model_folders():
            if (root / name).is_dir():
                return Backend(selected, loader.real_family, str(root / name), issue=loader.real_issue)
        raise FileNotFoundError(f"checkpoint folder {name!r} is not in {', '.join(map(str, model_folders()))}")
    raise ValueError(f"unknown {loader.stage} backend {selected!r}; choose one of: {', '.join(backend_choices(stage))}")


def make_handle(stage: str, selected: str, dtype: str = "bfloat16", device: str = "auto",
                residency: str = "auto", unload_comfy_models: bool = True, **options: Any) -> ModelHandle:
    """The handle for ``selected``; raises before anything loads if that backend cannot run yet."""
    backend = resolve_backend(stage, selected)
    if backend.issue:
        raise NotImplementedYet(f"the {backend.choice} {STAGES[stage].stage} backend", backend.issue,
                                "Choose the preview backend in this loader to run the pipeline now.")
    if residency == "auto":
        residency = "subprocess" if backend.subprocess_by_default else "in_process"
    return ModelHandle(
        family=backend.family,
        checkpoint=backend.checkpoint,
        dtype=dtype,
        device=device,
        residency=residency,  # type: ignore[arg-type]
        options={"unload_comfy_models": bool(unload_comfy_models), **options},
    )


def _loader_node(stage: str, class_name: str, display: str, description: str) -> type:
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
            return {
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

        def load(self, backend: str, dtype: str, device: str, residency: str, unload_comfy_models: bool) -> tuple:
            return (make_handle(stage, backend, dtype, device, residency, unload_comfy_models),)

    LoaderNode.__name__ = LoaderNode.__qualname__ = class_name
    return LoaderNode


LLMLoader = _loader_node("llm", "CineReelLLMLoader", "CineReel LLM Loader",
                         "Chooses the language model that plans the reel (director) and scores clips (critic). "
                         "One checkpoint serves both roles, so switching role costs no second load.")
KeyframeLoader = _loader_node("keyframes", "CineReelKeyframeLoader", "CineReel Keyframe Model Loader",
                              "Chooses the image model that draws character portraits and per-shot keyframes.")
MotionLoader = _loader_node("motion", "CineReelMotionLoader", "CineReel Motion Model Loader",
                            "Chooses the image-to-video model that animates each keyframe into a clip.")
VoiceLoader = _loader_node("voice", "CineReelVoiceLoader", "CineReel Voice Loader",
                           "Chooses the text-to-speech engine that narrates each shot in the plan's language.")
MusicLoader = _loader_node("music", "CineReelMusicLoader", "CineReel Music Loader",
                           "Chooses the model that scores the instrumental music bed.")

NODES = {
    "CineReelLLMLoader": (LLMLoader, "CineReel LLM Loader (director + critic)"),
    "CineReelKeyframeLoader": (KeyframeLoader, "CineReel Keyframe Model Loader"),
    "CineReelMotionLoader": (MotionLoader, "CineReel Motion Model Loader"),
    "CineReelVoiceLoader": (VoiceLoader, "CineReel Voice Loader"),
    "CineReelMusicLoader": (MusicLoader, "CineReel Music Loader"),
}
