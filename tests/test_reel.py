"""The REEL contract: JSON round trip, immutability, atomic artifacts, resume without redoing work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY, register_family
from cinereel.model_loaders.vocabulary.plan import validate_plan
from cinereel.nodes.keyframes import KeyframesNode
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.reel import Reel, RunDir, RunIdError, atomic_write, check_run_id
from cinereel.nodes.pipeline.stage import Job, run_jobs
from cinereel_testkit import sample_plan_dict
from PIL import Image


@pytest.fixture
def reel(tmp_path) -> Reel:
    run = RunDir.create(tmp_path, "test-run")
    return Reel(validate_plan(sample_plan_dict()), run.root, {"plan": "plan.json"}, {"warnings": ["w"]})


def test_reel_json_round_trip(reel):
    text = reel.to_json()
    json.loads(text)  # plain JSON
    again = Reel.from_json(text)
    assert again == reel
    assert again.plan == reel.plan and dict(again.artifacts) == dict(reel.artifacts)
    assert again.notes["warnings"] == ["w"]


def test_reel_is_immutable_and_evolve_returns_a_new_one(reel):
    before = reel.to_json()
    with pytest.raises(AttributeError):
        reel.plan = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        reel.artifacts["x"] = "y"  # type: ignore[index]
    newer = reel.evolve(artifacts={"keyframe:shot_01": "keyframes/shot_01.png"}, notes={"k": 1})
    assert reel.to_json() == before
    assert "keyframe:shot_01" in newer.artifacts and "keyframe:shot_01" not in reel.artifacts


def test_from_json_rejects_other_values():
    with pytest.raises(ValueError, match="not a CineReel REEL"):
        Reel.from_json("{}")


@pytest.mark.parametrize("bad", ["", "   ", "../x", "a/b", "a\\b", "..", ".hidden", "x" * 81, "a..b"])
def test_run_id_must_be_a_plain_folder_name(bad):
    with pytest.raises(RunIdError):
        check_run_id(bad)


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "clips" / "a.mp4"

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("boom")))
    assert target.read_text() == "old"


def test_changed_inputs_supersede_the_old_artifact_instead_of_deleting_it(tmp_path):
    run = RunDir.create(tmp_path, "r1")
    run.produce("a.txt", {"v": 1}, lambda tmp: tmp.write_text("one"))
    path, made = run.produce("a.txt", {"v": 1}, lambda tmp: tmp.write_text("never"))
    assert not made and path.read_text() == "one"
    path, made = run.produce("a.txt", {"v": 2}, lambda tmp: tmp.write_text("two"))
    assert made and path.read_text() == "two"
    kept = list((run.root / "superseded").rglob("a.txt"))
    assert [p.read_text() for p in kept] == ["one"]


class Stop(Exception):
    pass


class CountingKeyframes:
    """A keyframe backend that counts its calls and can stop the run after N artifacts."""

    calls: list[str] = []
    stop_after: int | None = None

    def _tick(self, what: str) -> Image.Image:
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise Stop(f"stopped before {what}")
        self.calls.append(what)
        return Image.new("RGB", (64, 64), (len(self.calls) * 20 % 255, 0, 0))

    def render_portrait(self, character, plan, seed, callback=None):
        return self._tick(f"portrait:{character['id']}")

    def render_keyframe(self, shot, plan, portraits, seed, callback=None):
        assert set(portraits) == set(shot["characters"])
        return self._tick(f"keyframe:{shot['id']}")


register_family("test-counting-keyframes", lambda handle: CountingKeyframes())


@pytest.mark.parametrize("k", [1, 2])
def test_resume_does_not_redo_finished_artifacts(reel, k):
    CountingKeyframes.calls = []
    CountingKeyframes.stop_after = k
    handle = ModelHandle("test-counting-keyframes", "count")
    with pytest.raises(Stop):
        render_keyframes(reel, handle)
    assert CountingKeyframes.calls == ["portrait:astronaut", "keyframe:shot_01", "keyframe:shot_02"][:k]
    # Nothing half-written where a finished artifact is expected.
    made = sorted(p.name for p in reel.run_dir.root.rglob("*.png"))
    assert len(made) == k

    CountingKeyframes.calls = []
    CountingKeyframes.stop_after = None
    same_run = Reel.from_json(reel.to_json())  # a fresh process would rebuild the REEL like this
    out = render_keyframes(same_run, handle)
    assert CountingKeyframes.calls == ["portrait:astronaut", "keyframe:shot_01", "keyframe:shot_02"][k:]
    assert set(out.artifacts) >= {"portrait:astronaut", "keyframe:shot_01", "keyframe:shot_02"}


def test_a_finished_stage_is_not_even_loaded_again(reel):
    CountingKeyframes.calls, CountingKeyframes.stop_after = [], None
    handle = ModelHandle("test-counting-keyframes", "count-2")
    render_keyframes(reel, handle)
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    CountingKeyframes.calls = []
    render_keyframes(reel, handle)
    assert CountingKeyframes.calls == []
    assert RESIDENCY.loads(mark) == 0


def test_a_node_never_mutates_the_reel_it_receives(reel):
    CountingKeyframes.calls, CountingKeyframes.stop_after = [], None
    before = copy.deepcopy(reel.to_dict())
    (out,) = KeyframesNode().render(reel, ModelHandle("test-counting-keyframes", "count-3"))
    assert reel.to_dict() == before
    assert out is not reel and "keyframe:shot_02" in out.artifacts


def test_run_jobs_counts_made_and_reused(tmp_path):
    run = RunDir.create(tmp_path, "jobs")
    jobs = [Job(f"a{i}", f"a{i}.txt", {"i": i}, lambda model, tmp, i=i: tmp.write_text(str(i))) for i in range(3)]
    assert run_jobs(run, None, jobs)[1] == 3
    assert run_jobs(run, None, jobs)[1] == 0
    assert (run.root / "a2.txt").read_text() == "2"


class SideBySide:
    """A model whose jobs may run two at a time (``parallel_jobs``), as the Ken Burns encodes do."""

    parallel_jobs = 2

    def __init__(self) -> None:
        import threading

        self.both_running = threading.Barrier(2, timeout=30)
        self.lock = threading.Lock()
        self.running = self.most_running = 0

    def make(self, tmp: Path, text: str, fail: bool = False) -> None:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if text in ("a0", "a1"):
                self.both_running.wait()  # only returns once the first two jobs run at the same time
            if fail:
                raise RuntimeError(f"{text} failed")
            tmp.write_text(text)
        finally:
            with self.lock:
                self.running -= 1


def test_a_model_with_parallel_jobs_runs_two_at_a_time_and_reports_them_in_order(tmp_path):
    run, model = RunDir.create(tmp_path, "side-by-side"), SideBySide()
    jobs = [Job(f"a{i}", f"a{i}.txt", {"i": i}, lambda m, tmp, i=i: m.make(tmp, f"a{i}")) for i in range(5)]
    ready = []
    from cinereel.nodes.pipeline.stage import _run_pending

    _run_pending(run, model, jobs, None, on_ready=lambda job: ready.append(job.name))
    assert model.most_running == 2
    assert ready == [f"a{i}" for i in range(5)]
    assert [(run.root / f"a{i}.txt").read_text() for i in range(5)] == [f"a{i}" for i in range(5)]
    assert all(run.is_current(job.rel, job.key) for job in jobs)


def test_a_failing_side_by_side_job_stops_the_stage_and_keeps_what_finished(tmp_path):
    run, model = RunDir.create(tmp_path, "side-by-side-fails"), SideBySide()
    jobs = [Job(f"a{i}", f"a{i}.txt", {"i": i}, lambda m, tmp, i=i: m.make(tmp, f"a{i}", fail=i == 1))
            for i in range(6)]
    from cinereel.nodes.pipeline.stage import _run_pending

    with pytest.raises(RuntimeError, match="a1 failed"):
        _run_pending(run, model, jobs, None)
    assert (run.root / "a0.txt").read_text() == "a0" and run.is_current(jobs[0].rel, jobs[0].key)
    assert not (run.root / "a1.txt").exists()
    assert not (run.root / "a5.txt").exists()  # queued behind the failure: cancelled, never started


class CoresSeen:
    """A model that notes each job's share of the cores (``cores_per_job``), ``parallel_jobs`` at a time."""

    def __init__(self, parallel_jobs: int) -> None:
        import threading

        self.parallel_jobs = parallel_jobs
        self.both_running = threading.Barrier(parallel_jobs, timeout=30)
        self.seen: list[int] = []

    def make(self, tmp: Path, first_round: bool) -> None:
        from cinereel.nodes.pipeline.stage import cores_per_job

        if first_round:
            self.both_running.wait()
        self.seen.append(cores_per_job())
        tmp.write_text("made")


@pytest.mark.parametrize("parallel_jobs, share", [(1, 5), (2, 2), (3, 1)])
def test_each_job_gets_its_share_of_the_cores_and_a_lone_job_all_of_them(tmp_path, monkeypatch, parallel_jobs, share):
    from cinereel.nodes.pipeline import stage

    monkeypatch.setattr(stage, "usable_cpus", lambda: 5)
    run, model = RunDir.create(tmp_path, f"cores-{parallel_jobs}"), CoresSeen(parallel_jobs)
    jobs = [Job(f"a{i}", f"a{i}.txt", {"i": i}, lambda m, tmp, i=i: m.make(tmp, parallel_jobs > 1 and i < parallel_jobs))
            for i in range(4)]
    stage._run_pending(run, model, jobs, None)
    assert model.seen == [share] * 4
    assert stage.cores_per_job() == 5  # this thread never ran a job side by side


def test_the_preview_clips_x264_gets_the_job_s_share_of_the_cores(tmp_path, monkeypatch):
    """Asserted in the clips x264 wrote: its options, which it stores in the stream, say how many threads it ran."""
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline import stage
    from cinereel.nodes.pipeline.headless import make_reel

    monkeypatch.setattr(stage, "usable_cpus", lambda: 4)
    request = DirectorRequest("A fisherman mends a net at dawn in Porto", duration_s=3.0, shots=3, resolution="480p")
    reel = make_reel(request, tmp_path, run_id="threads")
    clips = [reel.artifact_path(f"clip:{shot.id}").read_bytes() for shot in reel.plan.shots]
    assert len(clips) == 3 and all(b"x264 - core" in clip for clip in clips)
    # three clips, two encoding at a time on four cores: two threads each, the last one too (its share was set
    # when the stage began: x264 cannot take more threads later)
    assert all(b" threads=2 " in clip for clip in clips), [clip[clip.find(b"threads="):][:12] for clip in clips]


def test_the_picture_stages_let_their_models_encode_the_prompts_of_what_they_will_render(tmp_path, monkeypatch):
    from cinereel.model_loaders.preview import KenBurnsMotion, StoryboardKeyframes
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline.headless import make_reel

    asked: list[list[str]] = []
    monkeypatch.setattr(KenBurnsMotion, "encode_prompts", lambda self, shots: asked.append([s["id"] for s in shots]),
                        raising=False)
    request = DirectorRequest("A fisherman mends a net at dawn in Porto", duration_s=2.0, shots=2, resolution="480p")
    drawn: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(StoryboardKeyframes, "encode_prompts", raising=False,
                        value=lambda self, characters, shots, plan: drawn.append(
                            ([c["id"] for c in characters], [s["id"] for s in shots])))
    reel = make_reel(request, tmp_path, run_id="prompts")
    assert asked == [[shot.id for shot in reel.plan.shots]]
    assert drawn == [([c.id for c in reel.plan.characters if any(c.id in s.characters for s in reel.plan.shots)],
                      [shot.id for shot in reel.plan.shots])]
    make_reel(request, tmp_path, run_id="prompts")  # nothing left to render: no model, nothing to encode
    assert len(asked) == len(drawn) == 1


def test_a_resumed_run_keeps_the_report_of_every_earlier_invocation(tmp_path, capsys):
    from cinereel.nodes.pipeline.cli import main

    args = ["A lone astronaut walks through a neon-lit Tokyo alley at dusk", "--duration", "2", "--shots", "2",
            "--resolution", "480p", "--run-id", "resume", "--out", str(tmp_path), "--json"]
    reports = []
    for _ in range(3):
        assert main(args) == 0
        run_dir = Path(json.loads(capsys.readouterr().out)["run_dir"])
        reports.append(json.loads((run_dir / "report.json").read_text(encoding="utf-8")))
    first, second, third = reports
    assert first["history"] == [] and first["model_loads"] >= 5
    assert len({r["invocation"] for r in reports}) == 3
    # the second command redid nothing; what the first one loaded, evicted and timed is still in the report
    assert second["model_loads"] == 0
    (earlier,) = second["history"]
    assert earlier["invocation"] == first["invocation"] and earlier["residency"] == first["residency"]
    assert earlier["timings"] == first["timings"] and earlier["model_loads"] == first["model_loads"]
    assert [h["invocation"] for h in third["history"]] == [first["invocation"], second["invocation"]]
    assert third["history"][0] == earlier
