"""``cinereel --benchmark --json``: one JSON object with stage shares, loads and evictions, each Wan2.2
expert's forward passes per clip (counted at the model call) and a plain x264 encode made in the same run."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from cinereel.model_loaders.cost_model import expert_passes
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.nodes.pipeline import video
from cinereel.nodes.pipeline.cli import main
from cinereel_testkit import load_test_module, sample_plan_dict

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
STEPS = 4


def plan_file(tmp_path: Path, width: int, height: int, shot_s: float) -> Path:
    plan = sample_plan_dict(width=width, height=height, duration_s=2 * shot_s)
    for shot in plan["shots"]:
        shot["duration_s"] = shot_s
        if shot_s < 2:  # too short to speak the sample line in
            shot["narration"] = ""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def nothing_resident():
    """Each benchmark starts as a fresh process does: no model resident from an earlier test."""
    RESIDENCY.evict("test isolation")


ONE_ROUND = ("--benchmark-rounds", "1", "--benchmark-warmup", "0")  # in this process, where the test's spies are


def benchmark_json(*argv: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([SENTENCE, "--benchmark", "--json", *argv]) == 0
    (line,) = out.getvalue().splitlines()  # one JSON object, nothing else on standard output
    return json.loads(line)


def test_preview_benchmark_is_one_json_object_with_shares_loads_and_the_plain_encode(tmp_path, monkeypatch):
    encodes = []
    real_write_clip = video.write_clip

    def spy(frames, fps, path, **kwargs):
        real_write_clip(frames, fps, path, **kwargs)
        encodes.append((Path(path).name, video.probe(path), kwargs))

    monkeypatch.setattr(video, "write_clip", spy)
    report = benchmark_json("--plan", str(plan_file(tmp_path, 448, 256, 2.0)), *ONE_ROUND)

    # The sound stages ran in a process beside the picture stages (preview voice and music hold no weights):
    # rows in the order the stages ended, each branch in its own order, and no CPU seconds for a stage that
    # ran beside another (the clock counts both processes once the sound one has ended).
    assert report["sound_branch_in"] == "process"
    rows = report["stages"]
    branch = {row["stage"]: row.get("branch") for row in rows}
    assert branch == {"director": None, "keyframes": "picture", "motion": "picture", "narration": "sound",
                      "music": "sound", "mix": "sound", "delivery_audio": "sound", "assemble": None}
    order = [row["stage"] for row in rows]
    assert order[0] == "director" and order[-1] == "assemble"
    assert [name for name in order if branch[name] == "picture"] == ["keyframes", "motion"]
    assert [name for name in order if branch[name] == "sound"] == ["narration", "music", "mix", "delivery_audio"]
    assert all(row["seconds"] >= 0 for row in rows)
    assert all((row["cpu_s"] is None) == (branch[row["stage"]] is not None) for row in rows)
    assert all(row["cpu_s"] >= 0 for row in rows if row["cpu_s"] is not None)
    # Every model the reel loaded (the plan is given, so no director), from the residency manager's log,
    # with its stage, time and memory: on the main line each evicted by the next; the sound branch's own
    # instances unloaded when their stage is done.
    loads = report["model_loads"]
    assert [(row["stage"], row["family"]) for row in loads if "branch" not in row] == [
        ("keyframes", "preview-keyframes"), ("motion", "preview-motion")]
    assert [(row["stage"], row["family"], row["branch"]) for row in loads if "branch" in row] == [
        ("narration", "preview-voice", "sound"), ("music", "preview-music", "sound")]
    assert all(isinstance(row["rss_delta_bytes"], int) and row["seconds"] >= 0 for row in loads)
    evictions = report["evictions"]
    assert [row["family"] for row in evictions if "branch" not in row] == ["preview-keyframes"]
    assert [row["family"] for row in evictions if "branch" in row] == ["preview-voice", "preview-music"]
    # Ken Burns runs no transformer: zero passes, said so, not invented.
    assert [(c["shot"], c["expert_passes"]) for c in report["clips"]] == [
        ("shot_01", {"transformer": 0, "transformer_2": 0}), ("shot_02", {"transformer": 0, "transformer_2": 0})]
    assert all("no transformer" in c["note"] for c in report["clips"])
    # The plain encode: as many frames as the reel shows (4 s at 16 fps), at its size, with the clips' settings.
    plain = report["plain_x264"]
    assert (plain["frames"], plain["width"], plain["height"]) == (64, 448, 256)
    ((info, kwargs),) = [(info, kwargs) for name, info, kwargs in encodes if name == "plain.mp4"]
    assert (info["frames"], info["width"], info["height"], info["video_codec"]) == (64, 448, 256, "h264")
    assert kwargs == {"crf": 18, "preset": "ultrafast"}
    assert report["reel_to_x264_ratio"] == pytest.approx(report["wall_s"] / plain["seconds"], rel=1e-2)
    # CPU time too (this process and its ffmpeg/eSpeak children), which other work on the machine barely moves.
    assert report["cpu_s"] > 0 and plain["cpu_s"] > 0
    assert report["reel_to_x264_cpu_ratio"] == pytest.approx(report["cpu_s"] / plain["cpu_s"], rel=1e-2)
    # What the hypervisor took from the cores meanwhile, read from the system's own count (Linux: /proc/stat).
    import psutil
    from cinereel.nodes.pipeline.stage import usable_cpus

    machine = report["machine"]
    assert machine["cores"] == usable_cpus()
    if hasattr(psutil.cpu_times(), "steal"):
        assert isinstance(machine["idle"], bool)
        for part in (machine["reel"], machine["plain_x264"]):
            assert part["steal_s"] >= 0 and 0 <= part["share"] <= 1
        assert machine["plain_x264"] == plain["steal"]
    else:
        assert machine == {"cores": usable_cpus(), "reel": None, "plain_x264": None, "idle": None}


def test_text_benchmark_prints_the_reel_beside_the_plain_encode(tmp_path, capsys):
    # --keep final leaves no keyframes: the plain encode takes its pictures from reel.mp4
    assert main([SENTENCE, "--benchmark", "--keep", "final", "--plan", str(plan_file(tmp_path, 448, 256, 1.0)),
                 *ONE_ROUND]) == 0
    out = capsys.readouterr().out
    assert "round" not in out.splitlines()[0]  # one round: no table of rounds
    assert "s wall for the pipeline" in out
    assert "plain x264 encode of the same 32 frames at 448x256" in out and "reel / encode = " in out
    assert "transformer 0, transformer_2 0 (the preview motion backend" in out
    import psutil

    assert ("cores; the hypervisor took" in out) == hasattr(psutil.cpu_times(), "steal")


def test_a_benchmark_on_a_machine_whose_hypervisor_takes_its_cores_says_so(tmp_path, capsys, monkeypatch):
    from cinereel.nodes.pipeline import benchmark

    # The system's count of stolen time, as psutil reads it, grows by 3 s between any two readings: far more
    # than 2 % of two cores over a short reel or encode.
    readings = iter(range(0, 3000, 3))
    monkeypatch.setattr(benchmark, "steal_seconds", lambda: float(next(readings)))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([SENTENCE, "--benchmark", "--json", "--plan", str(plan_file(tmp_path, 448, 256, 1.0)),
                     *ONE_ROUND]) == 0
    machine = json.loads(out.getvalue())["machine"]
    assert machine["reel"]["steal_s"] == machine["plain_x264"]["steal_s"] == 3.0 and machine["idle"] is False
    err = capsys.readouterr().err
    assert "cinereel: warning: the machine was not idle: the hypervisor took" in err and "run the benchmark again" in err


def test_a_preview_benchmark_warms_up_then_reports_the_median_of_rounds_each_a_command_of_its_own(
        tmp_path, monkeypatch, capsys):
    from cinereel.nodes.pipeline import benchmark

    # The rounds' commands make their temporary folders here (they inherit the environment).
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    commands = []
    real_round_process = benchmark._round_process

    def spy(argv):
        code, out, err = real_round_process(argv)
        commands.append((argv, code, json.loads(out)))
        return code, out, err

    monkeypatch.setattr(benchmark, "_round_process", spy)
    plan = str(plan_file(tmp_path, 448, 256, 1.0))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([SENTENCE, "--benchmark", "--json", "--plan", plan, "--benchmark-rounds", "2",
                     "--benchmark-warmup", "1"]) == 0
    report = json.loads(out.getvalue())
    # Three commands: the warm-up and two rounds, each the user's own line made one round in its process.
    assert len(commands) == 3 and all(code == 0 for _, code, _ in commands)
    assert all(argv == [SENTENCE, "--benchmark", "--json", "--plan", plan, "--benchmark-rounds", "2",
                        "--benchmark-warmup", "1"] for argv, _, _ in commands)
    assert all(len(r["rounds"]) == 1 and r["warm_up"] == [] for _, _, r in commands)
    warm, *rounds = [r for _, _, r in commands]
    assert report["warm_up"] == [benchmark.round_summary(warm)]
    assert report["rounds"] == [benchmark.round_summary(r) for r in rounds]
    # The report is the median round's (of two, the lower): all its figures are that round's.
    chosen = min(rounds, key=lambda r: r["reel_to_x264_ratio"])
    assert report["round"] == rounds.index(chosen) + 1
    assert {k: v for k, v in report.items() if k not in ("round", "rounds", "warm_up")} == {
        k: v for k, v in chosen.items() if k not in ("round", "rounds", "warm_up")}
    assert list(scratch.iterdir()) == []  # every round's reel removed


def test_the_process_age_is_never_more_than_the_time_since_it_was_started():
    """psutil's create_time was a second off here (the kernel's boot time is in whole seconds)."""
    import subprocess
    import sys
    import time

    script = ("import time; time.sleep(0.3); from cinereel.nodes.pipeline.benchmark import seconds_since_start; "
              "print(seconds_since_start())")
    before = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - before
    tick = 1 / os.sysconf("SC_CLK_TCK")  # the start time's resolution
    assert 0.3 <= float(done.stdout) <= elapsed + tick


def test_the_median_round_is_one_rounds_report(tmp_path):
    from cinereel.nodes.pipeline.benchmark import combine_rounds

    def fake(ratio):
        return {"wall_s": ratio, "plain_x264": {"seconds": 1.0, "cpu_s": 2.0}, "reel_to_x264_ratio": ratio,
                "cpu_s": 2 * ratio, "reel_to_x264_cpu_ratio": ratio, "machine": {"idle": True}}

    report, chosen = combine_rounds([fake(9.0)], [fake(2.1), fake(1.7), fake(1.9)])
    assert (chosen, report["round"], report["wall_s"]) == (2, 3, 1.9)
    assert [r["reel_to_x264_ratio"] for r in report["rounds"]] == [2.1, 1.7, 1.9]
    assert [r["reel_to_x264_ratio"] for r in report["warm_up"]] == [9.0]
    report, chosen = combine_rounds([], [fake(2.1), fake(1.7), fake(1.9), fake(1.8)])
    assert (chosen, report["wall_s"]) == (3, 1.8)  # of an even count, the lower middle one


def test_a_round_that_fails_ends_the_benchmark_with_its_status_and_messages(tmp_path, monkeypatch, capsys):
    from cinereel.nodes.pipeline import benchmark

    calls = []

    def failing(argv):
        calls.append(argv)
        return 1, "", "cinereel: internal error: the round broke\n"

    monkeypatch.setattr(benchmark, "_round_process", failing)
    assert main([SENTENCE, "--benchmark", "--plan", str(plan_file(tmp_path, 448, 256, 1.0))]) == 1
    captured = capsys.readouterr()
    assert len(calls) == 1 and captured.out == ""
    assert "the round broke" in captured.err


def test_a_cancelled_benchmark_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    from cinereel.nodes.pipeline import benchmark

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "_round_process", interrupted)
    assert main([SENTENCE, "--benchmark", "--plan", str(plan_file(tmp_path, 448, 256, 1.0))]) == 130
    err = capsys.readouterr().err
    assert "cinereel: cancelled; a benchmark's reels are made in temporary folders and removed" in err
    assert "resume" not in err


def test_rounds_and_warm_up_are_checked_before_anything_runs(capsys):
    assert main([SENTENCE, "--benchmark-rounds", "0", "--benchmark-warmup", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--benchmark-rounds 0 only applies with --benchmark" in err
    assert "--benchmark-rounds must be at least 1, got 0" in err
    assert "--benchmark-warmup must be 0 or more, got -1" in err


@pytest.fixture(scope="module")
def tiny_wan() -> Path:
    return load_test_module("tiny_wan").tiny_wan_checkpoint()


@pytest.mark.parametrize(("preset", "guidance", "per_expert"), [("quality", [], 4), ("fast", ["1.0", "1.0"], 2)])
def test_tiny_wan_passes_per_expert_are_counted_at_the_model_call(tmp_path, tiny_wan, one_torch_thread,
                                                                  preset, guidance, per_expert):
    """4 steps at flow shift 5 (hero) and 8 (establishing): the 0.9 boundary gives each expert 2 steps, so
    with guidance (quality) each expert runs 2 x 2 passes (8 per clip), and at guidance 1 on both experts
    (the distilled recipe) 2 x 1 (4 per clip): no unconditional pass runs."""
    knobs = [f"motion.{name}={value}" for name, value in zip(("guidance", "guidance_2"), guidance)]
    report = benchmark_json("--plan", str(plan_file(tmp_path, 256, 256, 0.5)), "--motion", str(tiny_wan),
                            "--dtype", "float32", "--device", "cpu", "--set", f"motion.steps={STEPS}",
                            "--set", "motion.first_block_cache=0", *[f for k in knobs for f in ("--set", k)])
    clips = report["clips"]
    assert [c["shot"] for c in clips] == ["shot_01", "shot_02"]
    for clip in clips:
        assert clip["renderer"] == "wan2.2-i2v" and clip["steps"] == STEPS
        assert clip["expert_passes"] == {"transformer": per_expert, "transformer_2": per_expert}
        # The estimate's counting rule gives what the model ran.
        assert clip["expert_passes"] == expert_passes(STEPS, clip["guidance"], clip["guidance_2"], clip["flow_shift"])
    assert {c["flow_shift"] for c in clips} == {5.0, 8.0}
    assert report["expert_passes_total"] == {"transformer": 2 * per_expert, "transformer_2": 2 * per_expert}
    # A backend that holds weights (a real reel takes up to an hour): one round, no warm-up, unless asked.
    assert len(report["rounds"]) == 1 and report["warm_up"] == [] and report["round"] == 1
    wan_loads = [row for row in report["model_loads"] if row["family"] == "wan2.2-i2v"]
    assert len(wan_loads) == 1 and wan_loads[0]["stage"] == "motion" and wan_loads[0]["rss_delta_bytes"] > 0
    assert "cuda_peak_bytes" in wan_loads[0]


def test_the_clips_call_record_and_report_keep_the_counts(tmp_path, tiny_wan, one_torch_thread):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([SENTENCE, "--plan", str(plan_file(tmp_path, 256, 256, 0.5)), "--out", str(tmp_path / "out"),
                     "--run-id", "counted", "--json", "--motion", str(tiny_wan), "--dtype", "float32", "--device",
                     "cpu", "--set", f"motion.steps={STEPS}", "--set", "motion.guidance_2=1.0"]) == 0
    run = Path(json.loads(out.getvalue())["run_dir"])
    record = json.loads((run / "clips" / "shot_02.attempt1.call.json").read_text(encoding="utf-8"))
    assert record["expert_passes"] == {"transformer": 4, "transformer_2": 2}
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["clip_renders"]["shot_02"]["expert_passes"] == record["expert_passes"]
