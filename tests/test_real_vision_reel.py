"""The real keyframe and motion backends on tiny checkpoints: phase-major loads, memory back, the 720p workflow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported before any load, as in ComfyUI, so load memory is the model's own)
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.nodes.pipeline.director import direct
from cinereel.nodes.pipeline.headless import preview_handles
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.motion import animate
from cinereel_testkit import sample_plan_dict

pytestmark = pytest.mark.reel

HERE = Path(__file__).resolve().parent
MB = 2**20


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_checkpoints(one_torch_thread) -> dict[str, Path]:
    return {"flux2": _load("tiny_flux2").tiny_flux2_checkpoint(), "wan": _load("tiny_wan").tiny_wan_checkpoint()}


def tiny_plan(shots: int, size: int = 64) -> str:
    plan = sample_plan_dict(width=256, height=256, duration_s=float(shots))
    plan["shots"] = [{"id": f"shot_{i + 1:02d}", "type": "hero" if i % 2 else "broll", "duration_s": 1.0,
                      "prompt": f"shot {i + 1}: the astronaut in the alley", "camera": "push_in",
                      "characters": ["astronaut"] if i % 2 else [], "narration": "", "seed": 10 + i,
                      "flow_shift": 5.0 if i % 2 else 8.0} for i in range(shots)]
    return json.dumps(plan)


def handles(ckpt: dict[str, Path]) -> tuple[ModelHandle, ModelHandle]:
    keyframes = ModelHandle("flux2-klein", str(ckpt["flux2"]), dtype="float32", device="cpu",
                            options={"steps": 2, "first_block_cache": 0.0})
    motion = ModelHandle("wan2.2-i2v", str(ckpt["wan"]), dtype="float32", device="cpu",
                         options={"steps": 2, "first_block_cache": 0.0})
    return keyframes, motion


def test_a_six_shot_reel_loads_each_renderer_once_and_memory_returns(tmp_path, tiny_checkpoints):
    from cinereel.model_loaders.rules import DirectorRequest

    keyframes, motion = handles(tiny_checkpoints)
    reel = direct(preview_handles()["llm"], DirectorRequest("tiny", duration_s=6, shots=6), tmp_path,
                  run_id="tiny-six", plan_override=tiny_plan(6))
    # Warm-up: the first load of a family imports diffusers' and transformers' modules for good (as
    # once per ComfyUI process); that is library code, not model memory, so it is paid before measuring.
    for handle in (keyframes, motion):
        with RESIDENCY.use(handle):
            pass
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    reel = animate(render_keyframes(reel, keyframes), motion)
    RESIDENCY.evict("end of test")
    log = RESIDENCY.log_since(mark)
    assert [(e["event"], e["family"]) for e in log] == [
        ("load", "flux2-klein"), ("evict", "flux2-klein"), ("load", "wan2.2-i2v"), ("evict", "wan2.2-i2v")]
    for load, evict in zip(log[0::2], log[1::2]):
        assert abs(evict["rss_after"] - load["rss_before"]) <= max(0.05 * load["rss_before"], 50 * MB), (load, evict)
        assert evict["still_referenced"] is False
    for shot in reel.plan.shots:
        assert reel.artifact_path(f"keyframe:{shot.id}").stat().st_size > 0
        assert reel.artifact_path(f"clip:{shot.id}").stat().st_size > 0
    assert reel.artifact_path("portrait:astronaut").exists()
