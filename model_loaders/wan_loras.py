"""A LoRA per Wan2.2 expert (step-distilled ones above all), through diffusers' own LoRA loader (PEFT).

``lora_high`` goes into ``transformer`` (the high-noise expert), ``lora_low``
into ``transformer_2`` (the low-noise expert), each with a strength. Files are
found in ComfyUI's ``loras`` folder or ``models/cinereel`` (through ComfyUI's
``folder_paths`` when it is loaded), else taken as a path. Both key layouts
load: diffusers/PEFT (``transformer.blocks.0.attn1.to_q.lora_A.weight``) and the
ComfyUI/Kohya/musubi layouts the Wan2.2 distillation LoRAs ship in
(``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` with ``.alpha``,
``.diff_b`` and ``.diff`` keys; ``lora_unet_blocks_0_self_attn_q...``), which
``WanLoraLoaderMixin.lora_state_dict`` converts with diffusers'
``_convert_non_diffusers_wan_lora_to_diffusers`` / ``_convert_musubi_wan_lora_to_diffusers``.
diffusers 0.42 loads all of them as published (huggingface/diffusers#12074 added
``load_into_transformer_2`` and the Lightning ``alpha`` keys, #12541 the
lightx2v 1022 ``head.head.diff`` keys that #12535 reported failing), so no
conversion of our own is needed.

Preflight reads only file headers: a missing or unreadable file, or a LoRA whose
keys match no module of the expert (another model's LoRA), is refused before any
weight loads. Importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# option name -> (the expert it loads into, the adapter name it gets there)
EXPERT_OF = {"lora_high": ("transformer", "cinereel_high"), "lora_low": ("transformer_2", "cinereel_low")}
EXPERT_WORDS = {"transformer": "high-noise expert (transformer)", "transformer_2": "low-noise expert (transformer_2)"}
NO_LORA = "none"  # the ComfyUI list's first entry; also accepted headless
COMFY_FOLDERS = ("loras", "cinereel")  # ComfyUI folder_paths names searched, in order
LORA_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class ExpertLora:
    option: str  # lora_high | lora_low
    name: str  # as the user gave it: a file in ComfyUI's loras folder, or a path
    strength: float = 1.0

    @property
    def expert(self) -> str:
        return EXPERT_OF[self.option][0]

    @property
    def adapter(self) -> str:
        return EXPERT_OF[self.option][1]

    def record(self, path: Path) -> dict[str, Any]:
        """What a call record says about this LoRA (``path``: the file it resolved to)."""
        return {"expert": self.expert, "option": self.option, "file": str(path), "strength": self.strength}


def chosen(name: Any) -> bool:
    return isinstance(name, str) and name.strip() not in ("", NO_LORA)


# -- where a LoRA file is ------------------------------------------------------------

def _comfy_folders() -> list[Path]:
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return []
    found: list[Path] = []
    for name in COMFY_FOLDERS:
        entry = folder_paths.folder_names_and_paths.get(name)
        paths = entry[0] if entry else [os.path.join(folder_paths.models_dir, name)]
        found.extend(Path(p) for p in paths)
    return found


def search_folders() -> list[Path]:
    """Where a LoRA given by name is looked for: ComfyUI's loras and cinereel model folders inside ComfyUI,
    ./models/cinereel headless."""
    return _comfy_folders() or [Path("models") / "cinereel"]


def lora_path(name: str) -> Path:
    """The file ``name`` means: a path, or a file (possibly in a subfolder) of a search folder."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if not path.is_absolute():
        for folder in search_folders():
            if (folder / name).is_file():
                return (folder / name).resolve()
    where = ", ".join(str(f) for f in search_folders())
    raise FileNotFoundError(f"LoRA file {name!r} not found (looked for that path and in {where}); put the "
                            ".safetensors file there or give its full path")


def lora_choices() -> list[str]:
    """The Motion loader's list: ``none``, every .safetensors file ComfyUI lists in its loras folders, then the
    .safetensors files directly in models/cinereel (its checkpoints are folders, whose shards are not LoRAs)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return [NO_LORA]
    names: list[str] = []
    if "loras" in folder_paths.folder_names_and_paths:
        names += [n for n in folder_paths.get_filename_list("loras") if n.endswith(LORA_SUFFIXES)]
    entry = folder_paths.folder_names_and_paths.get("cinereel")
    for folder in map(Path, entry[0] if entry else [os.path.join(folder_paths.models_dir, "cinereel")]):
        if folder.is_dir():
            names += [p.name for p in sorted(folder.glob("*.safetensors")) if p.is_file()]
    return [NO_LORA, *dict.fromkeys(names)]


# -- preflight: headers only ------------------------------------------------------------

def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def converted_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The LoRA's keys and shapes as diffusers loads them (after its Wan converters), without reading weights:
    every tensor but the scalar ``alpha``s (which the converter reads) is an empty meta tensor."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key) if key.endswith(".alpha") else torch.empty(
                tuple(f.get_slice(key).get_shape()), device="meta")
    converted = WanImageToVideoPipeline.lora_state_dict(state)
    return {key: tuple(value.shape) for key, value in converted.items()}


def expert_shapes(checkpoint: Path, expert: str) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of one expert of a diffusers checkpoint folder, from its safetensors headers."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted((checkpoint / expert).glob("*.safetensors")):
        shapes.update(_header_shapes(shard))
    return shapes


def key_problem(lora: ExpertLora, path: Path, lora_shapes: dict[str, tuple[int, ...]],
                expert: dict[str, tuple[int, ...]]) -> str | None:
    """Why the converted LoRA cannot go into ``expert`` (its parameter shapes): no key names one of its
    modules, or the shapes say another model size. None when it fits."""
    weights = {name[: -len(".weight")]: shape for name, shape in expert.items() if name.endswith(".weight")}
    matched, wrong = 0, []
    for key, shape in lora_shapes.items():
        module, _, part = key.removeprefix("transformer.").rpartition(".lora_")
        if not key.startswith("transformer.") or module not in weights:
            continue
        matched += 1
        target = weights[module]
        if len(shape) == 2 and len(target) == 2 and part in ("A.weight", "B.weight"):
            want, have = (target[1], shape[1]) if part == "A.weight" else (target[0], shape[0])
            if want != have:
                wrong.append(f"{module} takes {want} features, the LoRA has {have}")
    where = f"motion.{lora.option} {lora.name!r} ({path})"
    if not matched:
        sample = next(iter(lora_shapes), "no keys at all")
        return (f"{where}: none of its {len(lora_shapes)} keys matches a module of the Wan2.2 "
                f"{EXPERT_WORDS[lora.expert]} (first key after conversion: {sample}); it is a LoRA for another "
                f"model: choose a Wan2.2 I2V A14B LoRA (high_noise for lora_high, low_noise for lora_low)")
    if wrong:
        return (f"{where} was made for another model size: {'; '.join(wrong[:3])}; choose the LoRA made for "
                "Wan2.2 I2V A14B")
    return None


def lora_problems(loras: list[ExpertLora], checkpoint: Path | None) -> list[str]:
    """Everything wrong with the chosen LoRAs, from file headers only (nothing loads). ``checkpoint`` None:
    the folder is not there yet (its own problem is reported), so only the files are checked."""
    problems: list[str] = []
    if loras and importlib.util.find_spec("peft") is None:
        problems.append("motion LoRAs need the peft package (diffusers loads LoRAs through it): pip install peft")
    for lora in loras:
        try:
            path = lora_path(lora.name)
        except FileNotFoundError as exc:
            problems.append(f"motion.{lora.option}: {exc}")
            continue
        try:
            shapes = converted_shapes(path)
        except Exception as exc:  # noqa: BLE001 - a corrupt header or a key layout no converter knows
            problems.append(f"motion.{lora.option} {lora.name!r} ({path}) cannot be read as a Wan LoRA "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); give a .safetensors "
                            "LoRA for Wan2.2 I2V A14B in the diffusers/PEFT or ComfyUI/Kohya key layout")
            continue
        if checkpoint is not None:
            problem = key_problem(lora, path, shapes, expert_shapes(checkpoint, lora.expert))
            if problem:
                problems.append(problem)
    return problems


# -- loading into and out of the pipeline -------------------------------------------------

def apply_loras(pipe: Any, loras: list[tuple[ExpertLora, Path]]) -> None:
    """Load each LoRA file into its expert with diffusers' ``load_lora_weights`` (``load_into_transformer_2``
    for the low-noise one) and activate them at their strengths with ``set_adapters``."""
    for lora, path in loras:
        pipe.load_lora_weights(str(path), adapter_name=lora.adapter,
                               load_into_transformer_2=lora.expert == "transformer_2")
    if loras:
        pipe.set_adapters([lora.adapter for lora, _ in loras], adapter_weights=[lora.strength for lora, _ in loras])


def remove_loras(pipe: Any) -> None:
    """Drop every LoRA layer from both experts: the base weights were never changed (nothing was fused),
    so the pipeline renders exactly as before they loaded."""
    if any(pipe.get_list_adapters().values()):
        pipe.unload_lora_weights()
