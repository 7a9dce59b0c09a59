"""``cinereel estimate``: the planned reel on five GPUs for both motion presets, every number from the data file."""

from __future__ import annotations

import json
import re

import pytest
from cinereel.model_loaders.cost_model import COSTS_PATH, expert_passes, flow_timesteps, load_costs
from cinereel.nodes.pipeline.cli import main
from cinereel_testkit import PACK_ROOT

GPUS = ["H100", "H200", "MI300X", "RTX 4090", "L40S"]


def estimate_json(capsys, *argv: str) -> dict:
    assert main(["estimate", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def totals(result: dict) -> dict[tuple[str, str], float]:
    return {(row["gpu"], row["preset"]): row["total_s"] for row in result["rows"]}


def test_default_plan_projects_both_presets_on_every_gpu(capsys):
    result = estimate_json(capsys)
    assert result["reel"]["shots"] == 6 and (result["reel"]["width"], result["reel"]["height"]) == (1280, 720)
    assert result["reel"]["frames_per_clip"] == [81] * 6
    projected = totals(result)
    assert sorted(projected) == sorted((gpu, preset) for gpu in GPUS for preset in ("quality", "fast"))
    for gpu in GPUS:
        assert 0 < projected[gpu, "fast"] < projected[gpu, "quality"]
    quality = next(r for r in result["rows"] if r["preset"] == "quality")
    fast = next(r for r in result["rows"] if r["preset"] == "fast")
    # 40 steps with guidance on both experts: two passes a step, 6 clips of 81 frames; the distilled recipe
    # runs 4 steps, one pass each.
    assert sum(quality["expert_passes"].values()) == 6 * 40 * 2
    assert sum(fast["expert_passes"].values()) == 6 * 4


def test_the_counting_rule_is_diffusers_schedule():
    """The estimate splits steps between the experts on the timesteps diffusers' scheduler really uses."""
    from diffusers import UniPCMultistepScheduler

    for shift in (5.0, 8.0):
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=shift, num_train_timesteps=1000)
        for steps in (4, 40):
            scheduler.set_timesteps(steps)
            assert flow_timesteps(steps, shift) == [int(t) for t in scheduler.timesteps]
    assert expert_passes(4, 3.5, 3.5, 5.0) == {"transformer": 4, "transformer_2": 4}
    assert expert_passes(4, 1.0, 1.0, 8.0) == {"transformer": 2, "transformer_2": 2}
    assert expert_passes(4, 3.5, 1.0, 5.0) == {"transformer": 4, "transformer_2": 2}


def test_numbers_come_from_the_data_file(capsys, tmp_path):
    base = totals(estimate_json(capsys))
    costs = load_costs()
    costs["gpus"]["L40S"]["bf16_dense_tflops"] *= 2
    costs["wan"]["anchor"]["seconds"] *= 1.5
    changed = tmp_path / "costs.json"
    changed.write_text(json.dumps(costs), encoding="utf-8")
    result = estimate_json(capsys, "--costs", str(changed))
    after = totals(result)
    for gpu in GPUS:
        for preset in ("quality", "fast"):
            assert after[gpu, preset] > base[gpu, preset] or gpu == "L40S"
    assert after["L40S", "quality"] < base["L40S", "quality"]  # twice the throughput beats 1.5x the anchor
    pass_s = {row["gpu"]: row["pass_s"] for row in result["rows"]}
    assert pass_s["H100"] == pytest.approx(costs["wan"]["anchor"]["seconds"] / costs["wan"]["anchor"]["passes"])


def test_presets_are_the_motion_loaders():
    from cinereel.model_loaders import wan

    presets = getattr(wan, "SPEED_PRESETS", None)
    if presets is None:
        pytest.skip("the motion loader has no speed presets yet (issue #14 part 1)")
    costs = load_costs()
    for name, preset in presets.items():
        assert {key: costs["presets"][name][key] for key in preset} == preset


def test_every_figure_has_its_source():
    costs = json.loads(COSTS_PATH.read_text(encoding="utf-8"))
    sections = [*costs["gpus"].values(), costs["host"], *costs["presets"].values(), costs["wan"]["anchor"],
                costs["wan"]["architecture"], costs["wan"]["weights_gb"], costs["keyframes"], costs["llm"],
                costs["voice"], costs["music"]]
    assert all(section.get("source", "").strip() for section in sections)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", costs["as_of"])


def test_custom_motion_settings_add_a_row_and_480p_costs_less(capsys):
    result = estimate_json(capsys, "--gpu", "H100", "--set", "motion.steps=8", "--set", "motion.guidance=1.0",
                           "--set", "motion.guidance_2=1.0")
    custom = next(r for r in result["rows"] if r["preset"] == "custom")
    assert sum(custom["expert_passes"].values()) == 6 * 8
    at_720 = totals(result)["H100", "quality"]
    at_480 = totals(estimate_json(capsys, "--gpu", "H100", "--resolution", "480p"))["H100", "quality"]
    assert at_480 < at_720 / 2


def test_a_bad_speed_is_one_line(capsys):
    assert main(["estimate", "--set", "motion.speed=turbo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error: --set motion.speed='turbo'") and err.count("\n") == 1


def test_readme_table_is_the_default_estimate(capsys):
    assert main(["estimate"]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"<!-- cinereel estimate -->\n(.*?)\n<!-- /cinereel estimate -->", readme, re.S)
    assert shown is not None, "README.md must show `cinereel estimate`'s output between its markers"
    assert shown.group(1).strip() == printed


def test_the_director_node_says_the_estimate(tmp_path, monkeypatch):
    from cinereel.nodes.director import DirectorNode
    from cinereel.nodes.pipeline.headless import preview_handles

    monkeypatch.setenv("CINEREEL_OUTPUT", str(tmp_path / "out"))
    result = DirectorNode().plan(preview_handles()["llm"], "A lone astronaut walks through Tokyo at dusk", 30.0, 6,
                                 "16:9", "en-US", 0)
    line = result["ui"]["cinereel_plan"][0]["estimate"]
    duration = r"(\d+\.\d min|\d+ h \d\d min)"
    assert re.fullmatch(rf"estimate on one H100: quality {duration}, fast {duration} \(cinereel estimate for other "
                        r"GPUs\)", line), line
