"""A tiny random-weight Qwen3.5-35B-A3B checkpoint in the real repository's layout.

Same classes as ``Qwen/Qwen3.5-35B-A3B``: ``Qwen3_5MoeForConditionalGeneration``
(hybrid Gated-DeltaNet / full-attention text model with routed + shared
experts, and the Qwen3.5 vision tower), ``Qwen3VLProcessor`` with
``Qwen2VLImageProcessor`` and ``Qwen3VLVideoProcessor`` (images and video),
and ``Qwen3_5Tokenizer``: a byte-level BPE trained here on a little text, with
Qwen's special tokens in the real order (``<|vision_start|>`` is 9 after
``<|endoftext|>``, ``<|image_pad|>`` 12, ``<|video_pad|>`` 13, as in the real
vocabulary) and a Qwen3-VL-style chat template (content lists with image and
video parts; ``enable_thinking=False`` writes the empty think block).

Saved with ``save_pretrained`` (safetensors, sharded with an index like the
published checkpoint) so tests load it through the same code as the real one.
Built once per library versions and recipe, cached under
``$TMPDIR/cinereel-tiny/qwen3_5-<hash>/``; the build happens in a sibling temp
folder renamed into place, so a crash never leaves a half-built cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

TEXT_HIDDEN = 32
BPE_VOCAB = 700  # bytes + merges learned from the corpus below

# Qwen's special tokens in the order of the real vocabulary (endoftext first).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)

# The Qwen3-VL / Qwen3.5 chat template's shape: string or list content; image and video parts become
# vision placeholders the processor expands; the generation prompt with thinking disabled writes an
# empty think block.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}"
    "{{- message.content }}"
    "{%- else %}"
    "{%- for part in message.content %}"
    "{%- if part.type == 'image' or 'image' in part %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part.type == 'video' or 'video' in part %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part.type == 'text' %}"
    "{{- part.text }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{- '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

_CORPUS = [
    '{"title": "Astronaut in Tokyo", "locale": "Tokyo", "language": "ja", "mood": "mysterious", '
    '"time_of_day": "dusk", "characters": [{"id": "astronaut", "name": "The Astronaut", '
    '"description": "a woman in her thirties", "wardrobe": ["white EVA suit"]}], "shots": [{"id": "shot-01", '
    '"type": "establishing", "prompt": "wide alley, neon signs", "negative_prompt": "blurry", '
    '"camera": "push_in", "camera_detail": "slow dolly", "characters": [], "narration": "night"}]}',
    '{"scores": {"composition": 8, "motion_coherence": 7, "character_consistency": 9, "lighting_fidelity": 8}, '
    '"label": null, "notes": "clean"}',
    "hero broll establishing static push_in pull_out pan_left pan_right tilt_up tilt_down",
    "CHARACTER_DRIFT EXTRAS_INVADE_FRAME CAMERA_IGNORED WALKING_BACKWARDS OBJECT_MORPHING "
    "HAND_FINGER_ARTIFACT WARDROBE_DRIFT NEON_GLOW_LEAK STYLIZED_AI_LOOK RANDOM_INTIMACY",
    "A lone astronaut walks through a neon-lit Tokyo alley at dusk. You are the director of a short "
    "cinematic reel. Write the plan as JSON. The shot durations must add up to the requested length.",
]


def _cache_key() -> str:
    import tokenizers
    import torch
    import transformers

    recipe = Path(__file__).read_bytes()
    versions = f"{transformers.__version__}|{torch.__version__}|{tokenizers.__version__}".encode()
    return hashlib.sha256(versions + recipe).hexdigest()[:16]


def _tokenizer():
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    # Train a small byte-level BPE offline; every byte stays a token so any text round-trips.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen3_5Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 unk_token=None, model_max_length=262144)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    # The real processor's geometry (16 px patches, 2x2 merge, 2-frame temporal patches), smaller pixel budgets.
    image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128},
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128 * 8},
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=CHAT_TEMPLATE)


def _model(tokenizer):
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, linear_conv_kernel_dim=4, linear_key_head_dim=8,
        linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2, moe_intermediate_size=16,
        shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2, max_position_embeddings=4096,
        full_attention_interval=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=TEXT_HIDDEN, num_position_embeddings=256)
    config = Qwen3_5MoeConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                              video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                              vision_end_token_id=ids("<|vision_end|>"))
    return Qwen3_5MoeForConditionalGeneration(config).eval()


def build(target: Path) -> None:
    """Write the tiny checkpoint into ``target`` (which must not exist yet)."""
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    processor = _processor(tokenizer)
    model = _model(tokenizer)
    # Sharded with model.safetensors.index.json, as the published checkpoint is.
    model.save_pretrained(target, max_shard_size="500KB", safe_serialization=True)
    processor.save_pretrained(target)
    GenerationConfig(eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                   tokenizer.convert_tokens_to_ids("<|endoftext|>")],
                     pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), do_sample=True,
                     temperature=0.7, top_p=0.8, top_k=20).save_pretrained(target)


def tiny_qwen_checkpoint() -> Path:
    """The cached tiny checkpoint folder, built on first use."""
    from cinereel_testkit import cached_build

    return cached_build("qwen3_5", _cache_key(), build)
