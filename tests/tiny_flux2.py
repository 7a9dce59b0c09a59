"""A tiny random-weight FLUX.2 [klein] checkpoint in the real repository's layout.

Same classes as ``black-forest-labs/FLUX.2-klein-4B`` (``Flux2KleinPipeline``,
``Flux2Transformer2DModel``, ``AutoencoderKLFlux2``, ``Qwen3ForCausalLM`` with
28 layers so the default text-encoder output layers (9, 18, 27) exist,
``Qwen2TokenizerFast`` with a Qwen3-style chat template, and the FLUX.2
scheduler config), shrunk to a few hundred kilobytes. Saved with
``save_pretrained`` (safetensors, the text encoder sharded like the real one)
so tests load it through the same loader as the real checkpoint.

Built once per library versions and recipe, cached under
``$TMPDIR/cinereel-tiny/flux2-<hash>/``. The build happens in a sibling temp
folder that is renamed into place, so a crash never leaves a half-built cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Real model_index.json of FLUX.2-klein-4B: the step- and guidance-distilled variant.
IS_DISTILLED = True
TEXT_HIDDEN = 16
TEXT_LAYERS = 28
LATENT_CHANNELS = 4

# Qwen3's template for a user turn, with the empty think block `enable_thinking=False` asks for.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def _cache_key() -> str:
    import diffusers
    import torch
    import transformers

    recipe = Path(__file__).read_bytes()
    versions = f"{diffusers.__version__}|{transformers.__version__}|{torch.__version__}".encode()
    return hashlib.sha256(versions + recipe).hexdigest()[:16]


def _tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2TokenizerFast

    # A byte-level BPE with no merges: every byte is a token, as in Qwen's vocabulary's first 256 entries.
    vocab = {char: index for index, char in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)})
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", model_max_length=131072)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_encoder(vocab_size: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=32,
                         num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    return Qwen3ForCausalLM(config).eval()


def _transformer():
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * TEXT_HIDDEN, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )


def _vae():
    from diffusers import AutoencoderKLFlux2

    # Four blocks, as in the real VAE, so the 8x spatial compression (and 16 px per token) is kept.
    return AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=LATENT_CHANNELS,
                              norm_num_groups=4)


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.2's scheduler config.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096, time_shift_type="exponential")


def build(target: Path) -> None:
    """Write the tiny checkpoint into ``target`` (which must not exist yet)."""
    import torch
    from diffusers import Flux2KleinPipeline

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    pipe = Flux2KleinPipeline(scheduler=_scheduler(), vae=_vae(), text_encoder=_text_encoder(len(tokenizer)),
                              tokenizer=tokenizer, transformer=_transformer(), is_distilled=IS_DISTILLED)
    pipe.save_pretrained(target, safe_serialization=True)
    # Shard the text encoder as the real repository does (model.safetensors.index.json + shards).
    pipe.text_encoder.save_pretrained(target / "text_encoder", max_shard_size="200KB")
    (target / "text_encoder" / "model.safetensors").unlink(missing_ok=True)
    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    # transformers 5 names the class Qwen2Tokenizer; the published model_index.json says Qwen2TokenizerFast.
    index["tokenizer"] = ["transformers", "Qwen2TokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2))


def tiny_flux2_checkpoint() -> Path:
    """The cached tiny checkpoint folder, built on first use."""
    from cinereel_testkit import cached_build

    return cached_build("flux2", _cache_key(), build)
