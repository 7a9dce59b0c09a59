"""The real motion backend: Wan2.2 I2V A14B (two experts) through diffusers' ``WanImageToVideoPipeline``.

``transformer`` (the high-noise expert) denoises while the timestep is at or
above ``boundary_ratio × 1000`` (0.9 in the checkpoint's model_index.json);
``transformer_2`` (the low-noise expert) does the rest. It implements the same
interface as the Ken Burns preview: ``render_clip(keyframe, shot, plan,
num_frames, seed, callback)``.

Handle options (``handle.option(name, default)``):

- ``offload`` ``"none"`` | ``"model"`` | ``"group"``: diffusers model CPU offload or group offloading (CUDA only)
- ``first_block_cache`` float, 0 = off: diffusers ``FirstBlockCacheConfig`` on both experts
- ``compile_transformer_2`` bool: regional ``torch.compile`` of the low-noise expert only
- ``attention_backend`` str: diffusers attention backend of both experts
- ``speed`` ``"quality"`` | ``"fast"`` | ``"custom"``: a preset for steps and guidance (``SPEED_PRESETS``)
- ``steps`` int, ``guidance`` float (high-noise expert), ``guidance_2`` float (low-noise expert)
- ``lora_high`` / ``lora_low`` str, ``lora_high_strength`` / ``lora_low_strength`` float: a LoRA per expert
  (``wan_loras.py``)

Importing this module is cheap: torch and diffusers are imported when a model loads.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model_layouts
from .checkpoints import resolve_device
from .handles import LOADER_SETTINGS, ModelHandle
from .pass_counter import ExpertPassCounter
from .prompt_embeddings import PromptEmbeddings
from .residency import register_family
from .wan_loras import EXPERT_OF, ExpertLora, apply_loras, chosen, lora_path, remove_loras

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

log = logging.getLogger("cinereel.wan")

FAMILY = "wan2.2-i2v"
HUB_ID = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
PIPELINE_CLASS = "WanImageToVideoPipeline"
WAN_FPS = 16
OFFLOAD_MODES = ("none", "model", "group")
FLOW_SHIFT_ADVICE = "higher shifts gave plastic skin in testing; use 5.0 for hero shots, 8.0 for b-roll"
# Options that ask for FP8 weights or compute; the motion model refuses them all (see WanSettings).
_FP8_OPTION = re.compile(r"fp8|float8", re.IGNORECASE)

# Steps and guidance of each speed preset; "custom" takes the steps/guidance options as they are.
# quality: Wan's own I2V-A14B sampling (Wan-Video/Wan2.2, wan/configs/wan_i2v_A14B.py: sample_steps 40,
#   sample_guide_scale (3.5, 3.5)).
# fast: the step-distilled LoRAs' recipe: 4 steps, CFG 1.0 on both experts (so no unconditional pass runs),
#   one LoRA per expert, the high/low switch left at the checkpoint's boundary: model cards of
#   lightx2v/Wan2.2-Lightning (Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1: high_noise_model / low_noise_model)
#   and lightx2v/Wan2.2-Distill-Loras (wan2.2_i2v_A14b_{high,low}_noise_lora_rank64_lightx2v_4step_1022).
SPEEDS = ("quality", "fast", "custom")
SPEED_PRESETS: dict[str, dict[str, Any]] = {
    "quality": {"steps": 40, "guidance": 3.5, "guidance_2": 3.5},
    "fast": {"steps": 4, "guidance": 1.0, "guidance_2": 1.0},
}
PRESET_OPTIONS = ("steps", "guidance", "guidance_2")


# -- settings ------------------------------------------------------------------

@dataclass(frozen=True)
class WanSettings:
    """Sampling and runtime settings, read from the handle's options.

    steps 40 and guidance 3.5 for both experts are Wan's own defaults for I2V-A14B
    (Wan-Video/Wan2.2, wan/configs/wan_i2v_A14B.py: ``sample_steps = 40``,
    ``sample_guide_scale = (3.5, 3.5)``, ``boundary = 0.900``, ``sample_shift = 5.0``).
    first_block_cache 0.05 is the threshold of DESIGN.md §4 (also diffusers' default).
    """

    offload: str = "none"
    first_block_cache: float = 0.05
    compile_transformer_2: bool = False
    attention_backend: str = "native"
    steps: int = 40
    guidance: float = 3.5
    guidance_2: float = 3.5
    speed: str = "quality"
    lora_high: str = ""
    lora_high_strength: float = 1.0
    lora_low: str = ""
    lora_low_strength: float = 1.0

    @classmethod
    def from_handle(cls, handle: ModelHandle) -> WanSettings:
        """The settings a handle asks for; steps and guidance are the speed preset's where an option is left
        at its default (``quality`` and ``fast`` fill in, an explicit ``steps=8`` with ``fast`` wins)."""
        names = {f.name for f in fields(cls)}
        for name, value in handle.options:
            if _FP8_OPTION.search(name):
                if value:
                    raise ValueError(
                        f"option {name}={value!r} is refused for the Wan2.2 I2V motion model: FP8 compute hit "
                        "segfaults in its cross-attention. It runs in bfloat16; to fit a smaller GPU use "
                        "offload='model' or offload='group' instead.")
            elif name not in names and name not in LOADER_SETTINGS:
                log.warning("ignoring unknown %s option %r (known: %s)", FAMILY, name, ", ".join(sorted(names)))
        values = {name: handle.option(name, getattr(cls, name)) for name in names}
        preset = SPEED_PRESETS.get(values["speed"], {})
        for name in PRESET_OPTIONS:
            if name in preset and values[name] == getattr(cls, name):
                values[name] = preset[name]
        for option in EXPERT_OF:
            if not chosen(values[option]):
                values[option] = ""
        settings = cls(**values)
        settings.validate()
        return settings

    def loras(self) -> list[ExpertLora]:
        """The LoRA of each expert that has one."""
        return [ExpertLora(option, getattr(self, option), float(getattr(self, f"{option}_strength")))
                for option in EXPERT_OF if getattr(self, option)]

    def validate(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload {self.offload!r} must be one of {', '.join(OFFLOAD_MODES)}")
        if self.speed not in SPEEDS:
            raise ValueError(f"speed {self.speed!r} must be one of {', '.join(SPEEDS)}")
        for option in EXPERT_OF:
            strength = getattr(self, f"{option}_strength")
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
                raise ValueError(f"{option}_strength must be a finite number, got {strength!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        for name in ("first_block_cache", "guidance", "guidance_2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.compile_transformer_2, bool):
            raise ValueError(f"compile_transformer_2 must be true or false, got {self.compile_transformer_2!r}")
        if not isinstance(self.attention_backend, str) or not self.attention_backend:
            raise ValueError(f"attention_backend must be a diffusers backend name such as 'native', "
                             f"got {self.attention_backend!r}")


# -- checkpoint ----------------------------------------------------------------

def resolve_checkpoint(checkpoint: str, allow_download: bool = False) -> Path:
    """A complete local two-expert diffusers folder for ``checkpoint`` (a folder, or a hub id in the hub cache)."""
    folder = model_layouts.resolve(FAMILY, checkpoint, allow_download)
    check_two_experts(folder)
    return folder


def check_two_experts(folder: Path) -> None:
    """Raise unless ``folder``'s pipeline has both experts and the boundary that switches between them."""
    index = json.loads((folder / "model_index.json").read_text())
    experts = all(isinstance(index.get(name), list) and None not in index[name] for name in ("transformer",
                                                                                           "transformer_2"))
    if index.get("boundary_ratio") is None or not experts:
        raise ValueError(
            f"{folder} holds a {index.get('_class_name')} checkpoint (boundary_ratio {index.get('boundary_ratio')}); "
            f"the {FAMILY} family needs a {PIPELINE_CLASS} with two experts (transformer, transformer_2) and a "
            f"boundary_ratio, like {HUB_ID}")


# -- loading -------------------------------------------------------------------

def load_wan(handle: ModelHandle) -> WanMotion:
    """Load the two-expert pipeline for ``handle`` and apply its options (cheap checks first, weights last)."""
    settings = WanSettings.from_handle(handle)
    loras = [(lora, lora_path(lora.name)) for lora in settings.loras()]  # a missing file fails before loading
    folder = resolve_checkpoint(handle.checkpoint, bool(handle.option("allow_download", False)))
    import torch

    device = resolve_device(handle.device)
    _check_offload_device(settings.offload, device)
    dtype = getattr(torch, handle.dtype)
    # The VAE stays float32, as diffusers' WanImageToVideoPipeline example loads it; it is small.
    pipe = wan_pipeline_class().from_pretrained(folder, dtype={"default": dtype, "vae": torch.float32},
                                                use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    # Before compiling and the cache hooks, so both wrap the LoRA layers; before placing, so they move too.
    apply_loras(pipe, loras)
    _set_attention_backend(pipe, settings.attention_backend)
    if settings.compile_transformer_2:
        _compile_blocks(pipe.transformer_2)  # before the cache hooks: they must wrap the compiled blocks
    if settings.first_block_cache > 0:
        _enable_first_block_cache(pipe, settings.first_block_cache)
    _place(pipe, settings.offload, device)
    log.info("loaded %s from %s (%s, %s, options %s)", FAMILY, folder, handle.dtype, device, settings)
    return WanMotion(pipe, settings, [lora.record(path) for lora, path in loras])


def speed_warning(handle: ModelHandle) -> str | None:
    """The warning for ``fast`` on an expert without a LoRA: the base model at 4 steps makes a blurry clip."""
    if handle.family != FAMILY:
        return None
    settings = WanSettings.from_handle(handle)
    if settings.speed != "fast":
        return None
    missing = [option for option in EXPERT_OF if not getattr(settings, option)]
    if not missing:
        return None
    return (f"motion speed 'fast' runs {settings.steps} steps without guidance, the recipe of step-distilled "
            f"LoRAs, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: the base Wan2.2 "
            "gives a blurry clip at so few steps. Load the Wan2.2 I2V 4-step LoRAs (high_noise as lora_high, "
            "low_noise as lora_low; see the README) or use speed 'quality'")


def lora_files(handle: ModelHandle) -> list[list[Any]]:
    """Each LoRA file's identity (option, path, size, modification time) for a clip's artifact key: the same
    name with new content re-renders. Empty without LoRAs, leaving the keys of clips made without them."""
    if handle.family != FAMILY:
        return []
    found = []
    for lora in WanSettings.from_handle(handle).loras():
        path = lora_path(lora.name)
        stat = path.stat()
        found.append([lora.option, str(path), stat.st_size, stat.st_mtime_ns])
    return found


def lora_preflight(handle: ModelHandle, checkpoint_ready: bool) -> list[str]:
    """Preflight of the handle's LoRAs from file headers only: each file is there and readable, and its keys
    fit the expert it goes into (checked against the checkpoint's own headers when ``checkpoint_ready``)."""
    from .wan_loras import lora_problems

    try:
        loras = WanSettings.from_handle(handle).loras()
    except ValueError as exc:
        return [f"motion: {exc}"]
    if not loras:
        return []
    folder = None
    if checkpoint_ready:
        path = Path(handle.checkpoint).expanduser()
        folder = path if path.is_dir() else model_layouts.cached_snapshot(handle.checkpoint)
    return lora_problems(loras, folder)


def _check_offload_device(offload: str, device: torch.device) -> None:
    import torch

    if offload != "none" and device.type != "cuda":
        raise ValueError(
            f"offload={offload!r} needs a CUDA GPU: it keeps weights in CPU memory and moves them to the GPU as they "
            f"run, and this model runs on {device.type} (torch.cuda.is_available() is {torch.cuda.is_available()}). "
            "Use offload='none' without a GPU.")


def _place(pipe: Any, offload: str, device: torch.device) -> None:
    import torch

    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        # Leaf level with a CUDA stream (as in diffusers' enable_group_offload example) overlaps weight
        # transfers with compute; the VAE is small and stays on the GPU.
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=True, exclude_modules=["vae"])
    else:
        pipe.to(device)


def _experts(pipe: Any) -> tuple[Any, Any]:
    return pipe.transformer, pipe.transformer_2


def _set_attention_backend(pipe: Any, backend: str) -> None:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    # set_attention_backend also makes the backend the process-wide default for every other diffusers
    # model; the experts keep theirs per processor, so put the global default back.
    previous = _AttentionBackendRegistry.get_active_backend()[0]
    try:
        for expert in _experts(pipe):
            expert.set_attention_backend(backend)
    finally:
        _AttentionBackendRegistry.set_active_backend(previous)


def _enable_first_block_cache(pipe: Any, threshold: float) -> None:
    from diffusers import FirstBlockCacheConfig

    for expert in _experts(pipe):  # each expert keeps its own cache state
        expert.enable_cache(FirstBlockCacheConfig(threshold=threshold))


def _compile_blocks(expert: Any) -> None:
    """Regional ``torch.compile`` of one expert: the forward of each repeated transformer block.

    Only ``transformer_2`` is ever compiled: compiling the whole two-expert model breaks Dynamo tracing
    (DESIGN.md §4). Blocks share one compiled graph, so 40 layers compile once. Each block's own forward
    is compiled, beneath diffusers' cache hooks, rather than ``compile_repeated_blocks()`` over them:
    traced through the first-block-cache hooks, Dynamo guards on their Python state and recompiled at every
    cond/uncond and compute/skip switch (measured with TORCH_LOGS=recompiles), towards its recompile limit.
    """
    import torch

    for module in expert.modules():
        if type(module).__name__ in expert._repeated_blocks:
            module.forward = torch.compile(module.forward)


@functools.cache
def wan_pipeline_class() -> type:
    """``WanImageToVideoPipeline`` that skips an expert's unconditional pass when its guidance scale is <= 1.

    diffusers 0.42 decides classifier-free guidance once, from ``guidance_scale`` (the high-noise expert's):
    with ``guidance_scale_2 = 1`` (the distilled-LoRA recipe) the low-noise expert still runs a negative
    pass per step whose result the guidance formula multiplies away, and with ``guidance_scale = 1`` the
    low-noise expert's own scale is ignored. The denoising loop reads ``do_classifier_free_guidance``
    after setting ``_current_timestep``, so making the property follow the current expert fixes both.
    """
    from diffusers import WanImageToVideoPipeline

    class CineReelWanImageToVideoPipeline(WanImageToVideoPipeline):
        @property
        def do_classifier_free_guidance(self) -> bool:
            return self.current_guidance_scale > 1

        @property
        def current_guidance_scale(self) -> float:
            high, low = self._guidance_scale, self._guidance_scale_2
            if low is None:  # single-expert checkpoint
                return high
            t = self._current_timestep
            if t is None:  # encoding prompts: negative embeddings are needed if either expert guides
                return max(high, low)
            boundary = self.config.boundary_ratio * self.scheduler.config.num_train_timesteps
            return high if t >= boundary else low

    return CineReelWanImageToVideoPipeline


# -- rendering -----------------------------------------------------------------

def wan_frame_count(num_frames: int, temporal_factor: int = 4) -> int:
    """The smallest 4k+1 frame count >= ``num_frames`` (Wan's VAE packs 4 frames per latent after the first)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return temporal_factor * math.ceil((num_frames - 1) / temporal_factor) + 1


def check_flow_shift(flow_shift: float) -> float:
    from .vocabulary.plan import MAX_FLOW_SHIFT

    if not math.isfinite(flow_shift) or flow_shift <= 0:
        raise ValueError(f"flow_shift must be a positive number, got {flow_shift}")
    if flow_shift > MAX_FLOW_SHIFT:
        raise ValueError(f"flow_shift {flow_shift} is above {MAX_FLOW_SHIFT}: {FLOW_SHIFT_ADVICE}")
    return flow_shift


def motion_prompt(shot: dict[str, Any]) -> str:
    """The shot's prompt with its camera direction: Wan2.2 takes the camera only from the text, so the
    free-text ``camera_detail`` (or the plain phrase for ``camera``) goes into the prompt it encodes."""
    from .vocabulary.plan import PLAIN_CAMERA

    phrase = (shot.get("camera_detail") or "").strip() or PLAIN_CAMERA[shot.get("camera") or "static"]
    return f"{shot['prompt'].strip().rstrip('.')}. Camera: {phrase}."


class WanMotion:
    """Wan2.2 I2V A14B behind the motion interface; ``pipe`` is the loaded diffusers pipeline."""

    engine = FAMILY

    def __init__(self, pipe: Any, settings: WanSettings, loras: list[dict[str, Any]] | None = None) -> None:
        self.pipe = pipe
        self.settings = settings
        self.loras = list(loras or [])  # expert, option, file (resolved), strength of each loaded LoRA
        # The checkpoint's scheduler, before any per-shot flow shift.
        self._scheduler_class = type(pipe.scheduler)
        self._scheduler_config = pipe.scheduler.config
        self._last_call: dict[str, Any] = {}
        # Counted at the model call (forward pre-hooks), reported per render in the call record.
        self.passes = ExpertPassCounter({"transformer": pipe.transformer, "transformer_2": pipe.transformer_2})
        # (prompt, negative prompt) -> the text encoder's outputs, computed once per phase (encode_prompts)
        self.prompts = PromptEmbeddings()

    def encode_prompts(self, shots: Sequence[dict[str, Any]]) -> int:
        """Encode the phase's prompts once (diffusers' ``encode_prompt``, with the arguments the pipeline's own
        call gives it), so the clips' renders run no text encoder, and park UMT5-XXL meanwhile
        (``prompt_embeddings.py``). Returns how many prompt pairs were encoded."""
        import inspect

        pipe = self._require_pipe()
        length = inspect.signature(type(pipe).__call__).parameters["max_sequence_length"].default

        def encode(pair: tuple[str, str]) -> Any:
            return pipe.encode_prompt(prompt=pair[0], negative_prompt=pair[1], max_sequence_length=length,
                                      do_classifier_free_guidance=self.settings.guidance > 1.0,
                                      device=pipe._execution_device)

        pairs = {(motion_prompt(shot), shot.get("negative_prompt") or "") for shot in shots}
        return self.prompts.encode(pipe, pairs, encode, offloaded=self.settings.offload != "none")

    def scheduler_for(self, flow_shift: float) -> Any:
        """The checkpoint's scheduler rebuilt from its config with ``flow_shift``."""
        check_flow_shift(flow_shift)
        key = "flow_shift" if "flow_shift" in self._scheduler_config else "shift"  # UniPC / FlowMatchEuler spelling
        return self._scheduler_class.from_config(self._scheduler_config, **{key: float(flow_shift)})

    def render_clip(self, keyframe: Image.Image, shot: dict[str, Any], plan: dict[str, Any], num_frames: int,
                    seed: int, callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """Frames (T, H, W, 3), float32 in [0, 1]; T is the next 4k+1 >= ``num_frames``.

        ``callback(step, total)`` runs after every denoising step; an exception it raises cancels the render.
        """
        import torch

        pipe = self._require_pipe()
        width, height = self._frame_size(plan)
        if plan.get("fps", WAN_FPS) != WAN_FPS:
            log.warning("Wan2.2 renders motion for %d fps; the plan's %s fps changes its speed", WAN_FPS, plan["fps"])
        pipe.scheduler = self.scheduler_for(float(shot["flow_shift"]))
        steps = self.settings.steps
        sent = {"prompt": motion_prompt(shot), "negative_prompt": shot.get("negative_prompt") or "", "height": height,
                "width": width, "num_frames": wan_frame_count(num_frames, pipe.vae_scale_factor_temporal),
                "num_inference_steps": steps, "guidance_scale": self.settings.guidance,
                "guidance_scale_2": self.settings.guidance_2}
        encoded = self.prompts.get((sent["prompt"], sent["negative_prompt"]))
        self._last_call = {"renderer": FAMILY, **sent, "seed": int(seed), "flow_shift": float(shot["flow_shift"]),
                           "speed": self.settings.speed, "loras": [dict(lora) for lora in self.loras],
                           "prompt_encoded": "once for the phase" if encoded else "in this render"}
        call = dict(sent)
        if encoded is not None:  # the text encoder's outputs for exactly these prompts (encode_prompts)
            del call["prompt"], call["negative_prompt"]
            call["prompt_embeds"], call["negative_prompt_embeds"] = encoded
        else:
            self.prompts.unpark(pipe)
        try:
            self.passes.reset()
            video = pipe(
                image=keyframe.convert("RGB"),
                **call,
                generator=torch.Generator("cpu").manual_seed(int(seed)),
                output_type="np",
                callback_on_step_end=_step_callback(callback, steps),
            ).frames
        except BaseException:
            # A cancelled render stops mid-loop: reset cache state and offload hooks as a finished one would.
            pipe.maybe_free_model_hooks()
            raise
        finally:  # what each expert ran, counted at the model call (a cancelled render too)
            self._last_call["expert_passes"] = self.passes.counts()
        return video[0].astype("float32", copy=False)

    def last_call(self) -> dict[str, Any]:
        """What the last render sent to the pipeline: prompt, negative prompt, seed, flow shift, guidance
        of both experts, steps, size and frame count; and the speed preset and LoRAs (file, strength) it ran with."""
        return dict(self._last_call)

    def remove_loras(self) -> None:
        """Unload the LoRAs (diffusers' ``unload_lora_weights``): the experts render exactly as without them."""
        remove_loras(self._require_pipe())
        self.loras = []

    def close(self) -> None:
        """Remove hooks and drop every component so eviction frees the weights."""
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        compiled = self.settings.compile_transformer_2
        self.prompts.clear()
        self.passes.remove()
        pipe.remove_all_hooks()  # accelerate's model-offload hooks
        for name, component in list(pipe.components.items()):
            if hasattr(component, "modules"):
                _remove_diffusers_hooks(component)
            if component is not None:
                setattr(pipe, name, None)  # a traceback that still holds the pipeline then holds no weights
        if compiled:
            import torch

            torch._dynamo.reset()  # compiled code and its guards can keep the expert alive

    def _require_pipe(self) -> Any:
        if self.pipe is None:
            raise RuntimeError(f"the {FAMILY} model was unloaded")
        return self.pipe

    def _frame_size(self, plan: dict[str, Any]) -> tuple[int, int]:
        pipe = self.pipe
        multiple = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
        width, height = int(plan["width"]), int(plan["height"])
        if width % multiple or height % multiple or width <= 0 or height <= 0:
            raise ValueError(f"Wan2.2 renders sizes that are multiples of {multiple}; "
                             f"the plan asks for {width}x{height}")
        return width, height


def _step_callback(callback: Callable[[int, int], Any] | None, total: int) -> Callable[..., dict] | None:
    if callback is None:
        return None

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        callback(step + 1, total)  # an exception here (cancel) propagates out of the pipeline
        return {}

    return on_step_end


def _remove_diffusers_hooks(model: Any) -> None:
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            for name in reversed(list(registry.hooks)):
                registry.remove_hook(name, recurse=False)


def unload_wan(model: WanMotion) -> None:
    model.close()


register_family(FAMILY, load_wan, unload_wan)
