"""Many reels phase-major: bad lines refused before anything loads, a failing reel never stops the others,
each model loaded once per phase for the whole batch (and once per gate round), every reel a valid reel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.preview import PreviewLLM
from cinereel.model_loaders.residency import RESIDENCY, register_family
from cinereel.nodes.pipeline import batch_cli
from cinereel.nodes.pipeline.audio import integrated_lufs
from cinereel.nodes.pipeline.batch import (
    BatchError,
    default_request,
    read_batch,
    read_batch_text,
    run_batch,
    summary_lines,
)
from cinereel.nodes.pipeline.cli import main
from cinereel.nodes.pipeline.headless import PipelineOptions, preview_handles
from cinereel.nodes.pipeline.video import probe, read_audio
from cinereel_testkit import sample_plan_dict

SHORT = {"duration_s": 2.0, "shots": 2, "resolution": "480p"}  # two 1 s shots at 832x480: a quick reel


class BatchTestLLM(PreviewLLM):
    """The preview director, which cannot plan a storm; a critic that finds six-fingered hands in every clip
    until the prompt asks for five fingers (the HAND_FINGER_ARTIFACT fix), so every shot needs one re-render."""

    critiqued: list[str] = []

    def plan(self, request):
        if "storm" in request["sentence"]:
            raise RuntimeError("the director answered malformed JSON twice")
        return super().plan(request)

    def critique(self, frames, portraits, prompt):
        BatchTestLLM.critiqued.append(prompt)
        fixed = "five fingers" in prompt
        return {"scores": dict.fromkeys(("composition", "motion_coherence", "character_consistency",
                                         "lighting_fidelity"), 9 if fixed else 3),
                "label": None if fixed else "HAND_FINGER_ARTIFACT"}


register_family("test-batch-llm", lambda handle: BatchTestLLM())


def test_bad_lines_are_refused_with_their_numbers_before_any_model_loads(tmp_path, capsys):
    batch = tmp_path / "reels.txt"
    batch.write_text("# three reels, two of them wrong\n"
                     "A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
                     '{"sentence": "A fisherman mends his nets in Lisbon at dawn", "sed": 3}\n'
                     "\n"
                     '{"sentence": "A chef plates dessert in Paris", "shots": 0}\n', encoding="utf-8")
    mark = RESIDENCY.mark()
    code = main(["batch", str(batch), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "reels.txt line 3: unknown key 'sed' (did you mean 'seed'?)" in err
    assert "reels.txt line 5:" in err and "shots" in err
    assert "line 2" not in err  # the good line is not blamed
    assert RESIDENCY.log_since(mark) == []  # nothing loaded
    assert not (tmp_path / "out").exists()  # and no run folder made


def test_every_problem_of_a_batch_file_is_named_at_once():
    text = ('{"sentence": "x", "aspect": "4:3"}\n'
            "not json, so a sentence: fine\n"
            '{"sentence": "y", "seed": 1\n'
            '["a list"]\n'
            '{"seed": 4}\n'
            '{"sentence": "z", "run_id": "../escape"}\n')
    with pytest.raises(BatchError) as caught:
        read_batch_text(text, name="b.jsonl")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["b.jsonl line 1", "b.jsonl line 3", "b.jsonl line 4",
                                                   "b.jsonl line 5", "b.jsonl line 6"]
    assert "aspect" in problems[0] and "not valid JSON" in problems[1] and "one object" in problems[2]
    assert '"sentence" key is missing' in problems[3] and "not a plain folder name" in problems[4]


def test_the_same_reel_twice_and_an_empty_file_are_refused(tmp_path):
    with pytest.raises(BatchError, match="line 3: the same reel .* as s.txt line 1"):
        read_batch_text("A cat naps in Rome\nA dog runs in Oslo\nA cat naps in Rome\n", name="s.txt")
    read_batch_text('A cat naps in Rome\n{"sentence": "A cat naps in Rome", "seed": 1}\n')  # another seed: fine
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(BatchError, match="holds no reel"):
        read_batch(empty)


def test_lines_take_the_batch_defaults_and_override_them(tmp_path):
    plan = tmp_path / "plans" / "edited.json"
    plan.parent.mkdir()
    plan.write_text(json.dumps(sample_plan_dict()), encoding="utf-8")
    batch = tmp_path / "b.txt"
    batch.write_text("A cat naps in Rome\n"
                     '{"sentence": "A dog runs in Oslo", "seed": 9, "language": "fr", "duration": 10, '
                     '"aspect": "9:16", "run_id": "oslo-dog"}\n'
                     '{"plan": "plans/edited.json"}\n', encoding="utf-8")
    first, second, third = read_batch(batch, default_request(duration_s=20.0, shots=4, seed=2))
    assert (first.request.duration_s, first.request.shots, first.request.seed) == (20.0, 4, 2)
    assert (second.request.seed, second.request.language, second.request.duration_s, second.request.aspect,
            second.request.shots, second.run_id) == (9, "fr", 10, "9:16", 4, "oslo-dog")
    assert json.loads(third.plan_override) == sample_plan_dict() and third.sentence == sample_plan_dict()["sentence"]
    # a folder of plan files is a batch too; a broken plan is named by its file
    (tmp_path / "plans" / "broken.json").write_text('{"title": 1}', encoding="utf-8")
    with pytest.raises(BatchError, match=r"broken\.json: "):
        read_batch(tmp_path / "plans")
    (tmp_path / "plans" / "broken.json").unlink()
    (only,) = read_batch(tmp_path / "plans")
    assert only.source == "edited.json" and only.plan_override is not None


def test_a_reel_failing_at_the_director_is_reported_while_the_others_finish(tmp_path):
    items = read_batch_text("A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
                            "A lighthouse keeper watches a storm roll in over Brittany\n"
                            "A fisherman mends his nets in Lisbon at dawn\n", default_request(**SHORT), "b.txt")
    options = PipelineOptions(handles={**preview_handles(), "llm": ModelHandle("test-batch-llm", "stub")})
    phases = []
    result = run_batch(items, tmp_path, options, on_phase=lambda *args: phases.append(args))
    assert [o.status for o in result.reels] == ["done", "failed", "done"]
    failed = result.reels[1]
    assert failed.failed_at == "director" and "malformed JSON" in failed.error
    for outcome in (result.reels[0], result.reels[2]):
        assert probe(outcome.reel.artifact_path("reel"))["width"] == 832
    recorded = json.loads((result.folder / "batch.json").read_text(encoding="utf-8"))
    assert [r["status"] for r in recorded["reels"]] == ["done", "failed", "done"]
    assert recorded["reels"][1]["failed_at"] == "director" and "malformed JSON" in recorded["reels"][1]["error"]
    assert recorded["reels"][1]["reel_mp4"] is None and Path(recorded["reels"][0]["reel_mp4"]).is_file()
    # the phases after the director walk the two reels left
    assert ("director", 3, 3) in [p[:3] for p in phases] and ("assemble", 2, 2) in [p[:3] for p in phases]
    table = "\n".join(summary_lines(result))
    assert "failed" in table and "director: the director answered malformed JSON twice" in table


def test_each_model_loads_once_per_phase_and_the_gate_rounds_are_shared(tmp_path):
    items = read_batch_text("A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
                            "A fisherman mends his nets in Lisbon at dawn\n"
                            "A chef plates dessert in a Paris kitchen at night\n", default_request(**SHORT))
    # the clip gate's rounds (the keyframe gate, which would catch the hands before motion, is the next test's)
    options = PipelineOptions(handles={**preview_handles(), "llm": ModelHandle("test-batch-llm", "stub")},
                              gate=True, max_retries=2, keyframe_gate=False)
    BatchTestLLM.critiqued = []
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    result = run_batch(items, tmp_path, options)
    assert [o.status for o in result.reels] == ["done"] * 3
    loads = [(e["family"], e["role"]) for e in RESIDENCY.log_since(mark) if e["event"] == "load"]
    # one reel alone needs these same nine; three reels one after another would need 27
    assert loads == [("test-batch-llm", "director"), ("preview-keyframes", "keyframes"), ("preview-motion", "motion"),
                     ("test-batch-llm", "critic"), ("preview-keyframes", "keyframes"), ("preview-motion", "motion"),
                     ("test-batch-llm", "critic"), ("preview-voice", "voice"), ("preview-music", "music")]
    recorded = json.loads((result.folder / "batch.json").read_text(encoding="utf-8"))
    assert recorded["model_loads"] == 9 and recorded["gate_rounds"] == 2
    assert {p["phase"]: p["model_loads"] for p in recorded["phases"]} == {
        "director": 1, "keyframes": 1, "motion": 1, "gate": 4, "narration": 1, "music": 1, "mix": 0, "assemble": 0}
    assert len(BatchTestLLM.critiqued) == 12  # 6 shots, each judged twice
    for outcome in result.reels:  # every shot re-rendered once with the fix, and the reel cut from those
        gate = outcome.reel.notes["gate"]
        assert [s["chosen_attempt"] for s in gate["shots"]] == [2, 2] and not gate["flagged"]
        assert outcome.gate_result() == "2/2 passed"
        assert all(outcome.reel.artifacts[f"clip:{s.id}"].endswith(".attempt2.mp4") for s in outcome.reel.plan.shots)


def test_the_keyframe_gate_rounds_are_shared_across_the_batch(tmp_path):
    items = read_batch_text("A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
                            "A fisherman mends his nets in Lisbon at dawn\n", default_request(**SHORT))
    options = PipelineOptions(handles={**preview_handles(), "llm": ModelHandle("test-batch-llm", "stub")},
                              gate=True, max_retries=2)  # a real critic: the keyframe gate is on by default
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    result = run_batch(items, tmp_path, options)
    assert [o.status for o in result.reels] == ["done"] * 2
    loads = [(e["family"], e["role"]) for e in RESIDENCY.log_since(mark) if e["event"] == "load"]
    # the hands are caught on the keyframes: one critic load per round and one keyframe-model load for every
    # reel's redraws; motion then animates each shot once and the clip gate passes every clip in one round
    assert loads == [("test-batch-llm", "director"), ("preview-keyframes", "keyframes"),
                     ("test-batch-llm", "critic"), ("preview-keyframes", "keyframes"), ("test-batch-llm", "critic"),
                     ("preview-motion", "motion"), ("test-batch-llm", "critic"), ("preview-voice", "voice"),
                     ("preview-music", "music")]
    recorded = json.loads((result.folder / "batch.json").read_text(encoding="utf-8"))
    assert {p["phase"]: p["model_loads"] for p in recorded["phases"]}["keyframe_gate"] == 3
    for outcome in result.reels:
        section = outcome.reel.notes["keyframe_gate"]
        assert section["rounds"] == 2 and section["keyframe_redraws"] == len(outcome.reel.plan.shots)
        assert all(s["chosen_attempt"] == 1 for s in outcome.reel.notes["gate"]["shots"])


def test_ray_is_reserved_and_flags_for_one_reel_are_refused(tmp_path, capsys, monkeypatch):
    batch = tmp_path / "b.txt"
    batch.write_text("A cat naps in Rome\n", encoding="utf-8")
    monkeypatch.setattr(batch_cli, "ray_runner", lambda: None)  # as where the Ray extra is not installed
    assert main(["batch", str(batch), "--ray", "local"]) == 2
    assert "Ray support is not installed" in capsys.readouterr().err
    assert main(["batch", str(batch), "--plan", str(batch), "--run-id", "x", "--target-lufs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--plan does not apply to a batch" in err and "--run-id does not apply to a batch" in err
    assert "target loudness 3 LUFS" in err  # and the run flags are checked as a run checks them


def test_ray_hands_the_checked_batch_to_the_ray_module_when_installed(tmp_path, capsys, monkeypatch):
    import importlib.machinery
    import types

    from cinereel.nodes.pipeline.batch import BatchResult

    calls = []
    name = f"{batch_cli.__package__}.ray_batch"
    fake = types.ModuleType(name)
    fake.__spec__ = importlib.machinery.ModuleSpec(name, None)
    fake.run_batch_on_ray = lambda items, out, options, address, on_phase=None: (
        calls.append((items, out, options, address)) or BatchResult("batch-ray", Path(out), []))
    monkeypatch.setitem(sys.modules, name, fake)
    batch = tmp_path / "b.txt"
    batch.write_text("A cat naps in Rome\nA dog runs in Oslo\n", encoding="utf-8")
    assert main(["batch", str(batch), "--ray", "local", "--out", str(tmp_path), "--gate"]) == 0
    ((items, out, options, address),) = calls
    assert [i.sentence for i in items] == ["A cat naps in Rome", "A dog runs in Oslo"]
    assert address == "local" and out == str(tmp_path) and options.gate is True
    assert "batch-ray" in capsys.readouterr().out


@pytest.mark.reel
def test_five_full_size_preview_reels_in_one_batch(tmp_path, capsys):
    batch = tmp_path / "five.txt"
    batch.write_text("\n".join([
        "A lone astronaut walks through a neon-lit alley at dusk",
        "A fisherman mends his nets on a quiet harbour at dawn",
        "A chef plates dessert in a busy kitchen at night",
        "A cyclist races down a mountain road in the rain",
        "Two friends share an umbrella on a rainy city street",
    ]) + "\n", encoding="utf-8")
    code = main(["batch", str(batch), "--out", str(tmp_path / "out"), "--gate", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    recorded = json.loads(Path(summary["batch_json"]).read_text(encoding="utf-8"))
    assert recorded["done"] == 5 and len(recorded["reels"]) == 5
    for row in recorded["reels"]:
        info = probe(Path(row["reel_mp4"]))
        assert (info["width"], info["height"]) == (1280, 720)
        assert abs(info["duration"] - 30.0) <= 1 / 16
        audio, sr = read_audio(Path(row["reel_mp4"]))
        assert integrated_lufs(audio, sr) == pytest.approx(-18.0, abs=0.5)
    # one reel needs five loads (director, keyframes, motion, voice, music): the batch of five no more, plus one
    # critic load per gate round
    loads = {p["phase"]: p["model_loads"] for p in recorded["phases"]}
    assert recorded["gate_rounds"] >= 1
    assert recorded["model_loads"] <= 5 + recorded["gate_rounds"]
    assert all(loads[phase] <= 1 for phase in ("director", "keyframes", "motion", "narration", "music"))
    assert sum(r["wall_share"] for r in recorded["reels"]) == pytest.approx(1.0, abs=0.1)


def batch_prompt(sentences: str, **inputs) -> dict:
    loaders = {"1": ("CineReelLLMLoader", "preview (rules + technical critic)"),
               "2": ("CineReelKeyframeLoader", "preview (storyboard frames)"),
               "3": ("CineReelMotionLoader", "preview (Ken Burns moves)"),
               "4": ("CineReelVoiceLoader", "preview (eSpeak NG)"), "5": ("CineReelMusicLoader", "preview (synth bed)")}
    prompt = {node: {"class_type": kind, "inputs": {"backend": backend, "dtype": "bfloat16", "device": "auto",
                                                     "residency": "auto", "unload_comfy_models": True}}
              for node, (kind, backend) in loaders.items()}
    prompt["10"] = {"class_type": "CineReelBatch", "inputs": {
        "llm": ["1", 0], "keyframe_model": ["2", 0], "motion_model": ["3", 0], "voice_model": ["4", 0],
        "music_model": ["5", 0], "sentences": sentences, "duration_s": 2.0, "shots": 2, "aspect": "16:9",
        "language": "auto (from the place in the sentence)", "seed": 1, "gate": True, "threshold": 7.0,
        "max_retries": 1, "target_lufs": -18.0, "resolution": "480p", **inputs}}
    prompt["11"] = {"class_type": "CineReelToImage", "inputs": {"reel": ["10", 0], "kind": "keyframe", "shot": 1}}
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    return prompt


@pytest.mark.comfy
def test_the_batch_node_renders_every_reel_in_a_real_comfyui_executor(comfy):
    bad = comfy.validate(batch_prompt("A cat naps in Rome\n{\"sentence\": \"A dog\", \"shots\": -1}\n"))
    assert bad[0] is False and "sentences line 2" in json.dumps(bad[3])  # refused before anything runs
    pack = comfy.nodes.NODE_CLASS_MAPPINGS["CineReelBatch"].__module__.rsplit(".nodes.", 1)[0]
    residency = sys.modules[f"{pack}.model_loaders.residency"].RESIDENCY  # ComfyUI's own copy of the pack
    mark = residency.mark()
    executor = comfy.run(batch_prompt("A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
                                      '{"sentence": "A fisherman mends his nets in Lisbon at dawn", "seed": 5}\n'))
    assert executor.success, executor.status_messages if hasattr(executor, "status_messages") else None
    ui = executor.outputs_ui["10"]
    assert [row["id"] for row in ui["cinereel_shots"]] == ["reel 1 · shot-01", "reel 1 · shot-02",
                                                           "reel 2 · shot-01", "reel 2 · shot-02"]
    assert ui["cinereel_plan"][0]["locale"] == "2 of 2 reels done"
    assert any("2 of 2 reel(s) done" in line for line in ui["text"])
    assert len(executor.outputs_ui["12"]["images"]) == 2  # the list of REELs: the adapter ran once per reel
    loads = [e["family"] for e in residency.log_since(mark) if e["event"] == "load"]
    assert loads.count("preview-keyframes") == 1 and loads.count("preview-motion") == 1


def test_a_reel_whose_run_folder_another_process_holds_is_reported_and_the_others_finish(tmp_path):
    import subprocess
    import textwrap

    held = tmp_path / "cinereel" / "held"
    held.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        handle = open({str(held / '.lock')!r}, "a+")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write("process 1 (another cinereel) since now\\n"); handle.flush()
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        items = read_batch_text('{"sentence": "A cat naps in Rome", "run_id": "held"}\n'
                                "A dog runs along a beach in Oslo\n", default_request(**SHORT))
        result = run_batch(items, tmp_path, PipelineOptions())
    finally:
        holder.communicate("")
    first, second = result.reels
    assert (first.status, first.failed_at) == ("failed", "lock") and "in use by process 1" in first.error
    assert second.status == "done" and second.reel.artifact_path("reel").is_file()
    assert not (held / "plan.json").exists()  # nothing written into the folder another process holds


def test_inside_comfyui_each_phase_draws_one_bar_that_only_moves_forward(tmp_path, monkeypatch):
    import types

    bars = []

    class ProgressBar:  # comfy.utils.ProgressBar's interface, recording what the node would draw
        def __init__(self, total):
            self.total, self.values = total, []
            bars.append(self)

        def update_absolute(self, value, total=None):
            self.values.append(value)

    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=ProgressBar))
    items = read_batch_text("A cat naps in Rome\nA dog runs along a beach in Oslo\n", default_request(**SHORT))
    result = run_batch(items, tmp_path, PipelineOptions())
    assert [o.status for o in result.reels] == ["done", "done"]
    assert len(bars) == 7  # director, keyframes, motion, narration, music, mix, assemble: no bar per reel or stage
    for bar in bars:
        assert bar.total == 2 * 1000 and bar.values[-1] == bar.total
        assert bar.values == sorted(bar.values) and len(bar.values) > 2, bar.values


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.xdist_group("comfyui-server")  # the session's one ComfyUI 0.3.64 server (tests/conftest.py)
def test_the_batch_template_runs_in_comfyui_0_3_64(comfy_server):
    from cinereel_testkit import PACK_ROOT, load_test_module

    current = load_test_module("comfy_current")
    workflow = PACK_ROOT / "workflows" / "CineReel batch of preview reels (CPU, no weights).json"
    prompt = current.workflow_to_prompt(json.loads(workflow.read_text(encoding="utf-8")),
                                        comfy_server.get("/object_info"))
    (batch_id,) = [k for k, v in prompt.items() if v["class_type"] == "CineReelBatch"]
    (preview_id,) = [k for k, v in prompt.items() if v["class_type"] == "PreviewImage"]
    assert len(prompt[batch_id]["inputs"]["sentences"].splitlines()) == 3
    # the template's batch, made quick: two of its sentences, two 1 s shots at 480p
    prompt[batch_id]["inputs"].update(sentences="\n".join(prompt[batch_id]["inputs"]["sentences"].splitlines()[:2]),
                                      duration_s=2.0, shots=2, resolution="480p")
    entry = comfy_server.run(prompt)
    comfy_server.post("/free", {"free_memory": True})  # the shared server's cache: later tests run these loaders
    assert entry["status"]["status_str"] == "success", current.failure_of(entry)
    ui = entry["outputs"][batch_id]
    assert ui["cinereel_plan"][0]["locale"] == "2 of 2 reels done" and len(ui["cinereel_shots"]) == 4
    assert len(entry["outputs"][preview_id]["images"]) == 2  # one keyframe per reel of the list
