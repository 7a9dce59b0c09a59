"""The keyframe gate: image failures are caught on the keyframe, before a clip is animated from it."""

from __future__ import annotations

import json

import pytest
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.model_loaders.vocabulary.critique import IMAGE_LABELS
from cinereel.nodes.pipeline.director import direct
from cinereel.nodes.pipeline.headless import PipelineOptions, make_reel, preview_handles
from cinereel.nodes.pipeline.keyframe_gate import keyframe_gate_on, run_keyframe_gate
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.retry import attempt_seed
from cinereel_testkit import load_test_module, sample_plan_dict

backends = load_test_module("scripted_backends")
AXES, PASS, fail = backends.AXES, backends.PASS, backends.fail


class Critic:
    """Answers from a script: script(shot number, how many times that shot was judged, frames seen) -> critique."""

    script = staticmethod(lambda shot, seen, frames: PASS)
    calls: list[tuple[int, int]] = []  # (shot number, frames seen): 1 frame is a keyframe, more a clip

    def critique(self, frames, portraits, prompt):
        shot = int(backends.shot_of(prompt).split()[-1])
        Critic.calls.append((shot, len(frames)))
        return Critic.script(shot, sum(s == shot for s, _ in Critic.calls), len(frames))


class Keyframes(backends.RecordingKeyframes):
    calls: list[dict] = []


class Motion(backends.RecordingMotion):
    calls: list[dict] = []


CRITIC = backends.register("test-kfgate-critic", Critic, "script")
KEYFRAMES = backends.register("test-kfgate-keyframes", Keyframes, "rec")
MOTION = backends.register("test-kfgate-motion", Motion, "rec")


def small_plan(shots: int) -> str:
    """448x256, 1-second shots, the astronaut in every one, no narration."""
    plan = sample_plan_dict(width=448, height=256, duration_s=float(shots))
    plan["shots"] = [{"id": f"shot_{i + 1:02d}", "type": "hero", "duration_s": 1.0,
                      "prompt": f"shot {i + 1}: the astronaut walks through the alley", "camera": "push_in",
                      "camera_detail": "slow dolly toward her visor", "characters": ["astronaut"],
                      "narration": "", "seed": 100 + i, "flow_shift": 5.0, "ref_weight": 0.75}
                     for i in range(shots)]
    return json.dumps(plan)


def request(shots: int):
    from cinereel.model_loaders.rules import DirectorRequest

    return DirectorRequest("test", duration_s=float(shots), shots=shots)


@pytest.fixture(autouse=True)
def fresh_records():
    Critic.calls, Keyframes.calls, Motion.calls = [], [], []
    Critic.script = staticmethod(lambda shot, seen, frames: PASS)
    yield


@pytest.fixture
def keyframed(tmp_path):
    """A reel with its portraits and keyframes drawn (records cleared after)."""
    def make(shots: int):
        reel = direct(preview_handles()["llm"], request(shots), tmp_path, run_id=f"kf-{shots}",
                      plan_override=small_plan(shots))
        reel = render_keyframes(reel, KEYFRAMES)
        Keyframes.calls.clear()
        return reel

    return make


def renders(calls: list[dict], shot: str) -> int:
    return sum(c["id"] == shot for c in calls)


@pytest.mark.parametrize("keyframe_gate", [True, False])
def test_a_drifting_keyframe_is_redrawn_before_motion_so_its_clip_is_rendered_once(tmp_path, keyframe_gate):
    """The critic fails shot 1 with CHARACTER_DRIFT the first time it sees it. With the keyframe gate that is its
    keyframe: drawn twice, animated once. Without it, the clip: keyframe drawn twice and clip animated twice."""
    Critic.script = staticmethod(lambda shot, seen, frames: fail("CHARACTER_DRIFT") if (shot, seen) == (1, 1)
                                 else PASS)
    handles = {**preview_handles(), "llm": CRITIC, "keyframes": KEYFRAMES, "motion": MOTION}
    options = PipelineOptions(handles=handles, gate=True, keyframe_gate=keyframe_gate, max_retries=2)
    reel = make_reel(request(2), tmp_path, "kfgate-on" if keyframe_gate else "kfgate-off", small_plan(2), options)
    report = json.loads((reel.run_dir.root / "report.json").read_text(encoding="utf-8"))
    clip_gate = {s["shot"]: s for s in report["gate"]["shots"]}
    assert renders(Keyframes.calls, "shot_01") == 2 and renders(Keyframes.calls, "shot_02") == 1
    assert renders(Motion.calls, "shot_02") == 1
    if keyframe_gate:
        assert renders(Motion.calls, "shot_01") == 1
        section = report["keyframe_gate"]
        first, second = section["shots"][0]["attempts"]
        assert first["label"] == "CHARACTER_DRIFT" and first["verdict"] == "failed" and first["mean"] == 3
        assert first["remedy"]["label"] == "CHARACTER_DRIFT" and first["remedy"]["changes"]["ref_weight"] == [0.75, 0.9]
        assert second["verdict"] == "passed" and second["parameters"]["seed"] == attempt_seed(100, 2)
        assert second["keyframe"] == "keyframes/shot_01.kfgate2.png" == report["artifacts"]["keyframe:shot_01"]
        assert section["motion_renders_saved"] == 1 and section["rounds"] == 2 and section["flagged"] == []
        assert len(clip_gate["shot_01"]["attempts"]) == 1 and clip_gate["shot_01"]["passed"]
        # the clip was animated from the redrawn keyframe's shot: the stronger reference and the new seed
        (clip_call,) = [c for c in Motion.calls if c["id"] == "shot_01"]
        assert clip_call["ref_weight"] == pytest.approx(0.9) and clip_call["seed"] == attempt_seed(100, 2)
        # phase order: every keyframe judged (1 frame) before any clip (several frames)
        assert [frames == 1 for _, frames in Critic.calls] == [True, True, True, False, False]
        assert report["timings"].keys() >= {"keyframes", "keyframe_gate", "motion", "gate"}
    else:
        assert renders(Motion.calls, "shot_01") == 2
        assert "keyframe_gate" not in report and all(frames > 1 for _, frames in Critic.calls)
        assert len(clip_gate["shot_01"]["attempts"]) == 2
        assert report["artifacts"]["clip:shot_01"] == "clips/shot_01.attempt2.mp4"


def test_rounds_are_batched_and_bounded_and_the_best_keyframe_is_kept(keyframed):
    """Shots 1 and 3 of three fail once, shot 2 always: one critic load per round, one keyframe-model load per
    round of redraws; shot 2 stops at 1 + max_retries keyframes, its best kept and flagged."""
    reel = keyframed(3)
    means = iter([5, 4, 6])  # shot 2's three keyframes

    def script(shot, seen, frames):
        if shot == 2:
            return {"scores": dict.fromkeys(AXES, next(means)), "label": "HAND_FINGER_ARTIFACT"}
        return fail("EXTRAS_INVADE_FRAME") if seen == 1 else PASS

    Critic.script = staticmethod(script)
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    out = run_keyframe_gate(reel, CRITIC, KEYFRAMES, max_retries=2)
    loads = [e["family"] for e in RESIDENCY.log_since(mark) if e["event"] == "load"]
    assert loads == ["test-kfgate-critic", "test-kfgate-keyframes"] * 2 + ["test-kfgate-critic"]
    section = out.notes["keyframe_gate"]
    assert section["rounds"] == 3 and section["model_loads"] == 5
    assert [len(s["attempts"]) for s in section["shots"]] == [2, 3, 2]
    assert section["flagged"] == ["shot_02"] and section["keyframe_redraws"] == 4
    shot_2 = section["shots"][1]
    assert shot_2["verdict"] == "failed" and shot_2["chosen_attempt"] == 3
    assert out.artifacts["keyframe:shot_02"] == "keyframes/shot_02.kfgate3.png"
    assert "extra people" in out.plan.shots[0].negative_prompt  # the plan holds the redrawn keyframe's shot
    assert "five fingers" in out.plan.shots[1].prompt
    for rel in ("keyframes/shot_02.png", "keyframes/shot_02.kfgate2.png", "keyframes/shot_02.kfgate3.png"):
        assert (reel.run_dir.root / rel).is_file()  # every keyframe is kept


@pytest.mark.parametrize("label", [None, "OBJECT_MORPHING", "CAMERA_IGNORED"])
def test_only_image_labels_fail_a_keyframe(keyframed, label):
    reel = keyframed(1)
    Critic.script = staticmethod(lambda shot, seen, frames: fail(label))
    out = run_keyframe_gate(reel, CRITIC, KEYFRAMES)
    (shot,) = out.notes["keyframe_gate"]["shots"]
    assert shot["verdict"] == "deferred" and len(shot["attempts"]) == 1 and Keyframes.calls == []
    assert out.notes["keyframe_gate"]["labels_judged"] == sorted(IMAGE_LABELS)


def test_a_critic_that_cannot_answer_keeps_the_keyframe_with_a_warning(keyframed):
    reel = keyframed(2)

    def script(shot, seen, frames):
        if shot == 2:
            raise RuntimeError("the critic server went away")
        return PASS

    Critic.script = staticmethod(script)
    out = run_keyframe_gate(reel, CRITIC, KEYFRAMES)
    shots = {s["shot"]: s for s in out.notes["keyframe_gate"]["shots"]}
    assert shots["shot_01"]["verdict"] == "passed" and shots["shot_02"]["verdict"] == "unjudged"
    assert out.artifacts["keyframe:shot_02"] == "keyframes/shot_02.png" and Keyframes.calls == []
    (warning,) = out.notes["warnings"]
    assert "shot_02: critic_unavailable at the keyframe gate" in warning and "went away" in warning
    assert out.notes["keyframe_gate"]["approved"] == {"shot_01": "keyframes/shot_01.png"}


def test_a_resumed_keyframe_gate_asks_and_draws_nothing_again(keyframed):
    reel = keyframed(1)
    Critic.script = staticmethod(lambda shot, seen, frames: fail("WARDROBE_DRIFT") if seen == 1 else PASS)
    first = run_keyframe_gate(reel, CRITIC, KEYFRAMES)
    calls = (len(Critic.calls), len(Keyframes.calls))
    again = run_keyframe_gate(reel, CRITIC, KEYFRAMES)
    assert calls == (2, 1) and (len(Critic.calls), len(Keyframes.calls)) == calls
    assert again.artifacts == first.artifacts and again.plan == first.plan


def test_the_clip_gate_re_animates_an_approved_keyframe_instead_of_redrawing_it(keyframed):
    """An image label on the clip of a keyframe the keyframe gate approved came from the motion: the clip is
    re-animated with the label's remedy from the same keyframe."""
    from cinereel.nodes.pipeline.gate import run_gate
    from cinereel.nodes.pipeline.motion import animate

    reel = run_keyframe_gate(keyframed(1), CRITIC, KEYFRAMES)  # passes
    reel = animate(reel, MOTION)
    Critic.script = staticmethod(lambda shot, seen, frames: fail("WARDROBE_DRIFT") if frames > 1 and seen == 2
                                 else PASS)
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1)
    assert Keyframes.calls == [] and len(Motion.calls) == 2
    assert "white EVA suit" in Motion.calls[1]["prompt"]  # the remedy reached the motion model
    assert out.artifacts["keyframe:shot_01"] == "keyframes/shot_01.png"
    assert out.artifacts["clip:shot_01"] == "clips/shot_01.attempt2.mp4"


def test_on_by_default_with_the_gate_and_a_real_critic_only():
    preview = preview_handles()
    real = {**preview, "llm": CRITIC}
    assert keyframe_gate_on(PipelineOptions(handles=real, gate=True))
    assert not keyframe_gate_on(PipelineOptions(handles=real, gate=False))
    assert not keyframe_gate_on(PipelineOptions(handles=preview, gate=True))
    assert keyframe_gate_on(PipelineOptions(handles=preview, keyframe_gate=True))
    assert not keyframe_gate_on(PipelineOptions(handles=real, gate=True, keyframe_gate=False))


@pytest.mark.parametrize("argv,env,expected", [
    ([], {}, None),
    (["--keyframe-gate"], {}, True),
    (["--no-keyframe-gate"], {"CINEREEL_GATE_KEYFRAME_GATE": "true"}, False),
    ([], {"CINEREEL_GATE_KEYFRAME_GATE": "false"}, False),
])
def test_the_option_from_flags_and_environment(argv, env, expected):
    from cinereel.nodes.pipeline import settings as cfg
    from cinereel.nodes.pipeline.cli import parser

    args, resolved = cfg.resolve(parser(), ["a sentence", *argv], env)
    assert args.keyframe_gate is expected and resolved.values["gate.keyframe_gate"] is expected


def test_the_option_from_a_settings_file(tmp_path):
    from cinereel.nodes.pipeline import settings as cfg
    from cinereel.nodes.pipeline.cli import parser

    path = tmp_path / "cinereel.toml"
    path.write_text("[gate]\nenabled = true\nkeyframe_gate = false\n", encoding="utf-8")
    args, resolved = cfg.resolve(parser(), ["--config", str(path), "a sentence"], {})
    assert args.keyframe_gate is False and resolved.sources["gate.keyframe_gate"] == "file"
    assert 'keyframe_gate = ""' in cfg.render()  # the template leaves it to the default


def test_the_node_passes_through_with_the_preview_critic_and_shows_its_board_otherwise(keyframed):
    from cinereel.nodes.keyframe_gate import MODES, KeyframeGateNode

    reel = keyframed(2)
    passed_through = KeyframeGateNode().gate(reel, preview_handles()["llm"], KEYFRAMES, MODES[0], 7.0, 1)
    assert passed_through["result"] == (reel,) and "unjudged" in passed_through["ui"]["text"][0]
    assert Critic.calls == []
    Critic.script = staticmethod(lambda shot, seen, frames: fail("NEON_GLOW_LEAK") if shot == 2 else PASS)
    result = KeyframeGateNode().gate(reel, CRITIC, KEYFRAMES, MODES[0], 7.0, 1)
    board = result["ui"]["cinereel_scores"]
    assert [(r["shot"], r["attempt"], r["of"], r["flagged"]) for r in board] == [
        ("shot_01", 1, 1, False), ("shot_02", 1, 2, True)]  # equal means: the first kept
    assert result["ui"]["text"][0].startswith("2 round(s), 1 keyframe redraw(s), 1 motion render(s) saved")


def test_the_language_model_critic_is_told_it_sees_a_keyframe():
    from cinereel.model_loaders.qwen import critic_user_text

    assert "keyframe, a still image" in critic_user_text("shot 1: x", 1, 1)[1]
    assert "8 frames sampled in order" in critic_user_text("shot 1: x", 1, 8)[1]
