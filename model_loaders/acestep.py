"""The real music backend: ACE-Step 1.5 through diffusers' ``AceStepPipeline``.

Registers the model family ``acestep``. Same interface as the preview
``SynthMusic``: ``compose(plan, duration_s, tempo_bpm, seed, sample_rate)``
returns a float32 (n, 2) bed of exactly ``round(duration_s * sample_rate)``
samples, plus an optional per-step ``callback(step, total)`` that may raise to
cancel. Always instrumental: the lyrics are ACE-Step's ``[Instrumental]`` marker.

Nothing is downloaded at run time: the checkpoint is a local diffusers folder
or a hub id already in the local hub cache (safetensors only, no remote code).

Handle options: ``steps`` (default 8), ``guidance`` (default 1.0) and ``shift``
(default 3.0). Torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model_layouts
from .checkpoints import resolve_device
from .handles import LOADER_SETTINGS, ModelHandle
from .residency import register_family

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("cinereel.acestep")

FAMILY = "acestep"
DEFAULT_CHECKPOINT = "ACE-Step/acestep-v15-xl-turbo-diffusers"

# The XL turbo checkpoint is guidance-distilled. diffusers' ACE-Step page (docs/source/en/api/pipelines/
# ace_step.md, "Variants") gives turbo: 8 steps, CFG off (guidance ignored), shift 3.0; base/SFT take
# guidance 7.0 and often 30-60 steps.
DEFAULT_STEPS = 8
DEFAULT_GUIDANCE = 1.0
DEFAULT_SHIFT = 3.0
# ACE-Step 1.5's inference docs (INFERENCE.md, GenerationParams.lyrics): "[Instrumental]" for instrumental tracks.
INSTRUMENTAL_LYRICS = "[Instrumental]"
MIN_MODEL_S, MAX_MODEL_S = 10.0, 600.0  # the durations ACE-Step 1.5 is made for; shorter beds are cut from 10 s
FADE_S = 0.05
OPTIONS = frozenset({"steps", "guidance", "shift"})

StepCallback = Callable[[int, int], None]


# -- checkpoint ----------------------------------------------------------------

def resolve_checkpoint(checkpoint: str, allow_download: bool = False) -> Path:
    """A complete diffusers folder: ``checkpoint`` itself, or a hub id found in the local hub cache."""
    return model_layouts.resolve(FAMILY, checkpoint, allow_download)


# -- options and prompt --------------------------------------------------------

def sampling_options(handle: ModelHandle) -> tuple[int, float, float]:
    """(steps, guidance, shift) from the handle's options, validated."""
    unknown = set(dict(handle.options)) - OPTIONS - LOADER_SETTINGS
    if unknown:
        log.warning("ignoring unknown %s options: %s", FAMILY, ", ".join(sorted(unknown)))
    steps = handle.option("steps", DEFAULT_STEPS)
    guidance = handle.option("guidance", DEFAULT_GUIDANCE)
    shift = handle.option("shift", DEFAULT_SHIFT)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 200:
        raise ValueError(f"{FAMILY} option steps must be an integer from 1 to 200; got {steps!r}")
    for name, value, low, high in (("guidance", guidance, 0.0, 30.0), ("shift", shift, 0.1, 10.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{FAMILY} option {name} must be a number from {low:g} to {high:g}; got {value!r}")
    return steps, float(guidance), float(shift)


def music_prompt(plan: dict[str, Any], tempo_bpm: float) -> str:
    """ACE-Step caption: style, mood, place and tempo in plain words, as its docs advise."""
    from .synth import mood_style

    style = mood_style(plan["mood"]).name
    character = "" if style in ("neutral", plan["mood"].strip().lower()) else f", {style} character"
    return (f"Instrumental cinematic film score, {plan['mood']} mood{character}, evoking {plan['locale']} at "
            f"{plan['time_of_day']}, {round(tempo_bpm)} BPM, no vocals, an understated mix that sits under narration.")


# -- the backend -----------------------------------------------------------------

class AceStepMusic:
    engine = "acestep"

    def __init__(self, pipe: Any, steps: int, guidance: float, shift: float) -> None:
        self.pipe = pipe
        self.steps, self.guidance, self.shift = steps, guidance, shift

    @property
    def native_sample_rate(self) -> int:
        return int(self.pipe.sample_rate)

    def compose(self, plan: dict[str, Any], duration_s: float, tempo_bpm: float | None, seed: int,
                sample_rate: int = 48000, callback: StepCallback | None = None) -> "np.ndarray":
        """An instrumental stereo bed, float32 (round(duration_s * sample_rate), 2), deterministic for ``seed``."""
        from .synth import mood_tempo

        n = _length(duration_s, sample_rate)
        tempo = float(mood_tempo(plan["mood"]) if tempo_bpm is None else tempo_bpm)
        if not (math.isfinite(tempo) and 30.0 <= tempo <= 300.0):
            raise ValueError(f"tempo must be between 30 and 300 BPM, got {tempo_bpm}")
        audio = self._generate(music_prompt(plan, tempo), max(float(duration_s), MIN_MODEL_S), tempo, seed, callback)
        from .sampling import fit_length, resample

        if self.native_sample_rate != sample_rate:
            audio = resample(audio, self.native_sample_rate, sample_rate)
        return fit_length(audio, n, sample_rate, FADE_S, fade_end=True)

    def _generate(self, prompt: str, seconds: float, tempo: float, seed: int,
                  callback: StepCallback | None) -> "np.ndarray":
        import torch

        total = self.steps

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if callback is not None:
                callback(step + 1, total)  # an exception here ends the denoising loop: the render is cancelled
            return tensors

        # A CPU generator gives the same starting noise on every device.
        generator = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        with torch.inference_mode():
            out = self.pipe(prompt=prompt, lyrics=INSTRUMENTAL_LYRICS, vocal_language="unknown",
                            audio_duration=seconds, num_inference_steps=self.steps, guidance_scale=self.guidance,
                            shift=self.shift, bpm=int(round(tempo)), timesignature="4", generator=generator,
                            output_type="pt", callback_on_step_end=on_step_end)
        return out.audios[0].float().cpu().numpy().T.astype("float32")  # (channels, n) -> (n, channels)

    def close(self) -> None:
        self.pipe = None


def _length(duration_s: float, sample_rate: int) -> int:
    duration_s = float(duration_s)
    if not (math.isfinite(duration_s) and 0.0 < duration_s <= MAX_MODEL_S):
        raise ValueError(f"music duration must be above 0 and at most {MAX_MODEL_S:g} s, got {duration_s}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return round(duration_s * int(sample_rate))


def load_acestep(handle: ModelHandle) -> AceStepMusic:
    """ACE-Step 1.5 from ``handle.checkpoint`` with the handle's dtype, device and sampling options."""
    import torch
    from diffusers import AceStepPipeline

    steps, guidance, shift = sampling_options(handle)
    device = resolve_device(handle.device)
    folder = resolve_checkpoint(handle.checkpoint, bool(handle.option("allow_download", False)))
    pipe = AceStepPipeline.from_pretrained(folder, dtype=getattr(torch, handle.dtype), use_safetensors=True,
                                           local_files_only=True)
    pipe.set_progress_bar_config(disable=True)  # progress goes through the step callback
    return AceStepMusic(pipe.to(device), steps, guidance, shift)


def unload_acestep(model: AceStepMusic) -> None:
    model.close()


register_family(FAMILY, load_acestep, unload_acestep)
