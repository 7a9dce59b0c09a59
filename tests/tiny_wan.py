"""A tiny random-weight Wan2.2 I2V A14B checkpoint for tests: the real classes, the real folder layout.

``Wan-AI/Wan2.2-I2V-A14B-Diffusers`` is a ``WanImageToVideoPipeline`` with two
``WanTransformer3DModel`` experts (``transformer`` for high noise,
``transformer_2`` for low noise, switched at ``boundary_ratio`` 0.9), an
``AutoencoderKLWan``, a ``UMT5EncoderModel`` with a T5 tokenizer, a
``UniPCMultistepScheduler`` in flow mode, and no image encoder. This builds the
same thing with layers a few dozen wide, saves it with ``save_pretrained``
(safetensors; the experts and text encoder sharded with an index, as published) and caches it across test sessions, keyed by the library versions
and this file, so CineReel's loader reads it exactly as it reads the real one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

BOUNDARY_RATIO = 0.9
FLOW_SHIFT = 5.0
TEXT_DIM = 32

# A generated word list for the UMT5 tokenizer: enough pieces that any prompt
# tokenizes to more than <unk> (single letters catch the rest).
_WORDS = ("a the of and in on at to with walks toward camera wide alley neon signs lone astronaut woman city night "
          "dusk light rain street slow push static hero shot close blurry low quality").split()
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tiny_wan_checkpoint() -> Path:
    """The folder of the tiny checkpoint, built on first use (a few seconds) and reused after."""
    from cinereel_testkit import cached_build

    return cached_build("wan", _build_key(), _save)


def _build_key() -> str:
    import diffusers
    import tokenizers
    import torch
    import transformers

    versions = [torch.__version__, diffusers.__version__, transformers.__version__, tokenizers.__version__]
    digest = hashlib.sha256(json.dumps(versions).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _save(folder: Path) -> None:
    import shutil

    pipe = build_pipeline()
    pipe.save_pretrained(folder, safe_serialization=True)
    # The published experts and UMT5 text encoder are sharded with an index (the experts in 12 shards);
    # shard the tiny ones too, so the loader and the layout check read an index as they must there.
    for name in ("transformer", "transformer_2", "text_encoder"):
        shutil.rmtree(folder / name)
        getattr(pipe, name).save_pretrained(folder / name, max_shard_size="40KB", safe_serialization=True)
    # transformers 5 saves the tokenizer as T5Tokenizer; the published checkpoint names the
    # T5TokenizerFast alias, and the loader must accept that spelling, so keep it.
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "T5TokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def build_pipeline():
    """The tiny pipeline in memory (random weights, seeded)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    # No residual blocks on the way down and up (the middle block keeps its two): at 480p on a CPU the VAE
    # encodes and decodes a 25-frame clip in 16 s instead of 36 s, most of it conv3d and RMS norms at full size.
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=0,
                           temperal_downsample=[False, True, True])
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                          flow_shift=FLOW_SHIFT, num_train_timesteps=1000),
        transformer=_expert(),
        transformer_2=_expert(),
        boundary_ratio=BOUNDARY_RATIO,
    )


def _expert():
    from diffusers import WanTransformer3DModel

    # in_channels 36 = 16 noisy latent + 4 first-frame mask + 16 image-condition latent channels, as in the A14B;
    # image_dim None: Wan2.2 I2V has no CLIP image branch.
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", image_dim=None, rope_max_seq_len=1024,  # the A14B's
    ).eval()


def build_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{word}", -5.0) for word in _WORDS]
    vocab += [(letter, -10.0) for letter in _LETTERS] + [(f"▁{letter}", -9.0) for letter in _LETTERS]
    extra_ids = 8
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids)
