"""The FLUX.2 klein keyframe backend, run on a tiny random-weight checkpoint of the real classes.

The checkpoint is loaded from a folder through the same loader as the real
one. Nothing may reach the network: a socket guard fails any test that tries.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cinereel.model_loaders.flux2 import (
    DEFAULT_FIRST_BLOCK_CACHE,
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    Flux2KleinKeyframes,
    Flux2Options,
    configure_pipeline,
    load_flux2,
    reference_attention_bias,
    unload_flux2,
)
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import ResidencyManager, family
from cinereel_testkit import PACK_ROOT, NetworkBlocked, sample_plan_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_flux2", HERE / "tiny_flux2.py")
tiny_flux2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_flux2)

STEPS = 2
WIDTH, HEIGHT = 320, 256


# -- no network ------------------------------------------------------------------


def test_the_socket_guard_blocks_the_network(network_attempts):
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    assert network_attempts == [("192.0.2.1", 443)]
    network_attempts.clear()


# -- fixtures --------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return tiny_flux2.tiny_flux2_checkpoint()


def handle(checkpoint: Path | str, **options) -> ModelHandle:
    return ModelHandle("flux2-klein", str(checkpoint), dtype="float32", device="cpu",
                       options={"steps": STEPS, "first_block_cache": 0, **options})


@pytest.fixture(scope="module")
def backend(checkpoint):
    model = load_flux2(handle(checkpoint))
    yield model
    unload_flux2(model)


@pytest.fixture(scope="module")
def plan() -> dict:
    return sample_plan_dict(width=WIDTH, height=HEIGHT)


@pytest.fixture(scope="module")
def portrait(backend, plan):
    return backend.render_portrait(plan["characters"][0], plan, seed=3)


def hero_shot(plan: dict, **changes) -> dict:
    return {**plan["shots"][1], **changes}


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def mean_diff(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


# -- the module and the family ----------------------------------------------------

def test_importing_the_backend_imports_no_heavy_library():
    code = (
        "import importlib.util, sys\n"
        f"root = {str(PACK_ROOT)!r}\n"
        "spec = importlib.util.spec_from_file_location('cinereel', root + '/__init__.py',"
        " submodule_search_locations=[root])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules['cinereel'] = pack; spec.loader.exec_module(pack)\n"
        "before = set(sys.modules)\n"
        "import cinereel.model_loaders.flux2\n"
        "print(sorted(set(sys.modules) - before & {'torch', 'diffusers', 'transformers', 'PIL'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_family_is_registered():
    assert family("flux2-klein").load is load_flux2
    assert family("flux2-klein").unload is unload_flux2


def test_tiny_checkpoint_has_the_real_layout(checkpoint):
    index = json.loads((checkpoint / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is True
    assert index["text_encoder"] == ["transformers", "Qwen3ForCausalLM"]
    assert index["tokenizer"] == ["transformers", "Qwen2TokenizerFast"]
    assert (checkpoint / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoint / "text_encoder" / "model.safetensors.index.json").is_file()
    assert json.loads((checkpoint / "text_encoder" / "config.json").read_text())["num_hidden_layers"] >= 28


# -- rendering ---------------------------------------------------------------------

def test_loads_from_a_folder_and_renders_a_portrait_then_a_keyframe_on_it(backend, plan, portrait):
    assert backend.engine == "flux2-klein"
    assert type(backend.pipeline).__name__ == "Flux2KleinPipeline"
    assert portrait.mode == "RGB" and portrait.size == (HEIGHT, HEIGHT)
    image_tokens = []
    spy = backend.pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: image_tokens.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        keyframe = backend.render_keyframe(hero_shot(plan, ref_weight=1.0), plan, {"astronaut": portrait}, seed=2)
    finally:
        spy.remove()
    assert keyframe.mode == "RGB" and keyframe.size == (WIDTH, HEIGHT)
    assert image_tokens == [(WIDTH // 16) * (HEIGHT // 16) + (HEIGHT // 16) ** 2] * STEPS  # keyframe + portrait
    unconditioned = backend.render_keyframe(hero_shot(plan, characters=[]), plan, {}, seed=2)
    assert mean_diff(keyframe, unconditioned) > 0.05, "the portrait did not reach the keyframe"


def test_same_seed_same_image_other_seed_other_image(backend, plan):
    character = plan["characters"][0]
    first = backend.render_portrait(character, plan, seed=11)
    assert mean_diff(first, backend.render_portrait(character, plan, seed=11)) == 0
    assert mean_diff(first, backend.render_portrait(character, plan, seed=12)) > 1


def test_ref_weight_scales_the_reference_from_none_to_full(backend, plan, portrait):
    def render(**changes):
        return backend.render_keyframe(hero_shot(plan, **changes), plan, {"astronaut": portrait}, seed=2)

    unconditioned = render(characters=[])
    diffs = {w: mean_diff(render(ref_weight=w), unconditioned) for w in (0.0, 1e-6, 0.25, 1.0)}
    assert diffs[0.0] == 0, "ref_weight 0 must equal the render without references"
    assert np.abs(pixels(render(ref_weight=1e-6)) - pixels(unconditioned)).max() <= 1  # the bias tends to none
    assert diffs[1e-6] < diffs[0.25] < diffs[1.0]
    assert diffs[1.0] > 0.05


def test_reference_bias_is_log_weight_on_reference_keys():
    bias = reference_attention_bias(5, 3, 0.5, torch.float32, torch.device("cpu"))
    assert bias.shape == (1, 1, 1, 8)
    assert torch.equal(bias[..., :5], torch.zeros(1, 1, 1, 5))
    assert torch.allclose(bias[..., 5:], torch.full((1, 1, 1, 3), float(np.log(0.5))))
    with pytest.raises(ValueError):
        reference_attention_bias(5, 3, 0.0, torch.float32, torch.device("cpu"))


def test_a_shot_character_without_a_portrait_is_an_error(backend, plan):
    with pytest.raises(ValueError, match="astronaut"):
        backend.render_keyframe(hero_shot(plan), plan, {}, seed=2)


def test_a_ref_weight_outside_0_to_1_is_an_error(backend, plan, portrait):
    with pytest.raises(ValueError, match="ref_weight must be from 0 to 1"):
        backend.render_keyframe(hero_shot(plan, ref_weight=1.5), plan, {"astronaut": portrait}, seed=2)


def test_negative_prompt_is_ignored_by_the_distilled_model(backend, plan, portrait):
    portraits = {"astronaut": portrait}
    plain = backend.render_keyframe(hero_shot(plan), plan, portraits, seed=2)
    negative = backend.render_keyframe(hero_shot(plan, negative_prompt="crowds, text"), plan, portraits, seed=2)
    assert mean_diff(plain, negative) == 0


def test_the_call_record_is_what_the_pipeline_received(backend, plan, portrait, monkeypatch):
    received = []
    call = type(backend.pipeline).__call__

    def spy(pipe, *args, **kwargs):
        received.append(dict(kwargs))
        return call(pipe, *args, **kwargs)

    monkeypatch.setattr(type(backend.pipeline), "__call__", spy)
    shot = hero_shot(plan, negative_prompt="crowds, text")
    backend.render_keyframe(shot, plan, {"astronaut": portrait}, seed=5)
    (kwargs,) = received
    record = backend.last_call()
    assert (record["prompt"], record["width"], record["height"]) == (kwargs["prompt"], kwargs["width"],
                                                                     kwargs["height"])
    assert (record["steps"], record["guidance"]) == (kwargs["num_inference_steps"], kwargs["guidance_scale"])
    assert record["seed"] == kwargs["generator"].initial_seed() == 5
    assert record["references"] == len(kwargs["image"]) == 1
    # The distilled model runs no guidance pass: no negative prompt was sent, and the record says so.
    assert "negative_prompt_embeds" not in kwargs and record["negative_prompt"] is None


def test_negative_prompt_applies_with_guidance_on_an_undistilled_model(checkpoint, plan):
    model = load_flux2(handle(checkpoint, guidance=3.0))
    try:
        model.pipeline.register_to_config(is_distilled=False)  # as the klein Base checkpoints
        plain = model.render_keyframe(hero_shot(plan, characters=[]), plan, {}, seed=2)
        negative = model.render_keyframe(hero_shot(plan, characters=[], negative_prompt="crowds, text"), plan, {},
                                         seed=2)
        assert mean_diff(plain, negative) > 0
    finally:
        unload_flux2(model)


@contextmanager
def text_encoder_calls(model) -> Iterator[Counter]:
    calls: Counter = Counter()
    hook = model.pipeline.text_encoder.register_forward_pre_hook(lambda *_: calls.update(["text_encoder"]))
    try:
        yield calls
    finally:
        hook.remove()


@pytest.mark.parametrize("guided", [False, True], ids=["distilled", "guided"])
def test_the_phases_prompts_are_encoded_once_and_its_pictures_render_without_the_text_encoder(checkpoint, plan,
                                                                                             guided):
    """encode_prompts (the keyframe stage calls it before drawing) runs the pipeline's own encode_prompt; the
    portraits and keyframes then run no text encoder and are the same pictures, pixel for pixel."""
    model = load_flux2(handle(checkpoint, guidance=3.0 if guided else 1.0))
    try:
        if guided:
            model.pipeline.register_to_config(is_distilled=False)  # as the klein Base checkpoints
        character = plan["characters"][0]
        shots = [hero_shot(plan, characters=[], negative_prompt="crowds, text"),
                 hero_shot(plan, characters=[], prompt="a lighthouse in the rain", negative_prompt="")]

        def draw():
            return [model.render_portrait(character, plan, seed=3),
                    *(model.render_keyframe(shot, plan, {}, seed=2) for shot in shots)]

        plain = draw()
        assert model.last_call()["prompt_encoded"] == "in this render"
        with text_encoder_calls(model) as calls:
            # portrait + two keyframes; guided: their negatives ("crowds, text" and "") too
            assert model.encode_prompts([character], shots, plan) == (5 if guided else 3)
            encoded_calls = calls["text_encoder"]
            again = draw()
            assert calls["text_encoder"] == encoded_calls
        assert model.last_call()["prompt_encoded"] == "once for the phase"
        assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, again))
    finally:
        unload_flux2(model)


# -- the step callback --------------------------------------------------------------

def test_callback_is_called_once_per_step(backend, plan, portrait):
    calls = []
    backend.render_keyframe(hero_shot(plan), plan, {"astronaut": portrait}, seed=2,
                            callback=lambda step, total: calls.append((step, total)))
    assert calls == [(1, STEPS), (2, STEPS)]


class Cancelled(Exception):
    pass


def test_an_exception_in_the_callback_stops_the_render(backend, plan):
    calls = []

    def cancel(step, total):
        calls.append(step)
        raise Cancelled

    with pytest.raises(Cancelled):
        backend.render_portrait(plan["characters"][0], plan, seed=3, callback=cancel)
    assert calls == [1]
    assert backend.render_portrait(plan["characters"][0], plan, seed=3).size == (HEIGHT, HEIGHT)


# -- options --------------------------------------------------------------------------

def test_option_defaults():
    options = Flux2Options.from_handle(ModelHandle("flux2-klein", "x"))
    assert options == Flux2Options(offload="none", fp8_storage=False, first_block_cache=DEFAULT_FIRST_BLOCK_CACHE,
                                   attention_backend="native", steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)
    assert (DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_FIRST_BLOCK_CACHE) == (4, 1.0, 0.05)


@pytest.mark.parametrize("name, value", [
    ("offload", "disk"), ("offload", True), ("fp8_storage", "yes"), ("first_block_cache", -0.1),
    ("first_block_cache", 1.5), ("first_block_cache", "fast"), ("attention_backend", "warp-drive"),
    ("steps", 0), ("steps", 2.5), ("guidance", -1.0), ("guidance", "high"),
])
def test_unknown_option_values_are_refused(name, value):
    with pytest.raises(ValueError, match=f"option {name} must be"):
        Flux2Options.from_handle(ModelHandle("flux2-klein", "x", options={name: value}))


def test_bad_options_are_refused_before_any_weights_load(tmp_path):
    with pytest.raises(ValueError, match="attention_backend"):
        load_flux2(handle(tmp_path / "never-read", attention_backend="warp-drive"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize("mode", ["model", "group"])
def test_offload_needs_a_cuda_gpu(checkpoint, mode):
    with pytest.raises(ValueError, match=f"offload='{mode}' needs a CUDA GPU"):
        load_flux2(handle(checkpoint, offload=mode))


@pytest.mark.parametrize("mode", ["model", "group"])
def test_offload_hooks_are_wired_with_diffusers_api(checkpoint, plan, mode):
    """The offload calls themselves, with the CPU standing in for the GPU (which the loader refuses)."""
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(checkpoint, dtype=torch.float32, use_safetensors=True)
    options = Flux2Options(offload=mode, first_block_cache=0, steps=STEPS)
    configure_pipeline(pipe, options, torch.float32, torch.device("cpu"))
    if mode == "model":
        assert len(pipe._all_hooks) == 3 and hasattr(pipe.transformer, "_hf_hook")
    else:
        hooked = [m for m in pipe.transformer.modules()
                  if getattr(m, "_diffusers_hook", None) and m._diffusers_hook.get_hook("group_offloading")]
        assert hooked
    model = Flux2KleinKeyframes(pipe, options, torch.float32, torch.device("cpu"))
    assert model.render_portrait(plan["characters"][0], plan, seed=3).size == (HEIGHT, HEIGHT)
    unload_flux2(model)
    assert not pipe._all_hooks


def test_fp8_storage_stores_transformer_weights_in_float8_and_renders(checkpoint, plan):
    model = load_flux2(handle(checkpoint, fp8_storage=True))
    try:
        transformer = model.pipeline.transformer
        assert transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
        assert transformer.single_transformer_blocks[0].attn.to_qkv_mlp_proj.weight.dtype == torch.float8_e4m3fn
        assert model.pipeline.text_encoder.dtype == torch.float32
        portrait = model.render_portrait(plan["characters"][0], plan, seed=3)
        keyframe = model.render_keyframe(hero_shot(plan, ref_weight=0.5), plan, {"astronaut": portrait}, seed=2)
        assert keyframe.size == (WIDTH, HEIGHT) and pixels(keyframe).std() > 0
    finally:
        unload_flux2(model)


def test_first_block_cache_hooks_the_single_stream_blocks_and_resets_after_a_cancel(checkpoint, backend, plan,
                                                                                      monkeypatch):
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    character = plan["characters"][0]
    model = load_flux2(handle(checkpoint, first_block_cache=0.05))
    try:
        blocks = model.pipeline.transformer.single_transformer_blocks
        assert blocks[0]._diffusers_hook.get_hook("fbc_leader_block_hook") is not None
        assert blocks[-1]._diffusers_hook.get_hook("fbc_block_hook") is not None
        # Random weights change the first block's residual by over 100% a step, so no sane threshold skips here:
        # make the leader skip whenever it has a residual cached, to see the hooks act in the forward pass.
        monkeypatch.setattr(FBCHeadBlockHook, "_should_compute_remaining_blocks",
                            lambda hook, residual: hook.state_manager.get_state().head_block_residual is None)
        cached = model.render_portrait(character, plan, seed=3)
        assert mean_diff(cached, backend.render_portrait(character, plan, seed=3)) > 0, "the cache never skipped"
        with pytest.raises(Cancelled):
            model.render_portrait(character, plan, seed=3, callback=_cancel_at_last_step)
        assert mean_diff(model.render_portrait(character, plan, seed=3), cached) == 0, "stale cache state"
    finally:
        unload_flux2(model)


def _cancel_at_last_step(step: int, total: int) -> None:
    if step == total:
        raise Cancelled


def test_default_first_block_cache_renders(checkpoint, plan):
    model = load_flux2(ModelHandle("flux2-klein", str(checkpoint), dtype="float32", device="cpu",
                                   options={"steps": STEPS}))
    try:
        assert model.options.first_block_cache == 0.05
        assert model.render_portrait(plan["characters"][0], plan, seed=3).size == (HEIGHT, HEIGHT)
    finally:
        unload_flux2(model)


def test_attention_backend_is_set_on_every_processor_and_renders(checkpoint, backend, plan, portrait):
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    before = _AttentionBackendRegistry.get_active_backend()[0]
    model = load_flux2(handle(checkpoint, attention_backend="_native_math"))
    try:
        processors = [m.processor for m in model.pipeline.transformer.modules() if hasattr(m, "processor")]
        assert len(processors) == 4
        assert {p._attention_backend for p in processors} == {AttentionBackendName._NATIVE_MATH}
        assert _AttentionBackendRegistry.get_active_backend()[0] == before, "the process-wide default changed"
        shot = hero_shot(plan, ref_weight=0.5)
        math_frame = model.render_keyframe(shot, plan, {"astronaut": portrait}, seed=2)
        native_frame = backend.render_keyframe(shot, plan, {"astronaut": portrait}, seed=2)
        assert np.abs(pixels(math_frame) - pixels(native_frame)).max() <= 1
    finally:
        unload_flux2(model)


def test_default_attention_backend_is_native(backend):
    from diffusers.models.attention_dispatch import AttentionBackendName

    processors = [m.processor for m in backend.pipeline.transformer.modules() if hasattr(m, "processor")]
    assert {p._attention_backend for p in processors} == {AttentionBackendName.NATIVE}


def test_an_unavailable_attention_backend_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match="attention_backend='flash' cannot be used here"):
        load_flux2(handle(checkpoint, attention_backend="flash"))


def test_partial_ref_weight_needs_a_backend_that_takes_a_mask(backend, plan, portrait):
    flash = Flux2KleinKeyframes(backend.pipeline, replace(backend.options, attention_backend="flash"),
                                backend.dtype, backend.device)
    with pytest.raises(ValueError, match="needs an attention backend that takes a float mask"):
        flash.render_keyframe(hero_shot(plan, ref_weight=0.5), plan, {"astronaut": portrait}, seed=2)


# -- checkpoints --------------------------------------------------------------------

def test_a_missing_folder_names_where_it_looked(tmp_path):
    missing = tmp_path / "FLUX.2-klein-4B"
    with pytest.raises(FileNotFoundError, match="folder does not exist") as err:
        load_flux2(handle(missing))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("remove, expected", [
    (["transformer/diffusion_pytorch_model.safetensors"], ["transformer/diffusion_pytorch_model.safetensors (or its "
                                                           "shards with diffusion_pytorch_model.safetensors.index.json)"]),
    (["text_encoder/model-00002-of-00002.safetensors"],
     ["text_encoder/model-00002-of-00002.safetensors (listed in model.safetensors.index.json)"]),
    (["vae"], ["vae/config.json", "vae/diffusion_pytorch_model.safetensors (or its shards with "
                                  "diffusion_pytorch_model.safetensors.index.json)"]),
    (["tokenizer/tokenizer.json", "scheduler/scheduler_config.json"],
     ["scheduler/scheduler_config.json", "tokenizer/tokenizer.json (or vocab.json + merges.txt, or spiece.model)"]),
    (["model_index.json"], ["model_index.json"]),
])
def test_an_incomplete_folder_names_the_missing_files(checkpoint, tmp_path, remove, expected):
    folder = tmp_path / "klein"
    shutil.copytree(checkpoint, folder)
    for relative in remove:
        target = folder / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_flux2(handle(folder))
    message = str(err.value)
    assert str(folder) in message
    assert f"missing {', '.join(expected)}; complete it with `hf download black-forest-labs/FLUX.2-klein-4B " \
           f"--local-dir {folder}`" in message


def test_an_uncached_hub_id_fails_offline_without_reaching_for_the_network(network_attempts):
    with pytest.raises(FileNotFoundError, match="is not downloaded") as err:
        load_flux2(handle("cinereel-tests/not-in-any-cache"))
    assert "hf download cinereel-tests/not-in-any-cache" in str(err.value)
    assert network_attempts == []


# -- residency ------------------------------------------------------------------------

def test_the_residency_manager_loads_renders_and_frees_it(checkpoint, plan):
    manager = ResidencyManager()
    with manager.use(handle(checkpoint)) as model:
        portrait = model.render_portrait(plan["characters"][0], plan, seed=3)
        model.render_keyframe(hero_shot(plan), plan, {"astronaut": portrait}, seed=2)
        transformer = weakref.ref(model.pipeline.transformer)
    del model
    manager.evict("test")
    gc.collect()
    assert manager.log[-1]["still_referenced"] is False
    assert transformer() is None, "the transformer outlived its eviction"
