"""One settings file for a headless run (issue #17): layers, the template, the reference pipeline's keys."""

from __future__ import annotations

import json

import pytest
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.nodes.pipeline import settings as cfg
from cinereel.nodes.pipeline.cli import handles_from_args, main, parser

TOKYO = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
SMALL = ["--duration", "4", "--shots", "2", "--resolution", "480p"]


def resolve(argv, env=None):
    return cfg.resolve(parser(), argv, env or {})


@pytest.mark.parametrize("name", ["cinereel.toml", "cinereel.yaml"])
def test_a_template_written_by_config_init_loads_back_unchanged(tmp_path, capsys, name):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    assert main(["config", "init", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    for recommended in ("flow_shift_hero = 5.0", "flow_shift_broll = 8.0", "never above 8", 'dtype = "bfloat16"',
                        "compile_transformer_2 = false", "transformer_2", "first_block_cache = 0.05",
                        "threshold = 7.0", "max_retries = 3", "target_lufs = -18.0"):
        assert recommended.replace(" = ", ": " if name.endswith(".yaml") else " = ") in text, recommended
    layer = cfg.file_layer(path)
    assert layer.problems == [] and layer.ignored == []
    assert cfg.render(layer.values, yaml=name.endswith(".yaml")) == text  # written, read, written: the same
    _, resolved = resolve([TOKYO, "--config", str(path)])
    assert set(resolved.sources.values()) == {"file"}
    defaults = {name: s.default for name, s in cfg.settings().items()}
    assert resolved.values == {**defaults, "pipeline.out": str(tmp_path / "output")}  # relative to the file
    assert main(["config", "init", str(path)]) == 2 and "exists" in capsys.readouterr().err  # not overwritten


def test_precedence_flag_over_environment_over_file_over_default(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[pipeline]\nseed = 1\nshots = 3\n[gate]\nthreshold = 5\n[motion]\ncheckpoint = "
                    '"Wan-AI/Wan2.2-I2V-A14B-Diffusers"\nsteps = 20\nguidance = 2.0\n', encoding="utf-8")
    env = {"CINEREEL_PIPELINE_SEED": "2", "CINEREEL_PIPELINE_SHOTS": "4", "CINEREEL_MOTION_STEPS": "25"}
    args, resolved = resolve([TOKYO, "--config", str(path), "--shots", "5", "--set", "motion.steps=30"], env)
    expect = {"pipeline.duration": (30.0, "default"), "gate.threshold": (5.0, "file"),
              "motion.guidance": (2.0, "file"), "pipeline.seed": (2, "environment"),
              "pipeline.shots": (5, "flag"), "motion.steps": (30, "flag")}
    assert {name: (resolved.values[name], resolved.sources[name]) for name in expect} == expect
    assert (args.duration, args.threshold, args.seed, args.shots) == (30.0, 5.0, 2, 5)
    motion = handles_from_args(args)["motion"]  # loader options reach the handle with the same precedence
    assert (motion.option("steps"), motion.option("guidance")) == (30, 2.0)
    _, no_flag = resolve([TOKYO, "--config", str(path)], env)
    assert (no_flag.values["motion.steps"], no_flag.sources["motion.steps"]) == (25, "environment")

    monkey = pytest.MonkeyPatch()
    try:
        for name, value in env.items():
            monkey.setenv(name, value)
        assert main(["config", "show", "--config", str(path), "--shots", "5", "--format", "json"]) == 0
    finally:
        monkey.undo()
    shown = json.loads(capsys.readouterr().out)["values"]
    assert {name: (shown[name]["value"], shown[name]["source"]) for name in expect if name != "motion.steps"} == \
        {name: expect[name] for name in expect if name != "motion.steps"}


def test_a_settings_file_makes_the_same_plan_and_artifacts_as_the_flag_line(tmp_path, capsys):
    flags = [TOKYO, *SMALL, "--seed", "3", "--language", "fr", "--target-lufs", "-16", "--flow-shift-hero", "4.5",
             "--flow-shift-broll", "7", "--ref-weight", "0.6", "--set", "motion.steps=30", "--set",
             "keyframes.offload=model", "--keep", "all", "--run-id", "same", "--out", str(tmp_path / "a")]
    assert main(flags) == 0
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "reel.toml"
    path.write_text("""
[pipeline]
duration = 4
shots = 2
resolution = "480p"
seed = 3
language = "fr"
keep = "all"
run_id = "same"
out = "../b"            # relative to this file
[keyframes]
offload = "model"
ref_weight = 0.6
[motion]
steps = 30
flow_shift_hero = 4.5
flow_shift_broll = 7
[mix]
target_lufs = -16
""", encoding="utf-8")
    assert main([TOKYO, "--config", str(path)]) == 0
    a, b = tmp_path / "a" / "cinereel" / "same", tmp_path / "b" / "cinereel" / "same"
    plan = json.loads((a / "plan.json").read_text(encoding="utf-8"))
    assert plan == json.loads((b / "plan.json").read_text(encoding="utf-8"))
    assert {s["ref_weight"] for s in plan["shots"]} == {0.6}
    assert all(s["flow_shift"] == (4.5 if s["type"] == "hero" else 7.0) for s in plan["shots"])
    keys = [{rel: entry["key"] for rel, entry in json.loads((run / "manifest.json").read_text()).items()}
            for run in (a, b)]
    assert keys[0] == keys[1] and len(keys[0]) > 5
    report = json.loads((b / "report.json").read_text(encoding="utf-8"))["settings"]
    assert report["file"] == str(path)
    assert report["values"]["motion.flow_shift_hero"] == {"value": 4.5, "source": "file"}
    assert report["values"]["gate.threshold"] == {"value": 7.0, "source": "default"}
    flagged = json.loads((a / "report.json").read_text(encoding="utf-8"))["settings"]["values"]
    assert flagged["motion.steps"] == {"value": 30, "source": "flag"}


def test_written_out_defaults_key_a_real_handle_like_leaving_them_out(tmp_path):
    path = tmp_path / "run.toml"
    assert main(["config", "init", str(path)]) == 0
    real = ["--motion", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "--keyframes", "black-forest-labs/FLUX.2-klein-4B"]
    from_file = handles_from_args(resolve([TOKYO, "--config", str(path), *real])[0])
    bare = handles_from_args(resolve([TOKYO, *real])[0])
    assert {s: h.key for s, h in from_file.items()} == {s: h.key for s, h in bare.items()}


@pytest.mark.parametrize("text,message", [
    ("[motion]\nflow_shift_heor = 5\n", "unknown key 'motion.flow_shift_heor'; did you mean 'motion.flow_shift_hero'?"),
    ("[pipeline]\nquality_treshold = 7\n", "did you mean 'pipeline.quality_threshold'?"),
    ("[motoin]\nsteps = 3\n", "unknown key 'motoin'; did you mean 'motion'?"),
    ("seed = 3\n", "unknown key 'seed'; did you mean 'pipeline.seed'?"),
    ("[gate]\nthreshold = \"high\"\n", "gate.threshold: 'high' must be a number"),
    ("[motion]\nsteps = 0\n", "motion.steps=0 is outside 1 to 200"),
    ("[pipeline]\nkeep = \"some\"\n", "'some' is not one of all, best, final"),
    ("[models.motion]\ncompile_target = \"all\"\n", "only transformer_2 (the low-noise expert) can be compiled"),
    ("[pipeline]\noutput_resolution = \"1920x1080\"\n", "not a size CineReel renders"),
    ("[pipeline\n", "is not valid TOML"),
])
def test_a_wrong_file_fails_at_preflight_before_anything_loads(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    mark = RESIDENCY.mark()
    assert main([TOKYO, "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error:") and message in err and err.count("\n") == 1, err
    assert RESIDENCY.log_since(mark) == [] and not (tmp_path / "out").exists()


def test_out_of_range_values_from_the_file_meet_the_preflight_rules(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[motion]\nflow_shift_broll = 12\n[gate]\nenabled = true\nmax_retries = 9\n", encoding="utf-8")
    assert main([TOKYO, "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "flow_shift_broll must be a number from 1 to 8" in err and "max_retries" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_environment_value_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CINEREEL_GATE_THRESHOLD", "abc")
    assert main([TOKYO, "--out", str(tmp_path / "out")]) == 2
    assert "CINEREEL_GATE_THRESHOLD='abc': gate.threshold must be a number" in capsys.readouterr().err


REFERENCE_YAML = """
pipeline:
  device: cuda
  precision: bf16
  output_resolution: [832, 480]
  max_retries: 2
  quality_threshold: 6.5
models:
  director: {model_id: Qwen/Qwen3.5-35B-A3B, subprocess: true}
  critic: {model_id: Qwen/Qwen3.5-35B-A3B, subprocess: true}
  keyframe: {model_id: black-forest-labs/FLUX.2-klein-4B, ref_weight: 0.8}
  motion:
    model_id: Wan-AI/Wan2.2-I2V-A14B-Diffusers
    flow_shift_hero: 5.0
    flow_shift_broll: 8.0
    compile_target: transformer_2
  music: {model_id: ACE-Step/acestep-v15-xl-turbo-diffusers, mood_mapping: {calm: ambient pads}}
  voice: {model_id: hexgrad/Kokoro-82M, languages: [en, ja, de]}
  lufs_target: -18
optimization:
  paraattention_fbcache: 0.05
memory_management:
  gc_collect: true
  empty_cache: true
  subprocess_isolation: true
  hip_force_dev_kernarg: 1
"""


def test_the_reference_pipelines_template_is_read_as_it_is(tmp_path, capsys):
    pytest.importorskip("yaml")
    path = tmp_path / "reference.yaml"
    path.write_text(REFERENCE_YAML, encoding="utf-8")
    _, resolved = resolve([TOKYO, "--config", str(path)])
    expect = {"pipeline.device": "cuda", "pipeline.dtype": "bfloat16", "pipeline.resolution": "480p",
              "pipeline.aspect": "16:9", "gate.max_retries": 2, "gate.threshold": 6.5,
              "llm.checkpoint": "Qwen/Qwen3.5-35B-A3B", "llm.residency": "subprocess",
              "keyframes.checkpoint": "black-forest-labs/FLUX.2-klein-4B", "keyframes.ref_weight": 0.8,
              "motion.flow_shift_hero": 5.0, "motion.flow_shift_broll": 8.0, "motion.compile_transformer_2": True,
              "motion.first_block_cache": 0.05, "mix.target_lufs": -18.0, "voice.checkpoint": "hexgrad/Kokoro-82M"}
    assert {name: resolved.values[name] for name in expect} == expect
    assert resolved.origins["gate.threshold"] == "pipeline.quality_threshold"
    ignored = "\n".join(resolved.ignored)
    for key in ("models.music.mood_mapping: recognised, not applied", "models.voice.languages",
                "memory_management.gc_collect", "memory_management.hip_force_dev_kernarg: another vendor's"):
        assert key in ignored, ignored
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "(file: pipeline.quality_threshold)" in shown and shown.count("# ignored") == 5


def test_a_critic_on_another_checkpoint_contradicts_the_shared_one(tmp_path, capsys):
    path = tmp_path / "reference.toml"
    path.write_text('[models.director]\nmodel_id = "preview"\n[models.critic]\nmodel_id = "other"\n',
                    encoding="utf-8")
    assert main([TOKYO, "--config", str(path)]) == 2
    assert "both set llm.checkpoint" in capsys.readouterr().err
