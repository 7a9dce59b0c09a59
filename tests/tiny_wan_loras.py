"""Tiny random LoRAs for the tiny Wan2.2 experts (tests/tiny_wan.py), in the key layouts real Wan2.2 LoRAs ship in.

- ``diffusers``: made with PEFT (``add_adapter``) and saved with diffusers' ``save_lora_weights``:
  ``transformer.blocks.0.attn1.to_q.lora_A.weight``.
- ``lightning``: the ComfyUI/Kohya layout of lightx2v/Wan2.2-Lightning
  (Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1 high_noise_model / low_noise_model; huggingface/diffusers#12147,
  #12074): ``diffusion_model.blocks.0.self_attn.q.lora_down.weight``, ``lora_up.weight`` and ``.alpha``.
- ``lightx2v``: lightx2v/Wan2.2-Distill-Loras ``wan2.2_i2v_A14b_{high,low}_noise_lora_rank64_lightx2v_4step_1022``
  (huggingface/diffusers#12535): lora_down/lora_up without alpha, ``.diff_b`` bias deltas, zeroed ``.diff``
  norm and modulation deltas, ``head.head.diff``/``diff_b``, and the text/time embedding and time projection.
- ``musubi``: the kohya musubi-tuner layout, ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` with ``.alpha``.

Shapes come from the tiny expert's own parameters, so each LoRA fits it exactly.
"""

from __future__ import annotations

from pathlib import Path

RANK = 4
LAYOUTS = ("diffusers", "lightning", "lightx2v", "musubi")
# Wan's original module names (the checkpoints ComfyUI loads) -> diffusers' WanTransformer3DModel names
BLOCK_MODULES = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
ZEROED_DIFFS = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k", "norm3")
EMBEDDINGS = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
              "text_embedding.2": "condition_embedder.text_embedder.linear_2",
              "time_embedding.0": "condition_embedder.time_embedder.linear_1",
              "time_embedding.2": "condition_embedder.time_embedder.linear_2",
              "time_projection.1": "condition_embedder.time_proj"}


def write_lora(layout: str, folder: Path, checkpoint: Path, seed: int, scale: float = 0.5) -> Path:
    """A LoRA file of ``layout`` for the tiny checkpoint's experts (both have the same shapes)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tiny_{layout}_{seed}.safetensors"
    if layout == "diffusers":
        _write_peft(path, checkpoint, seed)
        return path
    from safetensors.torch import save_file

    state = _comfy_state(_expert_shapes(checkpoint), seed, scale, lightx2v=layout == "lightx2v",
                         alpha=layout != "lightx2v")
    save_file(_musubi(state) if layout == "musubi" else state, str(path))
    return path


def _expert_shapes(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for shard in sorted((checkpoint / "transformer").glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


def _write_peft(path: Path, checkpoint: Path, seed: int) -> None:
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    expert = WanTransformer3DModel.from_pretrained(checkpoint / "transformer")
    torch.manual_seed(seed)
    # init_lora_weights=False: lora_B random too (PEFT's default zero B would leave the model unchanged)
    expert.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=False,
                                  target_modules=["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"]))
    WanImageToVideoPipeline.save_lora_weights(path.parent, transformer_lora_layers=get_peft_model_state_dict(expert),
                                              weight_name=path.name)


def _comfy_state(shapes: dict[str, tuple[int, ...]], seed: int, scale: float, lightx2v: bool, alpha: bool) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    def lora(theirs: str, ours: str) -> dict:
        out_features, in_features = shapes[f"{ours}.weight"]
        entry = {f"diffusion_model.{theirs}.lora_down.weight": random(RANK, in_features),
                 f"diffusion_model.{theirs}.lora_up.weight": random(out_features, RANK)}
        if alpha:
            entry[f"diffusion_model.{theirs}.alpha"] = torch.tensor(RANK / 2)
        if lightx2v:
            entry[f"diffusion_model.{theirs}.diff_b"] = random(out_features)
        return entry

    blocks = sorted({int(key.split(".")[1]) for key in shapes if key.startswith("blocks.")})
    state: dict = {}
    for i in blocks:
        for theirs, ours in BLOCK_MODULES.items():
            state.update(lora(f"blocks.{i}.{theirs}", f"blocks.{i}.{ours}"))
        if lightx2v:
            dim = shapes[f"blocks.{i}.norm2.weight"][0]
            state.update({f"diffusion_model.blocks.{i}.{norm}.diff": torch.zeros(dim) for norm in ZEROED_DIFFS})
            state[f"diffusion_model.blocks.{i}.norm3.diff_b"] = torch.zeros(dim)
            state[f"diffusion_model.blocks.{i}.modulation.diff"] = torch.zeros(shapes[f"blocks.{i}.scale_shift_table"])
    if lightx2v:
        for theirs, ours in EMBEDDINGS.items():
            state.update(lora(theirs, ours))
        state["diffusion_model.head.head.diff"] = random(*shapes["proj_out.weight"])
        state["diffusion_model.head.head.diff_b"] = random(shapes["proj_out.bias"][0])
    return state


def _musubi(state: dict) -> dict:
    """``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` -> ``lora_unet_blocks_0_self_attn_q.lora_down.weight``."""
    renamed = {}
    for key, value in state.items():
        name = key.removeprefix("diffusion_model.")
        module, suffix = (name.split(".lora_")[0], "lora_" + name.split(".lora_")[1]) if ".lora_" in name \
            else name.rsplit(".", 1)
        renamed[f"lora_unet_{module.replace('.', '_')}.{suffix}"] = value
    return renamed
