"""A Kokoro-82M folder with random weights, in the real repository's layout.

``config.json`` is Kokoro-82M's real configuration (kokoro's ``KModel`` cannot be
shrunk through it: the decoder and PL-BERT sizes are fixed), so the weights are
the real 82M-parameter architecture, randomly initialised by ``KModel`` itself
and saved as ``kokoro-v1_0.pth`` the way kokoro loads it (one state dict per
submodule). ``voices/<name>.pt`` holds a random style tensor of the real shape
(510, 1, 256) for each default voice. About 330 MB.

Built once per kokoro/torch version and recipe, cached under
``$TMPDIR/cinereel-tiny/kokoro-<hash>/``; the build happens in a sibling temp
folder renamed into place, so a crash never leaves a half-built cache.
Random weights alone would speak very slowly: the duration head predicts each
phoneme's length as a sum of 50 sigmoids, about 25 frames (0.6 s) when they sit
at 0.5. Its weights are scaled down and its bias set so that every phoneme lasts
about 3 frames (75 ms) at speed 1, the pace of real speech, and fewer at a higher
speed: narration fits its shots and the voice stage's time compression works.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VOICES = ("af_heart", "bf_emma", "ef_dora", "ff_siwis", "hf_alpha", "if_sara", "jf_alpha", "pf_dora", "zf_xiaobei")
VOICE_SHAPE = (510, 1, 256)
DURATION_WEIGHT_SCALE = 0.05
DURATION_BIAS = -2.75  # 50 * sigmoid(-2.75) = 3.0 frames of 25 ms
SUBMODULES = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")

# Kokoro-82M's phoneme vocabulary (config.json "vocab"; n_token 178, ids 0 and unused ids left out).
_VOCAB_ITEMS = (
    ";:,.!?", (1, 2, 3, 4, 5, 6),
    "—…\"()“” \u0303ʣʥʦʨᵝ\uab67AIOQSTWYᵊ", (9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 31,
                                          33, 35, 36, 39, 41, 42),
    "abcdefhijklmnopqrstuvwxyz", (43, 44, 45, 46, 47, 48, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
                                  64, 65, 66, 67, 68),
    "ɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ",
    (69, 70, 71, 72, 75, 76, 77, 78, 80, 81, 82, 83, 85, 86, 87, 90, 92, 99, 101, 102, 103, 110, 111, 112, 113, 114,
     115, 116, 118, 119, 120, 123, 125, 126, 128, 129, 130, 131, 132, 133, 135, 136, 138, 139, 140, 142, 143, 147,
     148, 156, 157, 158, 162, 164, 169, 171, 172, 173, 177),
)


def kokoro_config() -> dict:
    vocab: dict[str, int] = {}
    for chars, ids in zip(_VOCAB_ITEMS[::2], _VOCAB_ITEMS[1::2]):
        assert len(chars) == len(ids), (chars, ids)
        vocab.update(zip(chars, ids))
    return {
        "istftnet": {
            "upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6], "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20, "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            "resblock_kernel_sizes": [3, 7, 11], "upsample_initial_channel": 512,
        },
        "dim_in": 64, "dropout": 0.2, "hidden_dim": 512, "max_conv_dim": 512, "max_dur": 50, "multispeaker": True,
        "n_layer": 3, "n_mels": 80, "n_token": 178, "style_dim": 128, "text_encoder_kernel_size": 5,
        "plbert": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 2048,
                   "max_position_embeddings": 512, "num_hidden_layers": 12, "dropout": 0.1},
        "vocab": vocab,
    }


def _cache_key() -> str:
    import kokoro
    import torch

    versions = f"{kokoro.__version__}|{torch.__version__}".encode()
    return hashlib.sha256(versions + Path(__file__).read_bytes()).hexdigest()[:16]


def build(target: Path) -> None:
    """Write the folder into ``target`` (which must not exist yet)."""
    import torch
    from kokoro import KModel

    target.mkdir(parents=True)
    config = kokoro_config()
    (target / "config.json").write_text(json.dumps(config, indent=4, ensure_ascii=False), encoding="utf-8")
    empty = target / "empty.pth"
    torch.save({}, empty)  # KModel loads nothing from an empty checkpoint and keeps its random init
    torch.manual_seed(0)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty))
    empty.unlink()
    with torch.no_grad():
        model.predictor.duration_proj.linear_layer.weight.mul_(DURATION_WEIGHT_SCALE)
        model.predictor.duration_proj.linear_layer.bias.fill_(DURATION_BIAS)
    torch.save({name: getattr(model, name).state_dict() for name in SUBMODULES}, target / "kokoro-v1_0.pth")
    (target / "voices").mkdir()
    for index, voice in enumerate(VOICES):
        generator = torch.Generator().manual_seed(index)
        torch.save(torch.randn(VOICE_SHAPE, generator=generator) * 0.3, target / "voices" / f"{voice}.pt")


def tiny_kokoro_checkpoint() -> Path:
    """The cached folder, built on first use."""
    from cinereel_testkit import cached_build

    return cached_build("kokoro", _cache_key(), build)
