"""The real keyframe backend: FLUX.2 [klein] through diffusers' ``Flux2KleinPipeline``.

Registers the model family ``flux2-klein``. Same interface as the preview
``StoryboardKeyframes`` (a master portrait per character, then keyframes that
reference those portraits), plus an optional per-step ``callback(step, total)``
that may raise to cancel a render.

Handle options (``ModelHandle.options``), each applied with diffusers' own API:

- ``offload``: ``"none"`` (default), ``"model"`` (``enable_model_cpu_offload``) or
  ``"group"`` (``enable_group_offload``, leaf level, CUDA streams). Both need a CUDA GPU.
- ``fp8_storage``: ``False`` (default). Transformer weights stored as float8 e4m3
  and upcast per layer (``enable_layerwise_casting``).
- ``first_block_cache``: threshold, ``0.05`` (default); ``0`` turns it off
  (diffusers' ``FirstBlockCacheConfig`` hooks over the single-stream blocks, see
  ``enable_first_block_cache``).
- ``attention_backend``: ``"native"`` (default) or another diffusers attention backend.
- ``steps`` / ``guidance``: denoising steps and guidance scale; defaults below.

Reference strength (``shot["ref_weight"]``, 0..1): FLUX.2 conditions on
reference images by appending their latent tokens to the image tokens, so that
text, image and reference tokens attend to one another in every block. Here
``ref_weight`` multiplies every query's (unnormalised) attention weight on each
reference token: an additive bias of ``log(ref_weight)`` on the reference
keys, passed to the stock attention processors as ``attention_mask`` through
the pipeline's ``attention_kwargs``. 1 is the model's own conditioning; as the
weight goes to 0 the text and image tokens stop seeing the references, and the
render tends to the unconditioned one. 0 drops the references (the same image
as no references, without encoding them).

Nothing heavy is imported at module import: torch, diffusers and PIL are
imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model_layouts
from .checkpoints import resolve_device
from .handles import LOADER_SETTINGS, ModelHandle
from .prompt_embeddings import PromptEmbeddings
from .residency import register_family

if TYPE_CHECKING:
    import torch
    from diffusers import Flux2KleinPipeline
    from PIL.Image import Image

log = logging.getLogger("cinereel.flux2")

FAMILY = "flux2-klein"

# FLUX.2 [klein] 4B is step- and guidance-distilled: Black Forest Labs' README
# (github.com/black-forest-labs/flux2, "Model Overview" and "Distilled vs Base")
# recommends it as the "Distilled (4-step)" model, and its model_index.json sets
# is_distilled=true, so Flux2KleinPipeline runs no guidance pass: 1.0 = no CFG.
# The undistilled [klein] Base checkpoints want ~50 steps and guidance > 1 (diffusers' example: 4.0).
DEFAULT_STEPS = 4
DEFAULT_GUIDANCE = 1.0
DEFAULT_FIRST_BLOCK_CACHE = 0.05
DEFAULT_REF_WEIGHT = 0.75

OFFLOAD_MODES = ("none", "model", "group")
# Backends that add a float attention mask to the logits, which ref_weight < 1 needs. The flash and sage
# kernels refuse masks, and the varlen ones read a mask as a boolean key-padding mask.
BIAS_BACKENDS = frozenset({"native", "_native_math", "_native_efficient"})

TEXT_TOKENS = 512  # Flux2KleinPipeline pads every prompt to max_sequence_length tokens
MAX_REFERENCE_AREA = 1024 * 1024  # the pipeline downsizes larger reference images to this area
MAX_PORTRAIT_SIDE = 1024

StepCallback = Callable[[int, int], None]


# -- options -------------------------------------------------------------------

@dataclass(frozen=True)
class Flux2Options:
    offload: str = "none"
    fp8_storage: bool = False
    first_block_cache: float = DEFAULT_FIRST_BLOCK_CACHE
    attention_backend: str = "native"
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE

    @classmethod
    def from_handle(cls, handle: ModelHandle) -> Flux2Options:
        unknown = set(dict(handle.options)) - set(cls.__dataclass_fields__) - LOADER_SETTINGS
        if unknown:
            log.warning("ignoring unknown %s options: %s", FAMILY, ", ".join(sorted(unknown)))
        return cls(
            offload=_choice("offload", handle.option("offload", "none"), OFFLOAD_MODES),
            fp8_storage=_boolean("fp8_storage", handle.option("fp8_storage", False)),
            first_block_cache=_number("first_block_cache", handle.option("first_block_cache",
                                                                         DEFAULT_FIRST_BLOCK_CACHE), 0.0, 1.0),
            attention_backend=_choice("attention_backend", handle.option("attention_backend", "native"),
                                      attention_backends()),
            steps=int(_number("steps", handle.option("steps", DEFAULT_STEPS), 1, 1000, integer=True)),
            guidance=_number("guidance", handle.option("guidance", DEFAULT_GUIDANCE), 0.0, 100.0),
        )


def attention_backends() -> tuple[str, ...]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return tuple(sorted(backend.value for backend in AttentionBackendName))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{FAMILY} option {name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{FAMILY} option {name} must be true or false; got {value!r}")
    return value


def _number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ValueError(f"{FAMILY} option {name} must be {what} from {low:g} to {high:g}; got {value!r}")
    return float(value)


# -- checkpoint ----------------------------------------------------------------

def resolve_checkpoint(checkpoint: str, allow_download: bool = False) -> Path:
    """A complete local diffusers folder for ``checkpoint`` (a folder, or a hub id in the hub cache)."""
    return model_layouts.resolve(FAMILY, checkpoint, allow_download)


# -- loading -------------------------------------------------------------------

def load_flux2(handle: ModelHandle) -> Flux2KleinKeyframes:
    """Load FLUX.2 klein from ``handle.checkpoint`` with the handle's dtype, device and options."""
    import torch
    from diffusers import Flux2KleinPipeline

    options = Flux2Options.from_handle(handle)
    device = resolve_device(handle.device)
    if options.offload != "none" and device.type != "cuda":
        raise ValueError(f"{FAMILY} option offload={options.offload!r} needs a CUDA GPU: it keeps the weights in CPU "
                         f"memory and moves them to the GPU as they run; the device here is {device.type}. "
                         f"Use offload='none'.")
    folder = resolve_checkpoint(handle.checkpoint, bool(handle.option("allow_download", False)))
    dtype = getattr(torch, handle.dtype)
    pipe = Flux2KleinPipeline.from_pretrained(folder, dtype=dtype, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)  # progress goes through the step callback
    configure_pipeline(pipe, options, dtype, device)
    return Flux2KleinKeyframes(pipe, options, dtype, device)


def configure_pipeline(pipe: Flux2KleinPipeline, options: Flux2Options, dtype: torch.dtype,
                       device: torch.device) -> None:
    """Apply the options to a freshly loaded pipeline, then place it on ``device``."""
    import torch

    if options.fp8_storage:
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if options.first_block_cache > 0:
        enable_first_block_cache(pipe.transformer, options.first_block_cache)
    set_attention_backend(pipe.transformer, options.attention_backend)
    apply_offload(pipe, options.offload, device)


def enable_first_block_cache(transformer: Any, threshold: float) -> None:
    """diffusers' First Block Cache hooks, spanning the transformer's single-stream blocks.

    ``transformer.enable_cache(FirstBlockCacheConfig(...))`` would hook the first
    double-stream block and the last single-stream block, whose outputs differ in
    layout (a (text, image) tuple vs one concatenated tensor): in diffusers 0.42
    the first render then fails with a TypeError (huggingface/diffusers#14280;
    fix proposed in #14359). The single-stream blocks share one layout and hold
    most of the compute (20 of klein 4B's 25 blocks), so the cache spans them:
    when the first one's residual barely changes from the previous step, the
    other single-stream blocks are skipped and their cached residual is reused.
    """
    import torch
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    stack = torch.nn.Module()  # a view for apply_first_block_cache: the hooks go on the transformer's own blocks
    stack.single_transformer_blocks = transformer.single_transformer_blocks
    apply_first_block_cache(stack, FirstBlockCacheConfig(threshold=threshold))


def set_attention_backend(transformer: Any, backend: str) -> None:
    """Set the backend on the transformer's attention processors only.

    ``set_attention_backend`` also makes the backend the process-wide default for
    processors that have none; that is restored so other models are unaffected.
    """
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    previous, _ = _AttentionBackendRegistry.get_active_backend()
    try:
        transformer.set_attention_backend(backend)
    except (ImportError, RuntimeError, ValueError) as err:
        raise ValueError(f"{FAMILY} option attention_backend={backend!r} cannot be used here: {err}") from err
    finally:
        _AttentionBackendRegistry.set_active_backend(previous)


def apply_offload(pipe: Flux2KleinPipeline, mode: str, device: torch.device) -> None:
    """Place the pipeline: all on ``device``, or offloaded to CPU memory and run on ``device``."""
    import torch

    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        # Leaf-level groups prefetched on a CUDA stream: the lowest VRAM at little cost (diffusers' recommendation).
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="leaf_level",
                                  use_stream=device.type == "cuda")


def unload_flux2(model: Flux2KleinKeyframes) -> None:
    model.close()


# -- prompts and images ----------------------------------------------------------

def portrait_prompt(character: dict[str, Any], plan: dict[str, Any]) -> str:
    wardrobe = ", ".join(character["wardrobe"])
    return (f"Head-and-shoulders portrait photograph of {character['name']}, {character['description']}, "
            f"wearing {wardrobe}. Facing the camera, plain neutral background, {plan['mood']} mood, "
            f"{plan['time_of_day']} light, photorealistic, sharp focus on the face.")


def portrait_size(plan: dict[str, Any], multiple: int = 16) -> int:
    return min(int(plan["height"]), MAX_PORTRAIT_SIDE) // multiple * multiple


def fit_reference(image: Image, multiple: int, max_area: int = MAX_REFERENCE_AREA) -> Image:
    """``image`` at a size the pipeline uses as is (area and sides it would otherwise change)."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    scale = min(1.0, math.sqrt(max_area / (image.width * image.height)))
    size = tuple(max(multiple, int(side * scale) // multiple * multiple) for side in image.size)
    return image if size == image.size else image.resize(size, PILImage.Resampling.LANCZOS)


def shot_references(shot: dict[str, Any], portraits: dict[str, Image]) -> list[Image]:
    """The portraits of the characters in ``shot``, in the shot's order."""
    missing = [name for name in shot.get("characters", []) if name not in portraits]
    if missing:
        raise ValueError(f"shot {shot.get('id', '?')} shows {', '.join(missing)} but no portrait of them was given")
    return [portraits[name] for name in shot.get("characters", [])]


def reference_attention_bias(scene_tokens: int, reference_tokens: int, weight: float, dtype: torch.dtype,
                             device: torch.device) -> torch.Tensor:
    """Additive attention bias over FLUX.2's joint sequence ``[text, image, references]``.

    ``log(weight)`` on every reference key scales each query's unnormalised
    attention weight on the references by ``weight``; shape (1, 1, 1, keys)
    broadcasts over batch, heads and queries.
    """
    import torch

    if not 0 < weight <= 1:
        raise ValueError(f"reference weight must be in (0, 1], got {weight}")
    bias = torch.zeros(1, 1, 1, scene_tokens + reference_tokens, dtype=dtype, device=device)
    bias[..., scene_tokens:] = math.log(weight)
    return bias


def _on_step_end(callback: StepCallback, total: int) -> Callable[..., dict[str, Any]]:
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        callback(step + 1, total)
        return {}

    return on_step_end


# -- the backend -----------------------------------------------------------------

class Flux2KleinKeyframes:
    """Portraits and reference-conditioned keyframes from one resident Flux2KleinPipeline."""

    engine = FAMILY

    def __init__(self, pipe: Flux2KleinPipeline, options: Flux2Options, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.pipeline: Flux2KleinPipeline | None = pipe
        self._last_call: dict[str, Any] = {}
        self.options = options
        self.dtype = dtype
        self.device = device
        self.prompts = PromptEmbeddings()  # prompt -> the text encoder's output, computed once per phase

    def encode_prompts(self, characters: Sequence[dict[str, Any]], shots: Sequence[dict[str, Any]],
                       plan: dict[str, Any]) -> int:
        """Encode the phase's prompts once (the portraits of ``characters``, the keyframes of ``shots``, and
        the negative prompts when the model runs a guidance pass) with the pipeline's ``encode_prompt``, so the
        renders run no text encoder, and park it meanwhile (``prompt_embeddings.py``). Returns how many."""
        prompts = {portrait_prompt(character, plan) for character in characters}
        prompts |= {shot["prompt"] for shot in shots}
        if self._guides:  # the pipeline encodes "" for a guidance pass without a negative prompt
            prompts |= {shot.get("negative_prompt") or "" for shot in shots} | {""}
        return self.prompts.encode(self._pipe, prompts, self._encode, offloaded=self.options.offload != "none")

    def _encode(self, prompt: str) -> Any:
        pipe = self._pipe
        return pipe.encode_prompt(prompt, device=pipe._execution_device, max_sequence_length=TEXT_TOKENS)[0]

    def render_portrait(self, character: dict[str, Any], plan: dict[str, Any], seed: int,
                        callback: StepCallback | None = None) -> Image:
        size = portrait_size(plan, self._multiple)
        return self._generate(portrait_prompt(character, plan), "", size, size, [], 1.0, seed, callback)

    def render_keyframe(self, shot: dict[str, Any], plan: dict[str, Any], portraits: dict[str, Image], seed: int,
                        callback: StepCallback | None = None) -> Image:
        """A keyframe at the plan's size, conditioned on the portraits of the shot's characters.

        ``shot["negative_prompt"]`` only applies when the pipeline runs a guidance
        pass (guidance > 1 on an undistilled checkpoint); the distilled klein 4B
        has none, so there it is ignored.
        """
        weight = float(shot.get("ref_weight", DEFAULT_REF_WEIGHT))
        if not 0 <= weight <= 1:
            raise ValueError(f"shot {shot.get('id', '?')} ref_weight must be from 0 to 1, got {weight}")
        references = shot_references(shot, portraits) if weight > 0 else []
        return self._generate(shot["prompt"], shot.get("negative_prompt", ""), int(plan["width"]),
                              int(plan["height"]), references, weight, seed, callback)

    def last_call(self) -> dict[str, Any]:
        """What the last render sent to the pipeline: prompt, negative prompt (None when the distilled model
        runs no guidance pass, so none was sent), seed, steps, guidance, size and references."""
        return dict(self._last_call)

    def close(self) -> None:
        """Remove the offload hooks and drop every reference to the components, so eviction frees them."""
        pipe, self.pipeline = self.pipeline, None
        self.prompts.clear()
        if pipe is None:
            return
        pipe.remove_all_hooks()
        for name in list(pipe.components):
            setattr(pipe, name, None)

    # -- internals ---------------------------------------------------------------
    @property
    def _pipe(self) -> Flux2KleinPipeline:
        if self.pipeline is None:
            raise RuntimeError(f"the {FAMILY} model was unloaded")
        return self.pipeline

    @property
    def _multiple(self) -> int:
        return self._pipe.vae_scale_factor * 2  # pixels per latent token side

    @property
    def _guides(self) -> bool:
        return self.options.guidance > 1 and not self._pipe.config.is_distilled

    def _generate(self, prompt: str, negative_prompt: str, width: int, height: int, references: list[Image],
                  ref_weight: float, seed: int, callback: StepCallback | None) -> Image:
        import torch

        references = [fit_reference(image, self._multiple) for image in references]
        encoded = self.prompts.get(prompt)
        kwargs: dict[str, Any] = {
            **({"prompt_embeds": encoded} if encoded is not None else {"prompt": prompt}),
            "width": width, "height": height, "num_inference_steps": self.options.steps,
            "guidance_scale": self.options.guidance, "max_sequence_length": TEXT_TOKENS,
            "generator": torch.Generator("cpu").manual_seed(seed),  # the same noise on any device
        }
        if references:
            kwargs["image"] = references
        bias = self._reference_bias(width, height, references, ref_weight)
        if bias is not None:
            kwargs["attention_kwargs"] = {"attention_mask": bias}
        guided_negative = bool(negative_prompt) and self._guides
        negative_encoded = self.prompts.get(negative_prompt or "") if self._guides else None
        if encoded is None or (self._guides and negative_encoded is None):
            self.prompts.unpark(self._pipe)  # a prompt nobody encoded for the phase: the pipeline encodes it
        if negative_encoded is not None:
            kwargs["negative_prompt_embeds"] = negative_encoded
        elif guided_negative:
            kwargs["negative_prompt_embeds"] = self._encode(negative_prompt)
        self._last_call = {"renderer": FAMILY, "prompt": prompt, "negative_prompt": negative_prompt if guided_negative
                           else None, "seed": seed, "steps": self.options.steps, "guidance": self.options.guidance,
                           "width": width, "height": height, "references": len(references), "ref_weight": ref_weight,
                           "prompt_encoded": "once for the phase" if encoded is not None else "in this render"}
        if callback is not None:
            kwargs["callback_on_step_end"] = _on_step_end(callback, self.options.steps)
        try:
            return self._pipe(**kwargs).images[0]
        except BaseException:
            # A cancelled render skips the pipeline's own clean-up: reset the cache state and offload hooks.
            self._pipe.maybe_free_model_hooks()
            raise

    def _reference_bias(self, width: int, height: int, references: list[Image],
                        weight: float) -> torch.Tensor | None:
        if not references or weight >= 1:
            return None
        if self.options.attention_backend not in BIAS_BACKENDS:
            raise ValueError(f"ref_weight {weight:g} < 1 needs an attention backend that takes a float mask "
                             f"({', '.join(sorted(BIAS_BACKENDS))}); {self.options.attention_backend!r} does not. "
                             f"Use ref_weight 1 or another attention_backend.")
        m = self._multiple
        scene_tokens = TEXT_TOKENS + (height // m) * (width // m)
        reference_tokens = sum((image.height // m) * (image.width // m) for image in references)
        return reference_attention_bias(scene_tokens, reference_tokens, weight, self.dtype, self.device)


register_family(FAMILY, load_flux2, unload_flux2)
