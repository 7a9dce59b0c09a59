"""The Wan2.2 I2V A14B motion backend, loaded by its real loader from a tiny two-expert checkpoint on disk."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.model_layouts import missing_files
from cinereel.model_loaders.residency import ResidencyManager, family
from cinereel.model_loaders.wan import (
    FAMILY,
    WanMotion,
    WanSettings,
    load_wan,
    unload_wan,
    wan_frame_count,
)
from cinereel_testkit import PACK_ROOT, sample_plan_dict
from PIL import Image

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_wan", HERE / "tiny_wan.py")
tiny_wan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_wan)

SIZE = 64
STEPS = 4  # at flow shift 5.0: timesteps 999, 937 | 833, 625, so the 0.9 boundary splits them 2/2


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return tiny_wan.tiny_wan_checkpoint()


def handle(checkpoint: Path | str, **options) -> ModelHandle:
    return ModelHandle(FAMILY, str(checkpoint), dtype="float32", device="cpu", options={"steps": STEPS, **options})


@pytest.fixture(scope="module")
def motion(checkpoint) -> Iterator[WanMotion]:
    """Loaded with the default options (first-block cache 0.05, guidance 3.5 / 3.5) but 4 steps."""
    model = load_wan(handle(checkpoint))
    yield model
    unload_wan(model)


@pytest.fixture(scope="module")
def keyframe() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


PLAN = sample_plan_dict(width=SIZE, height=SIZE)
HERO = PLAN["shots"][1]  # flow shift 5.0, seed 2


def render(model: WanMotion, keyframe: Image.Image, num_frames: int = 5, seed: int = 2, callback=None,
           plan: dict = PLAN, **shot) -> np.ndarray:
    return model.render_clip(keyframe, {**HERO, **shot}, plan, num_frames, seed, callback=callback)


@contextmanager
def forward_calls(model: WanMotion) -> Iterator[Counter]:
    """Counts forward calls of each expert."""
    calls: Counter = Counter()
    experts = {"transformer": model.pipe.transformer, "transformer_2": model.pipe.transformer_2}
    hooks = [module.register_forward_pre_hook(lambda *_, name=name: calls.update([name]))
             for name, module in experts.items()]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def boundary_split(model: WanMotion) -> tuple[int, int]:
    """(high-noise steps, low-noise steps) of the schedule the last render used."""
    boundary = model.pipe.config.boundary_ratio * model.pipe.scheduler.config.num_train_timesteps
    timesteps = model.pipe.scheduler.timesteps
    return int((timesteps >= boundary).sum()), int((timesteps < boundary).sum())


# -- loading and rendering -----------------------------------------------------

def test_defaults_are_wans_own_settings():
    assert WanSettings.from_handle(ModelHandle(FAMILY, "any")) == WanSettings(
        offload="none", first_block_cache=0.05, compile_transformer_2=False, attention_backend="native",
        steps=40, guidance=3.5, guidance_2=3.5)
    assert family(FAMILY).load is load_wan and family(FAMILY).unload is unload_wan


def test_loads_the_two_expert_checkpoint_from_a_folder_and_renders_a_clip(motion, keyframe):
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    pipe = motion.pipe
    assert isinstance(pipe, WanImageToVideoPipeline)
    assert isinstance(pipe.transformer, WanTransformer3DModel) and isinstance(pipe.transformer_2, WanTransformer3DModel)
    assert pipe.transformer is not pipe.transformer_2
    assert pipe.config.boundary_ratio == tiny_wan.BOUNDARY_RATIO  # read from the checkpoint's model_index.json
    assert pipe.image_encoder is None
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.transformer.dtype == torch.float32 and pipe.vae.dtype == torch.float32
    frames = render(motion, keyframe)
    assert frames.shape == (5, SIZE, SIZE, 3) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and 0.0 <= frames.min() and frames.max() <= 1.0
    assert frames.std() > 0.01  # not a blank clip


@pytest.mark.parametrize(("asked", "rendered"), [(1, 1), (6, 9)])
def test_renders_the_next_4k_plus_1_frames(motion, keyframe, asked, rendered):
    assert render(motion, keyframe, num_frames=asked).shape[0] == rendered


def test_frame_count_rounding():
    assert [wan_frame_count(n) for n in (1, 2, 5, 80, 81, 82)] == [1, 5, 5, 81, 81, 85]
    with pytest.raises(ValueError, match="at least 1"):
        wan_frame_count(0)


def test_sizes_must_be_multiples_of_16(motion, keyframe):
    with pytest.raises(ValueError, match="multiples of 16.*72x64"):
        render(motion, keyframe, plan={**PLAN, "width": 72})


def test_flow_shift_5_and_8_change_the_schedule_used_and_the_clip(motion, keyframe):
    clips, schedulers = {}, {}
    for shift in (5.0, 8.0):
        clips[shift] = render(motion, keyframe, flow_shift=shift)
        schedulers[shift] = motion.pipe.scheduler  # the scheduler the render stepped through
    for shift, scheduler in schedulers.items():
        assert scheduler.config.flow_shift == shift
        assert len(scheduler.timesteps) == STEPS and scheduler.step_index == STEPS  # it ran this render
    assert torch.allclose(schedulers[5.0].sigmas[:STEPS],
                          torch.tensor([1.0, 0.9376, 0.8336, 0.6259]), atol=1e-3)
    assert (schedulers[8.0].sigmas[1:STEPS] > schedulers[5.0].sigmas[1:STEPS]).all()  # more time at high noise
    assert np.abs(clips[5.0] - clips[8.0]).max() > 1e-3


def test_flow_shift_above_8_is_refused_before_rendering(motion, keyframe):
    with forward_calls(motion) as calls, pytest.raises(ValueError) as error:
        render(motion, keyframe, flow_shift=8.5)
    assert str(error.value) == ("flow_shift 8.5 is above 8.0: higher shifts gave plastic skin in testing; "
                                "use 5.0 for hero shots, 8.0 for b-roll")
    assert calls == Counter()


def test_the_seed_chooses_the_noise(motion, keyframe):
    # Same seed, same clip: see the cancel test, which re-renders after a cancelled render.
    assert not np.array_equal(render(motion, keyframe, seed=7), render(motion, keyframe, seed=8))


def test_the_shots_prompts_reach_the_text_encoder(motion, keyframe, monkeypatch):
    seen = []
    encode = motion.pipe.encode_prompt

    def spy(**kwargs):
        seen.append((kwargs["prompt"], kwargs["negative_prompt"], kwargs["do_classifier_free_guidance"]))
        return encode(**kwargs)

    monkeypatch.setattr(motion.pipe, "encode_prompt", spy)
    render(motion, keyframe, negative_prompt="blurry, low quality")
    assert seen == [("the astronaut walks toward camera. Camera: static shot.", "blurry, low quality", True)]


def test_the_camera_reaches_wan_and_a_camera_ignored_revision_changes_it(motion, keyframe, monkeypatch):
    """Asserted at the call WanImageToVideoPipeline receives: the camera direction is in its prompt, and
    the CAMERA_IGNORED remedy's plain phrase replaces it in the next attempt's prompt."""
    from cinereel.model_loaders.vocabulary.plan import validate_plan
    from cinereel.nodes.pipeline.retry import revise

    prompts = []
    call = type(motion.pipe).__call__

    def spy(pipe, *args, **kwargs):
        prompts.append(kwargs["prompt"])
        return call(pipe, *args, **kwargs)

    monkeypatch.setattr(type(motion.pipe), "__call__", spy)
    detail = "slow dolly toward her visor as rain streaks past"
    plan = validate_plan({**PLAN, "width": 256, "height": 256,  # the schema's smallest frame; renders stay at SIZE
                          "shots": [PLAN["shots"][0], {**HERO, "camera": "push_in", "camera_detail": detail}]})
    shot = plan.shots[1]
    render(motion, keyframe, **shot.model_dump(mode="json"))
    revised = revise(shot, plan, "CAMERA_IGNORED", 2, shot.seed).shot
    render(motion, keyframe, **revised.model_dump(mode="json"))
    assert prompts == [f"the astronaut walks toward camera. Camera: {detail}.",
                       "the astronaut walks toward camera. Camera: slow push in."]


def test_the_call_record_is_what_the_pipeline_received(motion, keyframe, monkeypatch):
    received = []
    call = type(motion.pipe).__call__

    def spy(pipe, *args, **kwargs):
        received.append(dict(kwargs))
        return call(pipe, *args, **kwargs)

    monkeypatch.setattr(type(motion.pipe), "__call__", spy)
    render(motion, keyframe, seed=11, flow_shift=8.0, negative_prompt="blurry")
    (kwargs,) = received
    record = motion.last_call()
    assert {name: kwargs[name] for name in record if name in kwargs} == {
        name: value for name, value in record.items() if name in kwargs}
    assert set(kwargs) - set(record) == {"image", "generator", "output_type", "callback_on_step_end"}
    assert kwargs["generator"].initial_seed() == record["seed"] == 11
    assert motion.pipe.scheduler.config.flow_shift == record["flow_shift"] == 8.0
    assert record["negative_prompt"] == "blurry" and "Camera:" in record["prompt"]


def test_the_phases_prompts_are_encoded_once_and_its_clips_render_without_the_text_encoder(motion, keyframe):
    """encode_prompts (the motion stage calls it before the clips) runs diffusers' encode_prompt as the pipeline
    would; the renders then get the embeddings, run no text encoder, and make exactly the same clips."""
    shots = [{**HERO, "negative_prompt": "blurry"}, {**HERO, "prompt": "a lighthouse in the rain", "negative_prompt": ""}]
    plain = [render(motion, keyframe, **shot) for shot in shots]
    assert motion.last_call()["prompt_encoded"] == "in this render"
    calls: Counter = Counter()
    hook = motion.pipe.text_encoder.register_forward_pre_hook(lambda *_: calls.update(["text_encoder"]))
    try:
        assert motion.encode_prompts([*shots, shots[0]]) == 2
        assert calls["text_encoder"] == 4  # each distinct shot's prompt and negative prompt (guidance 3.5)
        encoded = [render(motion, keyframe, **shot) for shot in shots]
        assert calls["text_encoder"] == 4
        assert motion.last_call()["prompt_encoded"] == "once for the phase"
        assert all(np.array_equal(a, b) for a, b in zip(plain, encoded))
        assert motion.encode_prompts(shots) == 0  # already encoded: nothing to do
        render(motion, keyframe, prompt="a shot nobody encoded")  # a prompt not encoded: the pipeline encodes it
        assert calls["text_encoder"] == 6
    finally:
        hook.remove()
        motion.prompts.clear()  # the module's other tests watch the pipeline encode


def test_both_experts_run_on_their_side_of_the_boundary(motion, keyframe):
    with forward_calls(motion) as calls:
        render(motion, keyframe)
    assert boundary_split(motion) == (2, 2)
    assert calls == {"transformer": 2 * 2, "transformer_2": 2 * 2}  # conditional + unconditional per step


# -- guidance_2 <= 1: no unconditional pass for the low-noise expert ------------

@pytest.fixture(scope="module")
def distilled(checkpoint) -> Iterator[WanMotion]:
    """The distilled-LoRA recipe: no guidance on the low-noise expert (cache off so paths compare exactly)."""
    model = load_wan(handle(checkpoint, guidance_2=1.0, first_block_cache=0))
    yield model
    unload_wan(model)


def test_guidance_2_of_1_runs_the_low_noise_expert_once_per_step(distilled, keyframe):
    with forward_calls(distilled) as calls:
        render(distilled, keyframe)
    assert boundary_split(distilled) == (2, 2)
    assert calls == {"transformer": 2 * 2, "transformer_2": 2}


def test_guidance_of_1_still_guides_the_low_noise_expert(checkpoint, keyframe):
    model = load_wan(handle(checkpoint, guidance=1.0, guidance_2=3.5))
    with forward_calls(model) as calls:
        render(model, keyframe)
    unload_wan(model)
    assert calls == {"transformer": 2, "transformer_2": 2 * 2}  # stock diffusers 0.42 would give 2 and 2


def test_skipping_the_unconditional_pass_gives_the_slow_paths_clip(distilled, keyframe):
    from diffusers import WanImageToVideoPipeline

    fast = render(distilled, keyframe)
    stock = WanImageToVideoPipeline.from_pipe(distilled.pipe)  # diffusers' own loop, same weights
    stock.set_progress_bar_config(disable=True)
    slow_model = WanMotion(stock, distilled.settings)
    with forward_calls(slow_model) as calls:
        slow = render(slow_model, keyframe)
    assert calls == {"transformer": 2 * 2, "transformer_2": 2 * 2}  # what the skip saves: 2 of 6 expert passes
    np.testing.assert_allclose(fast, slow, atol=1e-5)


# -- options -------------------------------------------------------------------

def test_first_block_cache_hooks_both_experts(motion, checkpoint, keyframe):
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    for expert in (motion.pipe.transformer, motion.pipe.transformer_2):
        assert expert.is_cache_enabled and expert._cache_config.threshold == 0.05
        assert expert.blocks[0]._diffusers_hook.get_hook(_FBC_LEADER_BLOCK_HOOK) is not None
        assert all(block._diffusers_hook.get_hook(_FBC_BLOCK_HOOK) is not None for block in expert.blocks[1:])
    off = load_wan(handle(checkpoint, first_block_cache=0))
    assert not off.pipe.transformer.is_cache_enabled and not off.pipe.transformer_2.is_cache_enabled
    unload_wan(off)


def test_first_block_cache_skips_blocks_when_the_first_block_barely_changes(checkpoint, keyframe):
    def tail_block_runs(threshold: float) -> tuple[Counter, np.ndarray]:
        model = load_wan(handle(checkpoint, first_block_cache=threshold))
        runs: Counter = Counter()
        for name in ("transformer", "transformer_2"):
            tail = getattr(model.pipe, name).blocks[-1].attn1
            tail.register_forward_pre_hook(lambda *_, name=name: runs.update([name]))
        clip = render(model, keyframe)
        unload_wan(model)
        return runs, clip

    computed, plain = tail_block_runs(0.0)
    cached, reused = tail_block_runs(1e9)  # every step after a context's first reuses the cached residual
    assert computed == {"transformer": 4, "transformer_2": 4}
    assert cached == {"transformer": 2, "transformer_2": 2}  # one computed step per expert and cond/uncond
    assert np.isfinite(reused).all() and np.abs(plain - reused).max() > 1e-4


def test_attention_backend_is_set_on_both_experts(motion, checkpoint, keyframe):
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    def backends(model: WanMotion) -> set:
        return {module.processor._attention_backend for expert in (model.pipe.transformer, model.pipe.transformer_2)
                for module in expert.modules() if hasattr(module, "processor")}

    assert backends(motion) == {AttentionBackendName.NATIVE}
    default = _AttentionBackendRegistry.get_active_backend()[0]
    math_sdpa = load_wan(handle(checkpoint, attention_backend="_native_math"))
    assert backends(math_sdpa) == {AttentionBackendName._NATIVE_MATH}
    assert _AttentionBackendRegistry.get_active_backend()[0] == default  # other diffusers models unaffected
    np.testing.assert_allclose(render(math_sdpa, keyframe), render(motion, keyframe), atol=1e-4)
    unload_wan(math_sdpa)
    with pytest.raises(ValueError, match="bogus"):
        load_wan(handle(checkpoint, attention_backend="bogus"))


def _is_compiled(block: torch.nn.Module) -> bool:
    forward = block.forward
    while forward is not None:  # beneath the cache hooks' wrappers
        if hasattr(forward, "_torchdynamo_orig_callable"):
            return True
        forward = getattr(forward, "__wrapped__", None)
    return False


@pytest.mark.slow
def test_compile_transformer_2_compiles_only_the_low_noise_expert(motion, checkpoint, keyframe):
    torch._dynamo.reset()
    compiled = load_wan(handle(checkpoint, compile_transformer_2=True))
    pipe = compiled.pipe
    assert all(_is_compiled(block) for block in pipe.transformer_2.blocks)
    assert not any(_is_compiled(block) for block in pipe.transformer.blocks)
    assert not isinstance(pipe.transformer_2, torch._dynamo.eval_frame.OptimizedModule)  # never the whole model
    assert pipe.transformer_2._compiled_call_impl is None and pipe.transformer._compiled_call_impl is None
    assert pipe.transformer_2.is_cache_enabled  # the cache hooks wrap the compiled blocks
    torch._dynamo.utils.counters.clear()
    clip = render(compiled, keyframe)  # ~14 s on 2 CPU cores with a cold inductor cache, ~2 s warm
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph serves every block
    unload_wan(compiled)
    np.testing.assert_allclose(clip, render(motion, keyframe), atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("offload", ["model", "group"])
def test_offload_needs_a_cuda_gpu(checkpoint, offload):
    with pytest.raises(ValueError, match=f"offload='{offload}' needs a CUDA GPU"):
        load_wan(handle(checkpoint, offload=offload))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("offload", ["model", "group"])
def test_offload_hooks_on_cuda(checkpoint, keyframe, offload):
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    model = load_wan(ModelHandle(FAMILY, str(checkpoint), dtype="bfloat16", options={"steps": 2, "offload": offload}))
    experts = (model.pipe.transformer, model.pipe.transformer_2)
    if offload == "model":
        assert model.pipe._all_hooks and all(hasattr(expert, "_hf_hook") for expert in experts)
    else:
        assert all(_is_group_offload_enabled(expert) for expert in experts)
    assert np.isfinite(render(model, keyframe)).all()
    unload_wan(model)


def test_bad_options_are_refused_before_loading(tmp_path):
    missing = tmp_path / "not-there"  # the options fail first, so no checkpoint is needed
    with pytest.raises(ValueError, match="fp8_storage=True is refused.*FP8 compute hit segfaults in its cross-attention"):
        load_wan(handle(missing, fp8_storage=True))
    with pytest.raises(ValueError, match="offload 'disk' must be one of none, model, group"):
        load_wan(handle(missing, offload="disk"))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        load_wan(handle(missing, steps=0))
    with pytest.raises(ValueError, match="guidance_2 must be a finite number"):
        load_wan(handle(missing, guidance_2=float("nan")))


# -- progress and cancel -------------------------------------------------------

class Cancelled(Exception):
    pass


def test_callback_runs_once_per_step_and_its_exception_cancels(motion, keyframe):
    steps: list[tuple[int, int]] = []
    reference = render(motion, keyframe, callback=lambda step, total: steps.append((step, total)))
    assert steps == [(1, STEPS), (2, STEPS), (3, STEPS), (4, STEPS)]

    def cancel_at_step_2(step: int, total: int) -> None:
        if step == 2:
            raise Cancelled

    with forward_calls(motion) as calls, pytest.raises(Cancelled):
        render(motion, keyframe, callback=cancel_at_step_2)
    assert calls == {"transformer": 2 * 2}  # stopped after the second step
    assert np.array_equal(render(motion, keyframe), reference)  # no cache state left behind by the cancel


# -- checkpoints ---------------------------------------------------------------

def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no Wan2.2 I2V checkpoint at {tmp_path / 'nope'}: the folder does not "
                                                f"exist"):
        load_wan(handle(tmp_path / "nope"))


def test_missing_component_files_are_listed(checkpoint, tmp_path):
    broken = shutil.copytree(checkpoint, tmp_path / "wan")
    (broken / "transformer_2" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()  # one shard of three
    (broken / "vae" / "config.json").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(FileNotFoundError) as error:
        load_wan(handle(broken))
    assert str(error.value) == (
        f"the Wan2.2 I2V checkpoint in {broken} is incomplete: missing tokenizer/tokenizer_config.json, "
        "tokenizer/tokenizer.json (or vocab.json + merges.txt, or spiece.model), "
        "transformer_2/diffusion_pytorch_model-00002-of-00003.safetensors (listed in "
        "diffusion_pytorch_model.safetensors.index.json), vae/config.json; complete it with "
        f"`hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers --local-dir {broken}`")
    (broken / "model_index.json").unlink()  # no index: the published layout says what is needed
    assert missing_files("wan2.2-i2v", broken) == [
        "model_index.json", "tokenizer/tokenizer_config.json",
        "tokenizer/tokenizer.json (or vocab.json + merges.txt, or spiece.model)",
        "transformer_2/diffusion_pytorch_model-00002-of-00003.safetensors (listed in "
        "diffusion_pytorch_model.safetensors.index.json)", "vae/config.json"]


def test_sharded_experts_load_and_a_missing_shard_is_named(checkpoint, tmp_path, keyframe):
    from diffusers import WanTransformer3DModel

    sharded = shutil.copytree(checkpoint, tmp_path / "wan")
    expert = WanTransformer3DModel.from_pretrained(sharded / "transformer")
    shutil.rmtree(sharded / "transformer")
    expert.save_pretrained(sharded / "transformer", max_shard_size="40KB")  # the real expert ships in 12 shards
    shards = sorted(p.name for p in (sharded / "transformer").glob("*.safetensors"))
    assert len(shards) > 1 and missing_files("wan2.2-i2v", sharded) == []
    model = load_wan(handle(sharded))
    assert torch.equal(model.pipe.transformer.proj_out.weight, expert.proj_out.weight)
    unload_wan(model)
    (sharded / "transformer" / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing transformer/{shards[1]} \\(listed in "
                                                f"diffusion_pytorch_model.safetensors.index.json\\); complete"):
        load_wan(handle(sharded))


def test_not_a_two_expert_checkpoint_is_refused(checkpoint, tmp_path):
    single = shutil.copytree(checkpoint, tmp_path / "wan")
    index = json.loads((single / "model_index.json").read_text())
    (single / "model_index.json").write_text(json.dumps({**index, "boundary_ratio": None}))
    with pytest.raises(ValueError, match="needs a WanImageToVideoPipeline with two experts"):
        load_wan(handle(single))
    (single / "model_index.json").write_text(json.dumps({**index, "transformer_2": [None, None]}))
    with pytest.raises(FileNotFoundError, match="missing transformer_2/ \\(model_index.json lists no transformer_2; "
                                                "the published checkpoint has a WanTransformer3DModel\\)"):
        load_wan(handle(single))


def test_uncached_hub_id_fails_offline_without_reaching_for_the_network(monkeypatch, tmp_path, network_attempts):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Wan-AI/Wan2.2-I2V-A14B-Diffusers is not downloaded; run "
                                                "`hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers`"):
        load_wan(handle("Wan-AI/Wan2.2-I2V-A14B-Diffusers"))
    assert network_attempts == []


def test_cached_hub_id_loads_through_the_same_loader(monkeypatch, tmp_path, checkpoint, keyframe):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--cinereel--tiny-wan"
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model = load_wan(handle("cinereel/tiny-wan"))
    assert Path(model.pipe.name_or_path) == repo / "snapshots" / commit
    unload_wan(model)


# -- residency -----------------------------------------------------------------

def test_eviction_frees_the_pipeline(checkpoint, keyframe):
    manager = ResidencyManager()
    with manager.use(handle(checkpoint)) as model:
        assert render(model, keyframe).shape[0] == 5
        experts = weakref.ref(model.pipe.transformer), weakref.ref(model.pipe.transformer_2)
    del model
    assert manager.evict("test")
    gc.collect()
    assert manager.log[-1]["still_referenced"] is False
    assert all(ref() is None for ref in experts)


def test_importing_the_module_imports_no_model_library():
    probe = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cinereel", {str(PACK_ROOT / "__init__.py")!r},
                                              submodule_search_locations=[{str(PACK_ROOT)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["cinereel"] = module
spec.loader.exec_module(module)
before = set(sys.modules)
import cinereel.model_loaders.wan
new = {{name.split(".")[0] for name in set(sys.modules) - before}}
print(sorted(new & {{"torch", "diffusers", "transformers", "PIL", "pydantic"}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
