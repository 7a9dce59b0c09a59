"""A batch on a local Ray instance with two CPU workers and the preview backends (issue #11, point 3).

Skips, saying why, where Ray is not installed; fails instead where ``CINEREEL_RAY_REQUIRED=1`` (CI).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.nodes.pipeline.audio import integrated_lufs
from cinereel.nodes.pipeline.backends import make_handle
from cinereel.nodes.pipeline.batch import default_request, read_batch_text
from cinereel.nodes.pipeline.cli import main
from cinereel.nodes.pipeline.headless import PipelineOptions
from cinereel.nodes.pipeline.preflight import PreflightError
from cinereel.nodes.pipeline.ray_batch import RayOptions, forwarded_env, run_batch_on_ray
from cinereel.nodes.pipeline.video import probe, read_audio

pytestmark = [pytest.mark.reel, pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray instance

SENTENCES = ("A lone astronaut walks through a neon-lit Tokyo alley at dusk",
             "Two old friends share coffee at a Paris market in the morning rain",
             "A fisherman pulls his boat onto a snowy beach at night")
DURATION_S = 4.0


@pytest.fixture(scope="module")
def ray_instance():
    try:
        import ray
    except ImportError:
        reason = 'Ray is not installed (pip install ".[ray]")'
        if os.environ.get("CINEREEL_RAY_REQUIRED") == "1":
            pytest.fail(f"CINEREEL_RAY_REQUIRED=1, but {reason}", pytrace=False)
        pytest.skip(reason)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


def items() -> list:
    return read_batch_text("\n".join(SENTENCES), default_request(duration_s=DURATION_S, shots=2, seed=7))


def check_reel(path: Path) -> None:
    info = probe(path)
    assert (info["width"], info["height"]) == (1280, 720)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert abs(info["video_duration"] - DURATION_S) <= 1 / 16
    audio, sr = read_audio(path)
    assert integrated_lufs(audio, sr) == pytest.approx(-18.0, abs=0.5)


def check_loads(batch: dict) -> None:
    """Each worker loads each phase's model at most once (work stealing never costs a reload), and batch.json's
    phase loads are the workers' loads."""
    loads = batch["ray"]["loads"]
    assert loads, "no worker loaded anything"
    for worker, phases in loads.items():
        for phase, families in phases.items():
            assert all(count == 1 for count in families.values()), (worker, phase, families)
            assert len(families) == 1, (worker, phase, families)
    per_phase = {p["phase"]: p["model_loads"] for p in batch["phases"]}
    assert per_phase == {phase: sum(len(w.get(phase, {})) for w in loads.values()) for phase in per_phase}


def test_cinereel_batch_on_local_ray_renders_three_reels_each_worker_loading_each_model_once_per_phase(
        ray_instance, tmp_path, capsys):
    batch_file = tmp_path / "reels.txt"
    batch_file.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    args = ["batch", str(batch_file), "--ray", "local", "--ray-workers", "2", "--duration", str(DURATION_S),
            "--shots", "2", "--seed", "7", "--out", str(tmp_path / "out"), "--gate", "--json"]
    mark = RESIDENCY.mark()
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err

    summary = json.loads(captured.out.strip().splitlines()[-1])
    batch = json.loads(Path(summary["batch_json"]).read_text(encoding="utf-8"))
    assert [row["status"] for row in batch["reels"]] == ["done"] * 3, batch["reels"]
    for row in batch["reels"]:
        check_reel(Path(row["reel_mp4"]))
        run = Path(row["run_dir"])
        assert not [p for p in run.rglob(".*partial*")], "a worker's staged file was left behind"
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))
        assert report["ray"] == {"workers": 2, "reschedules": []}
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        assert {"keyframes/shot-01.png", "clips/shot-02.attempt1.mp4", "audio/music.wav"} <= set(manifest)
    assert RESIDENCY.loads(mark) == 0, "the driver loaded a model: every model job belongs on a worker"
    check_loads(batch)
    jobs = batch["ray"]["jobs"]
    assert set(jobs) == {"w1", "w2"}, "both workers rendered"
    assert sum(per.get("motion", 0) for per in jobs.values()) == 6  # 3 reels x 2 shots
    assert sum(per.get("gate", 0) for per in jobs.values()) == 6  # the critic judged every clip on a worker
    assert [row["gate"] for row in batch["reels"]] == ["2/2 passed"] * 3

    assert main(args) == 0, "the same batch again"
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    again = json.loads(Path(again["batch_json"]).read_text(encoding="utf-8"))
    assert again["done"] == 3 and again["model_loads"] == 0
    assert again["ray"]["jobs"] == {}, "a finished batch resumes with nothing to render"


def test_a_worker_killed_mid_batch_costs_one_clip_rendered_again_elsewhere(ray_instance, tmp_path):
    """With --ray-return-artifacts too: the artifacts travel back to the driver, which writes them."""
    killed: list[str] = []

    def kill_on_first_clip(worker: str, actor, job: str, phase: str) -> None:
        if job.startswith("clip:") and not killed:
            killed.append(worker)
            ray_instance.kill(actor)

    result = run_batch_on_ray(items(), tmp_path, PipelineOptions(), RayOptions(workers=2, return_artifacts=True),
                              on_dispatch=kill_on_first_clip)
    batch = json.loads((result.folder / "batch.json").read_text(encoding="utf-8"))

    assert [row["status"] for row in batch["reels"]] == ["done"] * 3, batch["reels"]
    assert batch["ray"]["return_artifacts"] is True
    for row in batch["reels"]:
        check_reel(Path(row["reel_mp4"]))
        assert not [p for p in Path(row["run_dir"]).rglob(".*partial*")]
    [moved] = batch["ray"]["reschedules"]
    assert moved["worker_died"] == killed[0] and moved["phase"] == "motion" and moved["job"].startswith("clip:")
    assert moved["rerun_on"] not in (None, killed[0])
    assert {"worker": "w3", "started": f"replacing {killed[0]}"} in batch["ray"]["workers"]
    assert "motion" not in batch["ray"]["jobs"].get(killed[0], {})
    check_loads(batch)
    run = tmp_path / "cinereel" / moved["run_id"]
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["ray"]["reschedules"] == [moved]
    shot = moved["job"].split(":", 1)[1]
    assert f"clips/{shot}.attempt1.mp4" in json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def test_an_openai_compatible_director_travels_to_workers_with_its_key(monkeypatch):
    """A vLLM server shared by every worker: the handle pickles whole, and its API key variable (only that one)
    goes into the workers' environment."""
    monkeypatch.setenv("VLLM_API_KEY", "sk-test")
    monkeypatch.setenv("OTHER_API_KEY", "not-for-workers")
    handle = make_handle("llm", "OpenAI-compatible server", base_url="https://vllm.cluster:8000/v1", model="qwen",
                         api_key_env="VLLM_API_KEY")
    assert pickle.loads(pickle.dumps(handle)) == handle
    options = PipelineOptions(handles={**PipelineOptions().handles, "llm": handle})
    env = forwarded_env(options)
    assert env.get("VLLM_API_KEY") == "sk-test" and "OTHER_API_KEY" not in env


def test_more_workers_than_the_cluster_can_place_are_refused_before_any_starts(ray_instance, tmp_path):
    with pytest.raises(PreflightError) as refused:
        run_batch_on_ray(items(), tmp_path, PipelineOptions(), "local", workers=3)
    assert "3 Ray worker(s) need a CPU each; the cluster has 2 (--ray-workers)" in str(refused.value)
    with pytest.raises(PreflightError) as refused:
        run_batch_on_ray(items(), tmp_path, PipelineOptions(), "local", gpus_per_worker=1)
    assert "2 Ray worker(s) with 1 GPU each need 2 GPUs; the cluster has 0" in str(refused.value)
    assert not (tmp_path / "cinereel").exists()


def test_a_reel_whose_director_fails_on_a_worker_is_reported_and_the_other_passes_the_gate_after_a_rerender(
        ray_instance, tmp_path, monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(Path(__file__).with_name("ray_worker_plugin.py")))
    scripted = ModelHandle(family="test-ray-scripted-llm", checkpoint="rules")
    options = PipelineOptions(handles={**PipelineOptions().handles, "llm": scripted}, gate=True, max_retries=2,
                              keyframe_gate=False)  # the clip gate's re-render on the workers
    reels = read_batch_text(f"REFUSE: a storm over a harbour\n{SENTENCES[0]}\n",
                            default_request(duration_s=DURATION_S, shots=2))
    result = run_batch_on_ray(reels, tmp_path, options, RayOptions(workers=2))

    failed, done = result.reels
    assert failed.status == "failed" and failed.failed_at == "director"
    assert failed.error == "the director refused this sentence"  # the job's own error, not Ray's wrapper
    assert done.status == "done" and done.gate_result() == "2/2 passed"
    check_reel(done.reel.artifact_path("reel"))
    gate = done.reel.notes["gate"]
    assert gate["rounds"] == 2 and [s["chosen_attempt"] for s in gate["shots"]] == [2, 2]
    assert all(done.reel.artifacts[f"clip:{s.id}"].endswith(".attempt2.mp4") for s in done.reel.plan.shots)
    batch = result.to_json()
    assert sum(per.get("gate", 0) for per in batch["ray"]["jobs"].values()) == 2 * 2 + 2 + 2  # critic x2, redraws
    for worker, phases in batch["ray"]["loads"].items():  # the critic once per round, the renderers once
        gate_loads = phases.get("gate", {})
        assert gate_loads.get("test-ray-scripted-llm", 0) <= 2, (worker, gate_loads)
        assert gate_loads.get("preview-keyframes", 0) <= 1 and gate_loads.get("preview-motion", 0) <= 1


def test_each_worker_encodes_a_reel_s_prompts_once_before_its_first_clip_of_that_reel(ray_instance, tmp_path,
                                                                                       monkeypatch):
    """The motion stage's ``prepare`` (encode every shot's prompt once, as Wan2.2 does, then park the text encoder)
    runs on a worker's resident model before the first job it takes from a reel's hand-out, and never again for
    that hand-out on that model."""
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(Path(__file__).with_name("ray_worker_plugin.py")))
    log = tmp_path / "prompts.jsonl"
    motion = ModelHandle(family="test-ray-prompt-motion", checkpoint=str(log))
    options = PipelineOptions(handles={**PipelineOptions().handles, "motion": motion})
    reels = read_batch_text("\n".join(SENTENCES) + "\n", default_request(duration_s=DURATION_S, shots=2, seed=7))
    result = run_batch_on_ray(reels, tmp_path, options, RayOptions(workers=2))
    assert [o.status for o in result.reels] == ["done"] * 3

    prompts = [sorted(shot.prompt for shot in o.reel.plan.shots) for o in result.reels]
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    renders = [e for e in entries if e["event"] == "render"]
    assert len(renders) == 6 and len({e["pid"] for e in renders}) == 2, "both workers rendered clips"
    encodes = [e for e in entries if e["event"] == "encode"]
    assert all(e["prompts"] in prompts for e in encodes), "each encode is one reel's whole hand-out"
    for index, render in enumerate(entries):
        if render["event"] != "render":
            continue
        before = [e for e in entries[:index] if e["event"] == "encode" and e["model"] == render["model"]
                  and e["pid"] == render["pid"] and render["prompt"] in e["prompts"]]
        assert len(before) == 1, ("a clip rendered without its prompts encoded once before on that model", render)
    per_model = [(e["pid"], e["model"], tuple(e["prompts"])) for e in encodes]
    assert len(per_model) == len(set(per_model)), "a hand-out prepared twice on one model"


def test_with_every_worker_dead_and_no_replacement_allowed_the_reels_fail_and_keep_their_work(ray_instance,
                                                                                              tmp_path):
    def kill_at_motion(worker: str, actor, job: str, phase: str) -> None:
        if phase == "motion":
            ray_instance.kill(actor)

    result = run_batch_on_ray(items()[:2], tmp_path, PipelineOptions(), RayOptions(workers=2, restarts=0),
                              on_dispatch=kill_at_motion)
    assert [(o.status, o.failed_at) for o in result.reels] == [("failed", "motion")] * 2
    assert all(o.error.startswith("every Ray worker died and no replacement is allowed") for o in result.reels)
    assert {r["worker_died"] for r in result.ray["reschedules"]} == {"w1", "w2"}
    for outcome in result.reels:  # the keyframes made before stay, for the same batch to resume from
        manifest = json.loads((tmp_path / "cinereel" / outcome.run_id / "manifest.json").read_text(encoding="utf-8"))
        assert "keyframes/shot-01.png" in manifest


def test_a_scheduler_failure_fails_the_waiting_reels_instead_of_hanging_them(ray_instance, tmp_path):
    def broken_hook(worker: str, actor, job: str, phase: str) -> None:
        raise KeyError("a bug in the scheduler")

    result = run_batch_on_ray(items()[:1], tmp_path, PipelineOptions(), RayOptions(workers=2),
                              on_dispatch=broken_hook)
    [outcome] = result.reels
    assert outcome.status == "failed" and outcome.failed_at == "director"
    assert outcome.error == "the Ray scheduler stopped: KeyError: 'a bug in the scheduler'"
    assert json.loads((result.folder / "batch.json").read_text(encoding="utf-8"))["failed"] == 1


def test_ray_settings_are_checked_before_ray_starts(tmp_path, capsys, monkeypatch):
    batch_file = tmp_path / "reels.txt"
    batch_file.write_text(SENTENCES[0] + "\n", encoding="utf-8")
    args = ["batch", str(batch_file), "--ray", "local", "--out", str(tmp_path)]
    assert main([*args, "--ray-workers", "0", "--ray-restarts", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--ray-workers must be at least 1, got 0" in err and "--ray-restarts must not be negative" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the Ray extra is not installed
    assert main(args) == 2
    assert 'Ray support is not installed: --ray needs the Ray extra (pip install ".[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "cinereel").exists(), "nothing ran"
