"""A tiny random-weight ACE-Step 1.5 checkpoint in the real diffusers repository's layout.

Same classes as ``ACE-Step/acestep-v15-xl-turbo-diffusers`` (``AceStepPipeline``,
``AceStepTransformer1DModel`` flagged turbo with the XL's wider DiT than
condition encoder, ``AceStepConditionEncoder``, ``AutoencoderOobleck``,
``Qwen3Model`` text encoder, ``Qwen2TokenizerFast``, the flow-matching scheduler
configured as the pipeline expects), shrunk to a few hundred kilobytes. The VAE
keeps the real geometry: stereo, 48 kHz, 1920 samples per latent frame (25 Hz).
Saved with ``save_pretrained`` (safetensors) so tests load it through the same
loader as the real checkpoint.

Built once per library versions and recipe, cached under
``$TMPDIR/cinereel-tiny/acestep-<hash>/``; the build happens in a sibling temp
folder renamed into place, so a crash never leaves a half-built cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ACOUSTIC_DIM = 8
TEXT_HIDDEN = 16
CONDITION_HIDDEN = 32
DIT_HIDDEN = 48
DOWNSAMPLING_RATIOS = (2, 4, 4, 6, 10)  # the real VAE's: 1920 samples per latent frame
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _cache_key() -> str:
    import diffusers
    import torch
    import transformers

    versions = f"{diffusers.__version__}|{transformers.__version__}|{torch.__version__}".encode()
    return hashlib.sha256(versions + Path(__file__).read_bytes()).hexdigest()[:16]


def _tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2TokenizerFast

    # A byte-level BPE with no merges: every byte is a token, as in Qwen's vocabulary's first 256 entries.
    vocab = {char: index for index, char in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)})
    return Qwen2TokenizerFast(vocab=vocab, merges=[], unk_token=None, eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>", model_max_length=32768)


def _text_encoder(vocab_size: int):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=4096)
    return Qwen3Model(config).eval()


def _transformer():
    from diffusers import AceStepTransformer1DModel

    return AceStepTransformer1DModel(
        hidden_size=DIT_HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, in_channels=3 * ACOUSTIC_DIM, audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        patch_size=2, rope_theta=10000.0, sliding_window=16, encoder_hidden_size=CONDITION_HIDDEN, is_turbo=True,
        model_version="turbo",
    )


def _condition_encoder():
    from diffusers.pipelines.ace_step import AceStepConditionEncoder

    return AceStepConditionEncoder(
        hidden_size=CONDITION_HIDDEN, intermediate_size=64, text_hidden_dim=TEXT_HIDDEN, timbre_hidden_dim=ACOUSTIC_DIM,
        num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rope_theta=10000.0, sliding_window=16,
    )


def _vae():
    from diffusers import AutoencoderOobleck

    return AutoencoderOobleck(encoder_hidden_size=4, downsampling_ratios=list(DOWNSAMPLING_RATIOS),
                              channel_multiples=[1, 1, 1, 1, 1], decoder_channels=4,
                              decoder_input_channels=ACOUSTIC_DIM, audio_channels=2, sampling_rate=48000)


def _audio_token_models():
    """The optional ``audio_tokenizer`` and ``audio_token_detokenizer`` (diffusers' AceStepPipeline
    ``_optional_components``) that the ACE-Step 1.5 base and SFT diffusers checkpoints ship and turbo does not."""
    from diffusers.pipelines.ace_step import AceStepAudioTokenDetokenizer, AceStepAudioTokenizer

    shared = dict(hidden_size=16, intermediate_size=32, audio_acoustic_hidden_dim=ACOUSTIC_DIM, pool_window_size=5,
                  num_attention_pooler_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                  sliding_window=16)
    return (AceStepAudioTokenizer(fsq_dim=16, fsq_input_levels=[8, 5], **shared),
            AceStepAudioTokenDetokenizer(**shared))


def build(target: Path, audio_tokens: bool = False) -> None:
    """Write the tiny checkpoint into ``target`` (which must not exist yet): the turbo layout, or with
    ``audio_tokens`` the base/SFT layout that adds the audio tokenizer and detokenizer."""
    import torch
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    audio_tokenizer, audio_token_detokenizer = _audio_token_models() if audio_tokens else (None, None)
    pipe = AceStepPipeline(
        vae=_vae(), text_encoder=_text_encoder(len(tokenizer)), tokenizer=tokenizer, transformer=_transformer(),
        condition_encoder=_condition_encoder(), audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
        # The pipeline passes its own [0, 1] sigma schedule, so the scheduler is the identity one it documents.
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )
    pipe.save_pretrained(target, safe_serialization=True)
    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    # transformers 5 names the class Qwen2Tokenizer; the published model_index.json says Qwen2TokenizerFast.
    index["tokenizer"] = ["transformers", "Qwen2TokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2))


def tiny_acestep_checkpoint() -> Path:
    """The cached tiny checkpoint folder, built on first use."""
    from cinereel_testkit import cached_build

    return cached_build("acestep", _cache_key(), build)


def tiny_acestep_base_checkpoint() -> Path:
    """The base/SFT layout (with the audio tokenizer and detokenizer), built on first use."""
    from cinereel_testkit import cached_build

    return cached_build("acestep-base", _cache_key(), lambda target: build(target, audio_tokens=True))
