"""The backends each stage offers, their settings, and how a choice becomes a model handle (never weights).

The loader nodes and the headless command share this catalogue. Each list
offers the weights-free preview backend first, then the real checkpoint's hub
id, then diffusers/transformers folders found in ComfyUI's model folders. The
handle goes to the stage, which makes the model resident through the residency
manager only when it has work to do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from ...model_loaders.api_keys import key_problems
from ...model_loaders.handles import ModelHandle
from ...model_loaders.preview import PREVIEW_CHECKPOINT
from .comfy import model_folders
from .preflight import PreflightError
from .widgets import KEYFRAME_MODEL, LLM, MOTION_MODEL, MUSIC_MODEL, VOICE_MODEL, choice, integer, number, text, toggle

DEVICES = ("auto", "cuda", "cpu", "mps")
RESIDENCY_CHOICES = ("auto", "in_process", "subprocess")


class NotImplementedYet(NotImplementedError):
    """A node or backend a later issue fills; raised before any work starts."""

    def __init__(self, what: str, issue: int, alternative: str):
        super().__init__(f"{what} is not implemented yet (CineReel issue #{issue}). {alternative}")


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
    options: tuple[tuple[str, tuple], ...] = ()  # optional widgets passed to the real model as handle options
    option_families: dict[str, tuple[str, ...]] = {}  # option -> the only families it applies to (default: all)


# Attention kernels that need no download (diffusers also lists "*_hub" kernels fetched at run time).
ATTENTION_BACKENDS = ("native", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math", "flash",
                      "flash_varlen", "_flash_3", "sage", "flex", "xformers")
OFFLOAD = ("none", "model", "group")
OFFLOAD_TIP = ("none: the whole model on the GPU (fastest). model: each component moves to the GPU while it runs "
               "(diffusers model CPU offload). group: layers stream to the GPU in groups (least VRAM, slowest). "
               "Both need a CUDA GPU.")
CACHE_TIP = ("First-block cache threshold (diffusers FirstBlockCacheConfig): skip the rest of the network on steps "
             "where the first block barely changes. 0 = off; 0.05 is the tested setting.")
ATTENTION_TIP = "diffusers attention backend. native (PyTorch SDPA) works everywhere; flash/sage need their packages."
# After every real loader's earlier options (later ones are appended after it), so workflows saved before it
# keep their widget positions.
ALLOW_DOWNLOAD = ("allow_download", toggle(
    "Let this loader download a hub checkpoint that is not in the Hugging Face cache (tens of GB, with progress "
    "in the console). Off: a missing checkpoint stops the queue at once with the command that fetches it.", False))
KEYFRAME_OPTIONS = (
    ("offload", choice(OFFLOAD, OFFLOAD_TIP)),
    ("fp8_storage", toggle("Store the transformer's weights in FP8 and compute in the chosen dtype (diffusers "
                           "layerwise casting): about half the weight memory, slightly lower quality.", False)),
    ("first_block_cache", number(CACHE_TIP, 0.05, 0.0, 1.0, 0.01)),
    ("attention_backend", choice(ATTENTION_BACKENDS, ATTENTION_TIP)),
    ("steps", integer("Denoising steps. FLUX.2 klein is step-distilled: 4 is its model card's setting.", 4, 1, 100)),
    ("guidance", number("Guidance scale. The distilled klein runs at 1.0.", 1.0, 0.0, 20.0, 0.1)),
    ALLOW_DOWNLOAD,
)
MUSIC_OPTIONS = (
    ("steps", integer("Denoising steps (ACE-Step 1.5 turbo: 8).", 8, 1, 200)),
    ("guidance", number("Guidance scale (the turbo checkpoints ignore it).", 1.0, 0.0, 20.0, 0.1)),
    ALLOW_DOWNLOAD,
)
LLM_OPTIONS = (
    ("base_url", text("OpenAI-compatible server only: its base URL (vLLM, Ollama, LM Studio, llama.cpp server).",
                      "http://127.0.0.1:8000/v1")),
    ("model", text("OpenAI-compatible server only: the model name it serves (blank: the first it lists).")),
    ("api_key_env", text("OpenAI-compatible server only: the NAME of the environment variable that holds the API "
                         "key; it must end in _API_KEY. The key itself is never stored in the workflow, and never "
                         "sent over plain http:// to another machine (use https:// or a loopback address).",
                         "OPENAI_API_KEY")),
    ("timeout_s", number("OpenAI-compatible server only: seconds to wait for an answer.", 120.0, 1.0, 3600.0, 1.0)),
    ("director_prompt", text("Optional path of a text file that replaces the director's system prompt "
                             "(model_loaders/prompts/director.txt).")),
    ("critic_prompt", text("Optional path of a text file that replaces the critic's system prompt "
                           "(model_loaders/prompts/critic.txt).")),
    ALLOW_DOWNLOAD,
)
MOTION_OPTIONS = (
    ("offload", choice(OFFLOAD, OFFLOAD_TIP)),
    ("first_block_cache", number(CACHE_TIP, 0.05, 0.0, 1.0, 0.01)),
    ("compile_transformer_2", toggle("torch.compile the low-noise expert only (compiling both experts breaks "
                                     "Dynamo tracing). Faster after a slow first shot; needs a GPU and a compiler.",
                                     False)),
    ("attention_backend", choice(ATTENTION_BACKENDS, ATTENTION_TIP)),
    ("steps", integer("Denoising steps shared by both experts (Wan2.2 I2V default 40).", 40, 1, 200)),
    ("guidance", number("Guidance scale of the high-noise expert (Wan2.2 default 3.5).", 3.5, 0.0, 20.0, 0.1)),
    ("guidance_2", number("Guidance scale of the low-noise expert (Wan2.2 default 3.5). At 1.0 or less its "
                          "unconditional pass is skipped, saving about a third of that expert's compute.",
                          3.5, 0.0, 20.0, 0.1)),
    ALLOW_DOWNLOAD,
    # Appended after allow_download (widget values are saved by position): the step-distilled motion of issue #14.
    ("speed", choice(("quality", "fast", "custom"), "quality: Wan2.2's own 40 steps, guidance 3.5 on both experts. "
                     "fast: the step-distilled LoRAs' recipe, 4 steps at guidance 1.0 (no unconditional pass, "
                     "about 20x less work per clip); load the 4-step LoRAs below, or the clip comes out blurry. "
                     "quality and fast fill in steps/guidance left at their defaults; custom uses steps and "
                     "guidance exactly as set.")),
    ("lora_high", text("LoRA for the high-noise expert (transformer), e.g. the Wan2.2 I2V 4-step high_noise LoRA: "
                       "a .safetensors file in ComfyUI's models/loras or models/cinereel, or a path. diffusers/PEFT "
                       "and ComfyUI/Kohya key layouts both load. none: no LoRA.", "none")),
    ("lora_high_strength", number("Strength of lora_high (1.0: as published).", 1.0, -4.0, 4.0, 0.05)),
    ("lora_low", text("LoRA for the low-noise expert (transformer_2), e.g. the Wan2.2 I2V 4-step low_noise LoRA. "
                      "none: no LoRA.", "none")),
    ("lora_low_strength", number("Strength of lora_low (1.0: as published).", 1.0, -4.0, 4.0, 0.05)),
)
# Motion options that name a LoRA file: a list of ComfyUI's LoRA files on the node, any path headless.
LORA_OPTIONS = ("lora_high", "lora_low")
# Options added after workflows were saved with a motion loader: at their defaults they stay out of the handle,
# so its key, and the key of every clip made before them, is unchanged (nothing is re-rendered for them).
KEY_NEUTRAL_DEFAULTS = {"speed": "quality", "lora_high_strength": 1.0, "lora_low_strength": 1.0}
VOICE_OPTIONS = (ALLOW_DOWNLOAD,)


STAGES: dict[str, StageLoader] = {
    "llm": StageLoader("director and critic", LLM, (
        Backend("preview (rules + technical critic)", "preview-llm", PREVIEW_CHECKPOINT),
        Backend("Qwen/Qwen3.5-35B-A3B", "qwen3.5", "Qwen/Qwen3.5-35B-A3B", subprocess_by_default=True),
        Backend("OpenAI-compatible server", "openai-compatible", ""),
    ), "qwen3.5", 0, LLM_OPTIONS, {"base_url": ("openai-compatible",), "model": ("openai-compatible",),
                                   "api_key_env": ("openai-compatible",), "timeout_s": ("openai-compatible",),
                                   "allow_download": ("qwen3.5",)}),
    "keyframes": StageLoader("keyframes", KEYFRAME_MODEL, (
        Backend("preview (storyboard frames)", "preview-keyframes", PREVIEW_CHECKPOINT),
        Backend("black-forest-labs/FLUX.2-klein-4B", "flux2-klein", "black-forest-labs/FLUX.2-klein-4B"),
    ), "flux2-klein", 0, KEYFRAME_OPTIONS),
    "motion": StageLoader("motion", MOTION_MODEL, (
        Backend("preview (Ken Burns moves)", "preview-motion", PREVIEW_CHECKPOINT),
        Backend("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "wan2.2-i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
    ), "wan2.2-i2v", 0, MOTION_OPTIONS),
    "voice": StageLoader("narration", VOICE_MODEL, (
        Backend("preview (eSpeak NG)", "preview-voice", PREVIEW_CHECKPOINT),
        Backend("hexgrad/Kokoro-82M", "kokoro", "hexgrad/Kokoro-82M"),
    ), "kokoro", 0, VOICE_OPTIONS),
    "music": StageLoader("music", MUSIC_MODEL, (
        Backend("preview (synth bed)", "preview-music", PREVIEW_CHECKPOINT),
        Backend("ACE-Step/acestep-v15-xl-turbo-diffusers", "acestep", "ACE-Step/acestep-v15-xl-turbo-diffusers"),
    ), "acestep", 0, MUSIC_OPTIONS),
}


PREVIEW_CHOICES = {stage: loader.backends[0].choice for stage, loader in STAGES.items()}
# The ComfyUI class name of each stage's loader node (nodes/loaders.py registers them under these names).
LOADER_NODES = {"CineReelLLMLoader": "llm", "CineReelKeyframeLoader": "keyframes", "CineReelMotionLoader": "motion",
                "CineReelVoiceLoader": "voice", "CineReelMusicLoader": "music"}


def backend_choices(stage: str) -> list[str]:
    """The stage's backends, then every checkpoint folder in ComfyUI's model folders that is its real model
    family's (a FLUX.2 folder is offered to the keyframe loader only)."""
    from ...model_loaders.model_layouts import belongs_to

    loader = STAGES[stage]
    folders = [f"folder: {p.name}" for root in model_folders() if root.is_dir()
               for p in sorted(root.iterdir()) if p.is_dir() and belongs_to(loader.real_family, p)]
    return [b.choice for b in loader.backends] + folders


def folder_backend(stage: str, shown_as: str, folder: Path) -> Backend:
    """A checkpoint folder of the stage's real family, run as that family's hub checkpoint runs (a Qwen
    folder in a worker subprocess by default, as the hub id is)."""
    loader = STAGES[stage]
    real = next(b for b in loader.backends if b.family == loader.real_family)
    return Backend(shown_as, loader.real_family, str(folder), issue=loader.real_issue,
                   subprocess_by_default=real.subprocess_by_default)


def resolve_backend(stage: str, selected: str) -> Backend:
    loader = STAGES[stage]
    for backend in loader.backends:
        if backend.choice == selected:
            return backend
    if selected.startswith("folder: "):
        name = selected[len("folder: "):]
        for root in model_folders():
            if (root / name).is_dir():
                return folder_backend(stage, selected, root / name)
        raise FileNotFoundError(f"checkpoint folder {name!r} is not in {', '.join(map(str, model_folders()))}")
    raise ValueError(f"unknown {loader.stage} backend {selected!r}; choose one of: {', '.join(backend_choices(stage))}")


def backend_for_checkpoint(stage: str, checkpoint: str) -> Backend:
    """Headless: ``preview``, a listed hub id, ``openai`` (the LLM stage), or a checkpoint folder path."""
    loader = STAGES[stage]
    if checkpoint == "preview":
        return loader.backends[0]
    for backend in loader.backends:
        if checkpoint in (backend.checkpoint, backend.choice) or (checkpoint == "openai" and
                                                                  backend.family == "openai-compatible"):
            return backend
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{loader.stage} checkpoint {checkpoint!r} is neither 'preview', a known hub id "
                                f"({', '.join(b.checkpoint for b in loader.backends[1:] if b.checkpoint)}) "
                                "nor a folder")
    return folder_backend(stage, str(path), path.resolve())


def option_problem(stage: str, name: str, value: Any, declaration: tuple) -> str | None:
    """Why ``value`` cannot be the loader option ``stage.name`` declared as ``declaration``, or None."""
    kind, spec = declaration[0], declaration[1]
    where = f"{stage}.{name}={value!r}"
    if isinstance(kind, list):
        return None if value in kind else f"{where} is not one of {', '.join(map(str, kind))}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{where} must be true or false"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{where} must be text"
    whole = kind == "INT"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (whole and int(value) != value):
        return f"{where} must be a {'whole number' if whole else 'number'} from {spec['min']} to {spec['max']}"
    if not spec["min"] <= value <= spec["max"]:
        return f"{where} is outside {spec['min']} to {spec['max']}"
    return None


# Options whose declared default is the widget's suggestion, not the backend's own default (the server backend
# has no default address): kept in a handle even at that value.
NO_BACKEND_DEFAULT = ("base_url",)


def without_defaults(stage: str, options: dict[str, Any]) -> dict[str, Any]:
    """Headless: the options that differ from their declared (and the backend's) default. A value written
    out at its default, in a settings file or with --set, keys its handle like leaving it out."""
    declared = dict(STAGES[stage].options)
    return {name: value for name, value in options.items()
            if name not in declared or name in NO_BACKEND_DEFAULT or value != declared[name][1].get("default")
            or type(value) is not type(declared[name][1].get("default"))}


def make_handle(stage: str, selected: str | Backend, dtype: str = "bfloat16", device: str = "auto",
                residency: str = "auto", unload_comfy_models: bool = True, **options: Any) -> ModelHandle:
    """The handle for ``selected``; raises before anything loads if that backend cannot run yet."""
    declared = dict(STAGES[stage].options)
    problems = [problem for name, value in options.items()
                if name in declared and (problem := option_problem(stage, name, value, declared[name]))]
    if problems:
        raise PreflightError(problems)
    backend = selected if isinstance(selected, Backend) else resolve_backend(stage, selected)
    if backend.issue:
        raise NotImplementedYet(f"the {backend.choice} {STAGES[stage].stage} backend", backend.issue,
                                "Choose the preview backend in this loader to run the pipeline now.")
    if residency == "auto":
        residency = "subprocess" if backend.subprocess_by_default else "in_process"
    if backend.family.startswith("preview-"):
        options = {}  # the preview backends take no model options; keep their handle (and key) plain
    only = STAGES[stage].option_families
    options = {name: value for name, value in options.items()
               if backend.family in only.get(name, (backend.family,)) and value not in ("", None)
               and not (name in LORA_OPTIONS and value == "none")  # the list's "no LoRA": keep the handle key
               and not (name in KEY_NEUTRAL_DEFAULTS and value == KEY_NEUTRAL_DEFAULTS[name])
               and not (name == "allow_download" and not value)}  # off is the default: keep the handle key
    if backend.family == "openai-compatible":  # where the API key would come from and go, before any request
        refused = key_problems(options.get("base_url"), options.get("api_key_env"))
        if refused:
            raise PreflightError([f"{stage}: {problem}" for problem in refused])
    return ModelHandle(
        family=backend.family,
        checkpoint=backend.checkpoint,
        dtype=dtype,
        device=device,
        residency=residency,  # type: ignore[arg-type]
        options={"unload_comfy_models": bool(unload_comfy_models), **options},
    )


def handles_in_prompt(prompt: dict[str, Any]) -> tuple[dict[str, ModelHandle], list[str]]:
    """The handle of every CineReel loader in a queued ComfyUI prompt (API format), keyed ``stage`` or
    ``stage (node N)`` when a stage has several; plus the problems that stopped a handle being made."""
    found: dict[str, ModelHandle] = {}
    problems: list[str] = []
    loaders = [(node_id, LOADER_NODES[node["class_type"]], node.get("inputs", {}))
               for node_id, node in sorted(prompt.items()) if isinstance(node, dict)
               and node.get("class_type") in LOADER_NODES]
    stages = [stage for _, stage, _ in loaders]
    for node_id, stage, inputs in loaders:
        name = stage if stages.count(stage) == 1 else f"{stage} (node {node_id})"
        widgets = {key: value for key, value in inputs.items() if not isinstance(value, list)}  # lists are links
        try:
            found[name] = make_handle(stage, widgets.pop("backend", PREVIEW_CHOICES[stage]), **widgets)
        except PreflightError as exc:
            problems += exc.problems
        except (ValueError, FileNotFoundError) as exc:
            problems.append(f"{name}: {exc}")
    return found, problems
