"""Directing a finished run (issue 15, headless half): locked shots, edited plans, one-shot re-renders, the
critic board's data and the contact sheet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from cinereel.model_loaders.rules import DirectorRequest
from cinereel.nodes.pipeline.cli import main
from cinereel.nodes.pipeline.contact_sheet import SheetLayout, middle_frame
from cinereel.nodes.pipeline.director import direct
from cinereel.nodes.pipeline.gate import gate_may_retry, run_gate, score_rows, summary_text
from cinereel.nodes.pipeline.headless import preview_handles
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.motion import animate
from cinereel.nodes.pipeline.plan_edits import plan_edit_problems
from cinereel.nodes.pipeline.retry import attempt_seed
from cinereel_testkit import load_test_module, sample_plan_dict

backends = load_test_module("scripted_backends")
AXES, shot_ids = backends.AXES, backends.shot_ids


def morphing_everywhere(prompt, seen):
    return {"scores": dict.fromkeys(AXES, 3), "label": "OBJECT_MORPHING"}


class Critic(backends.ScriptedCritic):
    """A critic model that fails every clip until a test scripts it otherwise (``fresh_records`` resets it)."""

    script = staticmethod(morphing_everywhere)
    calls: list[str] = []


class CountingKeyframes(backends.RecordingKeyframes):
    calls: list[dict] = []


class CountingMotion(backends.RecordingMotion):
    calls: list[dict] = []


CRITIC = backends.register("test-shots15-critic", Critic, "script")
KEYFRAMES = backends.register("test-shots15-keyframes", CountingKeyframes, "count")
MOTION = backends.register("test-shots15-motion", CountingMotion, "count")


@pytest.fixture(autouse=True)
def fresh_records():
    Critic.calls, CountingKeyframes.calls, CountingMotion.calls = [], [], []
    Critic.script = staticmethod(morphing_everywhere)


def small_plan(shot_changes: dict | None = None) -> dict:
    """Two 1-second shots at 448x256; ``shot_changes`` = {shot index: {field: value}}."""
    shot_changes = shot_changes or {}
    plan = sample_plan_dict(width=448, height=256, duration_s=2.0)
    plan["shots"] = [{"id": f"shot_{i + 1:02d}", "type": "hero", "duration_s": 1.0, "camera": "push_in",
                      "prompt": f"shot {i + 1}: the astronaut walks through the alley", "characters": ["astronaut"],
                      "narration": "", "seed": 100 + i, **shot_changes.get(i, {})} for i in range(2)]
    return plan


def reel_of(tmp_path: Path, plan: dict):
    return direct(preview_handles()["llm"], DirectorRequest("test", duration_s=2.0, shots=2), tmp_path,
                  run_id="edited", plan_override=json.dumps(plan))


def manifest_times(run: Path) -> dict[str, float]:
    return {rel: entry["time"] for rel, entry in json.loads((run / "manifest.json").read_text()).items()}


# -- locked shots ----------------------------------------------------------------------------------

def test_a_locked_shot_survives_a_prompt_change_and_a_failing_gate(tmp_path):
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    run = reel.run_dir.root
    first = manifest_times(run)
    keyframe_bytes = (run / "keyframes/shot_01.png").read_bytes()

    CountingKeyframes.calls, CountingMotion.calls = [], []
    edited = small_plan({0: {"locked": True, "prompt": "shot 1: the astronaut runs, now in the rain"},
                           1: {"prompt": "shot 2: the astronaut stops under a sign"}})
    reel = animate(render_keyframes(reel_of(tmp_path, edited), KEYFRAMES), MOTION)
    assert shot_ids(CountingKeyframes.calls) == ["shot_02"] and shot_ids(CountingMotion.calls) == ["shot_02"]
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=2)

    after = manifest_times(run)
    for rel in ("keyframes/shot_01.png", "clips/shot_01.attempt1.mp4"):
        assert after[rel] == first[rel], rel  # never re-rendered, though its prompt changed and it failed
    assert (run / "keyframes/shot_01.png").read_bytes() == keyframe_bytes
    shots = {s["shot"]: s for s in out.notes["gate"]["shots"]}
    assert len(shots["shot_01"]["attempts"]) == 1 and shots["shot_01"]["locked"] and shots["shot_01"]["flagged"]
    assert len(shots["shot_02"]["attempts"]) == 3  # the unlocked shot was sent back twice
    animated = shot_ids(CountingMotion.calls)
    assert "shot_01" not in animated[1:] and animated.count("shot_02") == 3
    assert out.notes["gate"]["locked"] == ["shot_01"] and "locked (never sent back): shot_01" in summary_text(
        out.notes["gate"])
    assert out.artifacts["clip:shot_01"] == "clips/shot_01.attempt1.mp4"
    assert not gate_may_retry(out.plan.shot("shot_01")) and gate_may_retry(out.plan.shot("shot_02"))


def test_a_locked_shot_keeps_the_attempt_the_gate_chose_not_attempt_one(tmp_path):
    """After a gated run keeps attempt 2, locking the shot and editing its prompt reuses attempt 2 as it is."""
    Critic.script = staticmethod(lambda prompt, seen: {"scores": dict.fromkeys(AXES, 3 if seen == 1 else 9),
                                                       "label": "OBJECT_MORPHING" if seen == 1 else None})
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    gated = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1)
    assert gated.artifacts["clip:shot_01"] == "clips/shot_01.attempt2.mp4"
    CountingKeyframes.calls, CountingMotion.calls = [], []
    reel = reel_of(tmp_path, small_plan({0: {"locked": True, "prompt": "shot 1: edited"}}))
    reel = animate(render_keyframes(reel, KEYFRAMES), MOTION)
    assert reel.artifacts["clip:shot_01"] == "clips/shot_01.attempt2.mp4"
    assert "shot_01" not in shot_ids(CountingKeyframes.calls) and "shot_01" not in shot_ids(CountingMotion.calls)


# -- the technical check shown as what it is ------------------------------------------------------

def test_a_technical_pass_shows_its_measured_figures_and_no_scores(tmp_path):
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    out = run_gate(reel, preview_handles()["llm"], KEYFRAMES, MOTION, max_retries=0)
    report = json.loads((reel.run_dir.root / "report.json").read_text(encoding="utf-8"))
    attempt = report["gate"]["shots"][0]["attempts"][0]
    assert attempt["source"] == "technical" and attempt["scores"] is None and attempt["mean"] is None
    assert set(attempt["measured"]) == {"motion", "brightness", "flicker"} and attempt["measured"]["motion"] > 0
    assert attempt["verdict"].startswith("technical check passed (motion ")
    (row, _) = score_rows(out.notes["gate"])
    assert row["scores"] is None and row["verdict"] == attempt["verdict"] and "composition" not in row["verdict"]


def test_a_critic_s_scores_are_shown_with_their_axes(tmp_path):
    Critic.script = staticmethod(lambda prompt, seen: {"scores": dict.fromkeys(AXES, 9), "label": None})
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=0)
    attempt = out.notes["gate"]["shots"][0]["attempts"][0]
    assert attempt["source"] == "critic" and attempt["scores"] == dict.fromkeys(AXES, 9) and attempt["mean"] == 9
    assert attempt["verdict"] == "composition 9, motion 9, character 9, lighting 9"


def test_the_gate_sends_each_finished_attempt_and_the_keyframes_stage_each_picture(tmp_path, monkeypatch):
    from cinereel.nodes.pipeline import board, gate

    sent = []
    monkeypatch.setattr(board, "send_ui_event", lambda event, data: sent.append((event, data)))
    monkeypatch.setattr(gate, "send_ui_event", lambda event, data: sent.append((event, data)))
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    pictures = [data["name"] for event, data in sent if event == "cinereel.keyframe"]
    assert pictures == ["portrait:astronaut", "keyframe:shot_01", "keyframe:shot_02"]
    sent.clear()
    run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1)
    live = [data["attempt"] for event, data in sent if event == "cinereel.gate" and "attempt" in data]
    assert [(a["shot"], a["attempt"]) for a in live] == [("shot_01", 1), ("shot_02", 1), ("shot_01", 2),
                                                         ("shot_02", 2)]
    assert all(a["source"] == "critic" and a["label"] == "OBJECT_MORPHING" for a in live)
    assert live[2]["remedy"] == f"OBJECT_MORPHING: seed 100 -> {attempt_seed(100, 2)}, flow_shift 5.0 -> 4.0"
    (final,) = [data for event, data in sent if event == "cinereel.gate" and "rows" in data]
    kept = [(a["shot"], a["attempt"]) for a in final["attempts"] if a["kept"]]
    assert kept == [("shot_01", 1), ("shot_02", 1)]  # all fail alike: the first, best-scoring attempt is kept


# -- the Director's plan_edits --------------------------------------------------------------------

def test_plan_edit_problems_name_each_field_the_way_the_editor_addresses_it():
    plan = small_plan({1: {"flow_shift": 9, "camera": "zoom"}})
    plan["shots"][0]["narration"] = " ".join(["word"] * 60)
    problems = plan_edit_problems(plan, "kokoro")
    paths = [p["path"] for p in problems]
    assert paths == ["shots.1.camera", "shots.1.flow_shift", "shots.0.narration"], problems
    assert problems[1]["message"] == "must be <= 8, got 9"
    assert "too long to speak in the shot" in problems[2]["message"]
    assert plan_edit_problems(small_plan(), "kokoro") == []


def test_the_director_node_refuses_bad_edits_naming_every_field_and_renders_good_ones_in_the_same_run(
        tmp_path, monkeypatch):
    from cinereel.nodes.director import DirectorNode

    monkeypatch.setenv("CINEREEL_OUTPUT", str(tmp_path))
    bad = small_plan({0: {"seed": -1}, 1: {"flow_shift": 12}})
    message = DirectorNode.VALIDATE_INPUTS(sentence="x", plan_edits=json.dumps(bad))
    assert "shots[0].seed must be >= 0" in message and "shots[1].flow_shift must be <= 8" in message

    node, llm = DirectorNode(), preview_handles()["llm"]
    args = dict(sentence="A lone astronaut walks through a neon-lit Tokyo alley at dusk", duration_s=4.0, shots=2,
                aspect="16:9", language="auto (from the place in the sentence)", seed=0, resolution="480p")
    planned = node.plan(llm, **args)["result"][0]
    edited_plan = planned.plan.model_dump(mode="json")
    edited_plan["shots"][1]["prompt"] = "a different second shot"
    edited_plan["shots"][1]["locked"] = True
    out = node.plan(llm, **args, plan_edits=json.dumps(edited_plan))
    reel = out["result"][0]
    assert reel.run_id == planned.run_id and reel.plan.shots[1].prompt == "a different second shot"
    assert out["ui"]["cinereel_plan"][0]["locked"] == [reel.plan.shots[1].id]
    edited_plan["shots"][0]["narration"] = " ".join(["word"] * 80)
    with pytest.raises(ValueError, match=r"shots\[0\]\.narration: too long to speak"):
        node.plan(llm, **args, plan_edits=json.dumps(edited_plan))


# -- cinereel rerender / cinereel edit ---------------------------------------------------------------

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"


@pytest.fixture
def preview_run(tmp_path, capsys) -> Path:
    assert main([SENTENCE, "--out", str(tmp_path), "--duration", "3", "--shots", "3", "--resolution", "480p",
                 "--run-id", "edit-me"]) == 0
    capsys.readouterr()
    return tmp_path / "cinereel" / "edit-me"


def changed_since(run: Path, before: dict[str, float]) -> set[str]:
    after = manifest_times(run)
    return {rel for rel, time in after.items() if before.get(rel) != time} - {"director.json"}


def test_rerender_remakes_exactly_that_shot_and_the_assembly(preview_run, capsys):
    run = preview_run
    before = manifest_times(run)
    mtimes = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.suffix in (".png", ".mp4", ".wav")}
    old_seed = json.loads((run / "plan.json").read_text())["shots"][2]["seed"]
    assert main(["rerender", str(run), "shot_03", "--json"]) == 0  # shot-03 in the plan: either spelling
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert changed_since(run, before) == {"keyframes/shot-03.png", "clips/shot-03.attempt1.mp4", "reel.mp4"}
    untouched = {p for p in mtimes if p.name not in ("shot-03.png", "shot-03.attempt1.mp4", "reel.mp4",
                                                      "contact_sheet.png")}
    assert untouched and all(p.stat().st_mtime_ns == mtimes[p] for p in untouched)
    (record,) = json.loads((run / "rerenders.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    assert record["shot"] == "shot-03" and record["from_seed"] == old_seed != record["seed"]
    assert plan["shots"][2]["seed"] == record["seed"] and plan["reel_seed"] is None
    assert summary["contact_sheet"] == str(run / "contact_sheet.png")
    assert main(["rerender", "edit-me", "shot-03", "--out", str(run.parent.parent)]) == 0  # by run id: a new seed
    second = json.loads((run / "rerenders.json").read_text())[1]
    assert second["count"] == 2 and second["seed"] not in (old_seed, record["seed"])


def test_rerendering_the_first_shot_keeps_the_portraits_and_the_music(preview_run):
    before = manifest_times(preview_run)
    assert main(["rerender", str(preview_run), "shot-01"]) == 0
    assert changed_since(preview_run, before) == {"keyframes/shot-01.png", "clips/shot-01.attempt1.mp4", "reel.mp4"}


def test_edit_takes_a_piped_plan_and_re_renders_what_it_changed(preview_run, monkeypatch, capsys):
    run = preview_run
    assert main(["edit", str(run), "--print"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == json.loads((run / "plan.json").read_text())
    before = manifest_times(run)

    plan["shots"][1]["camera"] = "pan_left"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(plan)))
    assert main(["edit", str(run), "--plan", "-"]) == 0
    assert changed_since(run, before) == {"keyframes/shot-02.png", "clips/shot-02.attempt1.mp4", "reel.mp4"}
    assert json.loads((run / "plan.json").read_text())["shots"][1]["camera"] == "pan_left"

    before = manifest_times(run)
    plan["shots"][0]["flow_shift"] = 9
    plan["shots"][2]["camera"] = "zoom"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(plan)))
    capsys.readouterr()
    assert main(["edit", str(run), "--plan", "-"]) == 2
    err = capsys.readouterr().err
    assert "shots[0].flow_shift must be <= 8" in err and "shots[2].camera must be one of" in err
    assert "nothing was rendered" in err and manifest_times(run) == before


def test_edit_opens_the_plan_in_the_editor_and_renders_what_was_saved(preview_run, monkeypatch, tmp_path):
    import sys

    script = tmp_path / "editor.py"
    script.write_text("import json, sys\n"
                      "plan = json.load(open(sys.argv[1]))\n"
                      "plan['shots'][2]['prompt'] = 'the astronaut looks up at the last sign'\n"
                      "json.dump(plan, open(sys.argv[1], 'w'))\n", encoding="utf-8")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    before = manifest_times(preview_run)
    assert main(["edit", "edit-me", "--out", str(preview_run.parent.parent)]) == 0
    assert changed_since(preview_run, before) == {"keyframes/shot-03.png", "clips/shot-03.attempt1.mp4", "reel.mp4"}
    edited = json.loads((preview_run / "edited_plan.json").read_text(encoding="utf-8"))
    assert edited["shots"][2]["prompt"] == "the astronaut looks up at the last sign"


# -- the contact sheet --------------------------------------------------------------------------------

def region(sheet: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(sheet) as img:
        return np.asarray(img.convert("RGB").crop(box), dtype=np.float32)


def thumbnail(clip: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    from PIL import Image

    frame = Image.fromarray(middle_frame(clip)).resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BILINEAR)
    return np.asarray(frame, dtype=np.float32)


def test_a_preview_run_has_a_contact_sheet_with_one_row_per_shot(preview_run):
    from cinereel.model_loaders.vocabulary.plan import validate_plan
    from PIL import Image

    plan = validate_plan((preview_run / "plan.json").read_text())
    layout = SheetLayout.of(plan)
    with Image.open(preview_run / "contact_sheet.png") as sheet:
        assert sheet.size == (layout.width, layout.height) and layout.shots == 3
    for index, shot in enumerate(plan.shots):
        box = layout.kept_box(index)
        shown = region(preview_run / "contact_sheet.png", box)
        assert np.abs(shown - thumbnail(preview_run / f"clips/{shot.id}.attempt1.mp4", box)).mean() < 3


def test_a_gated_run_s_sheet_shows_the_kept_attempt_not_the_first(tmp_path):
    from PIL import Image

    Critic.script = staticmethod(lambda prompt, seen: {"scores": dict.fromkeys(AXES, 3 if seen == 1 else 9),
                                                       "label": "CHARACTER_DRIFT" if seen == 1 else None})
    reel = animate(render_keyframes(reel_of(tmp_path, small_plan()), KEYFRAMES), MOTION)
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1)
    run, layout = out.run_dir.root, SheetLayout.of(out.plan)
    with Image.open(run / "contact_sheet.png") as sheet:
        assert sheet.size == (layout.width, layout.height) and layout.height == SheetLayout(layout.thumb_w, 2).height
    box = layout.kept_box(0)
    shown = region(run / "contact_sheet.png", box)
    kept = np.abs(shown - thumbnail(run / "clips/shot_01.attempt2.mp4", box)).mean()
    first = np.abs(shown - thumbnail(run / "clips/shot_01.attempt1.mp4", box)).mean()
    assert kept < 3 and kept < first, (kept, first)
    small = layout.small_box(0, 0)  # the other attempt, small, beside it
    assert np.abs(region(run / "contact_sheet.png", small) - thumbnail(run / "clips/shot_01.attempt1.mp4",
                                                                        small)).mean() < 3
