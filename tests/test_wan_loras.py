"""Step-distilled motion (issue #14): a LoRA per Wan2.2 expert in every published key layout, the ``speed``
preset, and the preflight of LoRA files, on the tiny two-expert checkpoint."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.wan import FAMILY, WanMotion, WanSettings, load_wan, speed_warning, unload_wan
from cinereel.nodes.pipeline.preflight import checkpoint_problems
from cinereel_testkit import load_test_module, sample_plan_dict
from PIL import Image

tiny_wan = load_test_module("tiny_wan")
tiny_loras = load_test_module("tiny_wan_loras")

SIZE = 64
PLAN = sample_plan_dict(width=SIZE, height=SIZE)
HERO = PLAN["shots"][1]  # flow shift 5.0: 4 steps split 2/2 at the 0.9 boundary (999, 937 | 833, 625)


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return tiny_wan.tiny_wan_checkpoint()


@pytest.fixture(scope="module")
def loras(checkpoint, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(high-noise file, low-noise file) per layout; different seeds, as the published pairs differ."""
    folder = tmp_path_factory.mktemp("loras")
    return {layout: (tiny_loras.write_lora(layout, folder, checkpoint, seed=1),
                     tiny_loras.write_lora(layout, folder, checkpoint, seed=2)) for layout in tiny_loras.LAYOUTS}


@pytest.fixture(scope="module")
def keyframe() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8))


def handle(checkpoint: Path | str, **options) -> ModelHandle:
    return ModelHandle(FAMILY, str(checkpoint), dtype="float32", device="cpu",
                       options={"steps": 4, "first_block_cache": 0.0, **options})


def render(model: WanMotion, keyframe: Image.Image) -> np.ndarray:
    return model.render_clip(keyframe, HERO, PLAN, 5, 2)


@pytest.fixture(scope="module")
def base_clip(checkpoint, keyframe) -> np.ndarray:
    model = load_wan(handle(checkpoint))
    clip = render(model, keyframe)
    unload_wan(model)
    return clip


@contextmanager
def received(model: WanMotion) -> Iterator[tuple[Counter, list[dict]]]:
    """Forward calls of each expert (hooked at the model call, keyed ``expert`` and ``(expert, pass)`` with the
    pass the denoising loop opened: ``cond`` or ``uncond``) and the keyword arguments of every
    ``WanImageToVideoPipeline.__call__``."""
    calls: Counter = Counter()
    kwargs: list[dict] = []
    passes = {}

    def count(name: str) -> None:
        calls.update([name, (name, passes.get(name))])

    hooks = [getattr(model.pipe, name).register_forward_pre_hook(lambda *_, name=name: count(name))
             for name in ("transformer", "transformer_2")]
    for name in ("transformer", "transformer_2"):
        expert = getattr(model.pipe, name)
        opened = expert.cache_context

        @contextmanager
        def context(which: str, name: str = name, opened=opened):
            passes[name] = which
            with opened(which):
                yield
            passes[name] = None

        expert.cache_context = context
    cls = type(model.pipe)
    original = cls.__call__

    def spy(pipe, *args, **kw):
        kwargs.append(dict(kw))
        return original(pipe, *args, **kw)

    cls.__call__ = spy
    try:
        yield calls, kwargs
    finally:
        cls.__call__ = original
        for hook in hooks:
            hook.remove()
        for name in ("transformer", "transformer_2"):
            del getattr(model.pipe, name).cache_context


def strengths(expert, adapter: str) -> set[float]:
    """The strength each PEFT LoRA layer of ``adapter`` runs at (its scaling is strength x alpha / rank)."""
    return {round(layer.scaling[adapter] * layer.r[adapter] / layer.lora_alpha[adapter], 6)
            for layer in expert.modules() if adapter in getattr(layer, "scaling", {})}


# -- LoRAs: every layout changes the render, unloading restores it bitwise ---------------------

@pytest.mark.parametrize("layout", ["diffusers", "lightning", "lightx2v", "musubi"])
def test_each_layout_loads_into_its_expert_changes_the_clip_and_unloads_exactly(checkpoint, loras, keyframe,
                                                                               base_clip, layout):
    high, low = loras[layout]
    model = load_wan(handle(checkpoint, lora_high=str(high), lora_low=str(low), lora_low_strength=0.8))
    try:
        assert model.pipe.get_list_adapters() == {"transformer": ["cinereel_high"],
                                                  "transformer_2": ["cinereel_low"]}
        assert strengths(model.pipe.transformer, "cinereel_high") == {1.0}  # set_adapters' weights
        assert strengths(model.pipe.transformer_2, "cinereel_low") == {0.8}
        with_loras = render(model, keyframe)
        assert np.isfinite(with_loras).all() and np.abs(with_loras - base_clip).max() > 1e-3
        model.remove_loras()
        assert model.pipe.get_list_adapters() == {}
        assert np.array_equal(render(model, keyframe), base_clip)  # the base output, bit for bit
    finally:
        unload_wan(model)


def test_one_expert_s_lora_changes_only_its_expert(checkpoint, loras, keyframe, base_clip):
    high, _ = loras["lightning"]
    model = load_wan(handle(checkpoint, lora_high=str(high)))
    try:
        assert model.pipe.get_list_adapters() == {"transformer": ["cinereel_high"]}
        assert not np.array_equal(render(model, keyframe), base_clip)
    finally:
        unload_wan(model)


def test_strength_zero_renders_the_base_clip(checkpoint, loras, keyframe, base_clip):
    high, low = loras["diffusers"]
    model = load_wan(handle(checkpoint, lora_high=str(high), lora_low=str(low), lora_high_strength=0.0,
                            lora_low_strength=0.0))
    try:
        np.testing.assert_allclose(render(model, keyframe), base_clip, atol=1e-6)
    finally:
        unload_wan(model)


# -- the speed preset ------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "expected"), [
    ({}, ("quality", 40, 3.5, 3.5)),
    ({"speed": "quality"}, ("quality", 40, 3.5, 3.5)),
    ({"speed": "fast"}, ("fast", 4, 1.0, 1.0)),
    ({"speed": "fast", "steps": 8}, ("fast", 8, 1.0, 1.0)),  # an explicit option wins over the preset
    ({"speed": "quality", "steps": 30}, ("quality", 30, 3.5, 3.5)),  # as --set motion.steps=30 always did
    ({"speed": "custom"}, ("custom", 40, 3.5, 3.5)),
    ({"speed": "custom", "steps": 6, "guidance": 1.0, "guidance_2": 2.0}, ("custom", 6, 1.0, 2.0)),
])
def test_speed_presets_fill_in_steps_and_guidance(options, expected):
    settings = WanSettings.from_handle(ModelHandle(FAMILY, "any", options=options))
    assert (settings.speed, settings.steps, settings.guidance, settings.guidance_2) == expected


def test_an_unknown_speed_is_refused():
    with pytest.raises(ValueError, match="speed 'turbo' must be one of quality, fast, custom"):
        WanSettings.from_handle(ModelHandle(FAMILY, "any", options={"speed": "turbo"}))


def test_fast_runs_each_expert_once_per_step_with_no_unconditional_pass(checkpoint, loras, keyframe):
    """fast at 4 steps: 4 forward passes per clip, 2 per expert (the 0.9 boundary splits 999, 937 | 833, 625),
    none unconditional; quality at the same 4 steps: 8 (conditional + unconditional each step)."""
    from diffusers import WanImageToVideoPipeline

    high, low = loras["lightning"]
    counted = {}
    for speed in ("fast", "quality"):
        model = load_wan(ModelHandle(FAMILY, str(checkpoint), dtype="float32", device="cpu", options={
            "speed": speed, "first_block_cache": 0.0, "lora_high": str(high), "lora_low": str(low),
            **({"steps": 4} if speed == "quality" else {})}))
        try:
            with received(model) as (calls, kwargs):
                render(model, keyframe)
            (sent,) = kwargs
            counted[speed] = (dict(calls), {k: sent[k] for k in ("num_inference_steps", "guidance_scale",
                                                                 "guidance_scale_2")})
            # diffusers' own rule, on the pipeline as the render left it: CFG only when guidance_scale > 1
            assert WanImageToVideoPipeline.do_classifier_free_guidance.fget(model.pipe) is (speed == "quality")
        finally:
            unload_wan(model)
    assert counted["fast"] == ({"transformer": 2, "transformer_2": 2, ("transformer", "cond"): 2,
                                ("transformer_2", "cond"): 2},
                               {"num_inference_steps": 4, "guidance_scale": 1.0, "guidance_scale_2": 1.0})
    assert counted["quality"] == ({"transformer": 4, "transformer_2": 4, ("transformer", "cond"): 2,
                                   ("transformer", "uncond"): 2, ("transformer_2", "cond"): 2,
                                   ("transformer_2", "uncond"): 2},
                                  {"num_inference_steps": 4, "guidance_scale": 3.5, "guidance_scale_2": 3.5})


def test_fast_skips_encoding_the_negative_prompt(checkpoint, keyframe, monkeypatch):
    model = load_wan(handle(checkpoint, speed="fast", steps=40))  # steps at its default: the preset's 4
    seen = []
    encode = model.pipe.encode_prompt

    def spy(**kwargs):
        seen.append(kwargs["do_classifier_free_guidance"])
        return encode(**kwargs)

    monkeypatch.setattr(model.pipe, "encode_prompt", spy)
    try:
        render(model, keyframe)
    finally:
        unload_wan(model)
    assert seen == [False]


def test_the_call_record_names_speed_steps_guidance_and_each_lora(checkpoint, loras, keyframe, tmp_path):
    from cinereel.nodes.pipeline.rundir import RunDir
    from cinereel.nodes.pipeline.stage import call_record, record_call

    high, low = loras["lightx2v"]
    lora_handle = handle(checkpoint, speed="fast", lora_high=str(high), lora_low=str(low), lora_high_strength=1.25)
    model = load_wan(lora_handle)
    try:
        render(model, keyframe)
        run = RunDir(tmp_path / "run")
        record_call(run, "clips/shot_02.attempt1.mp4", model, lora_handle)
    finally:
        unload_wan(model)
    record = call_record(run, "clips/shot_02.attempt1.mp4")
    assert json.loads((tmp_path / "run" / "clips" / "shot_02.attempt1.call.json").read_text()) == record
    assert {k: record[k] for k in ("speed", "num_inference_steps", "guidance_scale", "guidance_scale_2")} == {
        "speed": "fast", "num_inference_steps": 4, "guidance_scale": 1.0, "guidance_scale_2": 1.0}
    assert record["loras"] == [
        {"expert": "transformer", "option": "lora_high", "file": str(high.resolve()), "strength": 1.25},
        {"expert": "transformer_2", "option": "lora_low", "file": str(low.resolve()), "strength": 1.0}]


# -- fast without LoRAs warns -------------------------------------------------------------------

def test_fast_without_loras_warns_and_with_both_does_not(tmp_path):
    lora = tmp_path / "x.safetensors"
    assert speed_warning(handle("any")) is None
    warning = speed_warning(handle("any", speed="fast"))
    assert "lora_high and lora_low are not set" in warning and "blurry" in warning
    assert "lora_low is not set" in speed_warning(handle("any", speed="fast", lora_high=str(lora)))
    assert speed_warning(handle("any", speed="fast", lora_high=str(lora), lora_low=str(lora))) is None
    assert speed_warning(ModelHandle("preview-motion", "preview")) is None


def test_the_animate_node_shows_the_fast_warning_and_the_cli_prints_it(checkpoint, tmp_path, capsys):
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.motion import AnimateNode
    from cinereel.nodes.pipeline.cli import print_warnings
    from cinereel.nodes.pipeline.director import direct
    from cinereel.nodes.pipeline.headless import preview_handles
    from cinereel.nodes.pipeline.keyframes import render_keyframes

    plan = sample_plan_dict(width=256, height=256, duration_s=0.25)  # the schema's smallest frame; 5 frames
    plan["shots"] = [{**plan["shots"][1], "duration_s": 0.25, "narration": ""}]
    previews = preview_handles()
    reel = direct(previews["llm"], DirectorRequest("test", duration_s=1.0, shots=1), tmp_path, run_id="fast",
                  plan_override=json.dumps(plan))
    shown = AnimateNode().animate(render_keyframes(reel, previews["keyframes"]),
                                  handle(checkpoint, speed="fast", steps=40), "ultrafast")
    reel = shown["result"][0]
    (warning,) = [w for w in reel.notes["warnings"] if "speed 'fast'" in w]
    assert f"⚠ {warning}" in shown["ui"]["text"]  # on the Animate node
    assert json.loads(reel.run_dir.path("report.json").read_text())["warnings"] == reel.notes["warnings"]
    (record,) = reel.notes["clip_renders"].values()
    assert (record["num_inference_steps"], record["guidance_scale"], record["loras"]) == (4, 1.0, [])
    print_warnings(reel)
    assert f"cinereel: warning: {warning}" in capsys.readouterr().err

    # A LoRA's file is part of each clip's key: new content under the same name re-renders, no LoRA keys as before.
    from cinereel.nodes.pipeline.motion import clip_job

    lora = tmp_path / "high.safetensors"
    lora.write_bytes(b"one")
    shot = reel.plan.shots[0]
    without = clip_job(reel, shot, handle(checkpoint, speed="fast", steps=40)).inputs
    assert "lora_files" not in without
    first = clip_job(reel, shot, handle(checkpoint, speed="fast", steps=40, lora_high=str(lora))).key
    lora.write_bytes(b"two, longer")
    assert clip_job(reel, shot, handle(checkpoint, speed="fast", steps=40, lora_high=str(lora))).key != first


def test_the_new_motion_widgets_at_their_defaults_keep_the_handle_key():
    """A workflow saved before speed and the LoRAs keys its clips as before once they appear at their defaults."""
    from cinereel.nodes.pipeline.backends import make_handle

    wan = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    before = make_handle("motion", wan, steps=40, guidance=3.5, guidance_2=3.5)
    after = make_handle("motion", wan, steps=40, guidance=3.5, guidance_2=3.5, speed="quality", lora_high="none",
                        lora_high_strength=1.0, lora_low="none", lora_low_strength=1.0)
    assert after.key == before.key
    fast = make_handle("motion", wan, speed="fast", lora_high="a.safetensors", lora_high_strength=0.5)
    assert (fast.option("speed"), fast.option("lora_high"), fast.option("lora_high_strength")) == (
        "fast", "a.safetensors", 0.5)


# -- preflight: refused before any model loads --------------------------------------------------

@pytest.fixture
def no_model_loads(monkeypatch):
    from diffusers import DiffusionPipeline, ModelMixin

    def refuse(*args, **kwargs):
        raise AssertionError("preflight loaded a model")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(ModelMixin, "from_pretrained", refuse)


def test_good_loras_pass_preflight(checkpoint, loras, no_model_loads):
    for high, low in loras.values():
        assert checkpoint_problems({"motion": handle(checkpoint, lora_high=str(high), lora_low=str(low))}) == []


def test_a_wan21_i2v_lora_partly_matches_and_passes(checkpoint, tmp_path, no_model_loads):
    """Wan2.1 I2V LoRAs also carry image cross-attention keys (k_img, v_img) that Wan2.2 has no module for;
    the rest fits, diffusers loads it with a warning about those keys, so preflight lets it through."""
    import torch
    from safetensors.torch import save_file

    state = tiny_loras._comfy_state(tiny_loras._expert_shapes(checkpoint), 3, 0.5, lightx2v=False, alpha=True)
    for name in ("k_img", "v_img"):
        state[f"diffusion_model.blocks.0.cross_attn.{name}.lora_down.weight"] = torch.zeros(4, 24)
        state[f"diffusion_model.blocks.0.cross_attn.{name}.lora_up.weight"] = torch.zeros(24, 4)
    save_file(state, str(tmp_path / "wan21_i2v.safetensors"))
    assert checkpoint_problems({"motion": handle(checkpoint, lora_high=str(tmp_path / "wan21_i2v.safetensors"))}) == []


def test_a_missing_lora_file_is_named_with_the_fix(checkpoint, tmp_path, no_model_loads):
    (problem,) = checkpoint_problems({"motion": handle(checkpoint, lora_low=str(tmp_path / "low.safetensors"))})
    assert problem.startswith(f"motion.lora_low: LoRA file '{tmp_path / 'low.safetensors'}' not found")
    assert "put the .safetensors file there or give its full path" in problem


def test_an_unreadable_lora_file_is_refused(checkpoint, tmp_path, no_model_loads):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    (problem,) = checkpoint_problems({"motion": handle(checkpoint, lora_high=str(broken))})
    assert problem.startswith(f"motion.lora_high '{broken}' ({broken}) cannot be read as a Wan LoRA")


def test_a_lora_for_another_model_matches_neither_expert(checkpoint, tmp_path, no_model_loads):
    import torch
    from safetensors.torch import save_file

    flux = tmp_path / "flux_style.safetensors"  # a FLUX-style diffusers LoRA: no Wan module has these names
    save_file({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 24),
               "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(24, 4)}, str(flux))
    (problem,) = checkpoint_problems({"motion": handle(checkpoint, lora_high=str(flux))})
    assert "none of its 2 keys matches a module of the Wan2.2 high-noise expert (transformer)" in problem
    assert "it is a LoRA for another model" in problem


def test_a_lora_for_another_model_size_is_refused(checkpoint, tmp_path, no_model_loads):
    import torch
    from safetensors.torch import save_file

    wide = tmp_path / "wan_5b.safetensors"  # Wan names, but 48 features where the tiny expert has 24
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 48),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(48, 4)}, str(wide))
    (problem,) = checkpoint_problems({"motion": handle(checkpoint, lora_low=str(wide))})
    assert "was made for another model size: blocks.0.attn1.to_q takes 24 features, the LoRA has 48" in problem


def test_the_cli_refuses_a_missing_lora_before_anything_loads(checkpoint, tmp_path, capsys):
    from cinereel.model_loaders.residency import RESIDENCY
    from cinereel.nodes.pipeline.cli import main

    mark = RESIDENCY.mark()
    out = tmp_path / "out"
    rc = main(["A lone astronaut walks through a neon-lit Tokyo alley at dusk", "--motion", str(checkpoint),
               "--set", "motion.speed=fast", "--set", "motion.lora_high=nowhere/high_noise.safetensors",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "motion.lora_high: LoRA file 'nowhere/high_noise.safetensors' not found" in err, err
    assert [e for e in RESIDENCY.log_since(mark) if e["event"] == "load"] == [] and not out.exists()


def test_a_lora_name_is_found_in_comfyui_s_loras_folder(tmp_path, monkeypatch):
    import sys
    import types

    from cinereel.model_loaders.wan_loras import lora_choices, lora_path

    loras_dir = tmp_path / "models" / "loras"
    (loras_dir / "wan").mkdir(parents=True)
    (loras_dir / "wan" / "high_noise.safetensors").write_bytes(b"")
    checkpoint_shard = tmp_path / "models" / "cinereel" / "Wan2.2-I2V-A14B-Diffusers" / "transformer"
    checkpoint_shard.mkdir(parents=True)
    (checkpoint_shard / "diffusion_pytorch_model-00001-of-00012.safetensors").write_bytes(b"")
    (tmp_path / "models" / "cinereel" / "low_noise.safetensors").write_bytes(b"")
    folder_paths = types.SimpleNamespace(
        models_dir=str(tmp_path / "models"), folder_names_and_paths={"loras": ([str(loras_dir)], {".safetensors"})},
        get_filename_list=lambda name: ["wan/high_noise.safetensors"])
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    assert lora_path("wan/high_noise.safetensors") == (loras_dir / "wan" / "high_noise.safetensors").resolve()
    assert lora_choices() == ["none", "wan/high_noise.safetensors", "low_noise.safetensors"]  # no checkpoint shard
    assert lora_path("low_noise.safetensors") == (tmp_path / "models" / "cinereel" / "low_noise.safetensors").resolve()
    with pytest.raises(FileNotFoundError, match=f"looked for that path and in {loras_dir}"):
        lora_path("other.safetensors")


def test_a_settings_file_names_loras_beside_it_or_by_name(tmp_path):
    from cinereel.nodes.pipeline import settings as cfg
    from cinereel.nodes.pipeline.cli import handles_from_args, parser

    (tmp_path / "high.safetensors").write_bytes(b"")
    path = tmp_path / "run.toml"
    path.write_text('[motion]\ncheckpoint = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"\nspeed = "fast"\n'
                    'lora_high = "high.safetensors"\nlora_low = "wan/low_noise.safetensors"\n', encoding="utf-8")
    args, _ = cfg.resolve(parser(), ["A lone astronaut in Tokyo", "--config", str(path)], {})
    motion = handles_from_args(args)["motion"]
    assert (motion.option("speed"), motion.option("lora_high"), motion.option("lora_low")) == (
        "fast", str(tmp_path / "high.safetensors"), "wan/low_noise.safetensors")
