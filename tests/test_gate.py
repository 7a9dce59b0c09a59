"""The critic gate: labels change what the next render receives, rounds are batched, nothing is thrown away."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY, register_family
from cinereel.model_loaders.vocabulary.critique import FAILURE_LABELS, IMAGE_LABELS, MOTION_LABELS
from cinereel.nodes.pipeline.director import direct
from cinereel.nodes.pipeline.gate import GateFailed, check_gate_settings, run_gate
from cinereel.nodes.pipeline.headless import preview_handles
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.motion import animate
from cinereel.nodes.pipeline.retry import attempt_seed
from cinereel_testkit import load_test_module, sample_plan_dict

backends = load_test_module("scripted_backends")
PASS, fail = backends.PASS, backends.fail


class ScriptedCritic(backends.ScriptedCritic):
    script = staticmethod(lambda prompt, seen: PASS)
    calls: list[str] = []


class RecordingKeyframes(backends.RecordingKeyframes):
    calls: list[dict] = []


class RecordingMotion(backends.RecordingMotion):
    calls: list[dict] = []
    faults: dict[str, str] = {}  # shot id -> "black" | "frozen" | "nan", first attempt only

    def render_clip(self, keyframe, shot, plan, num_frames, seed, callback=None):
        first_attempt = seed < 1000  # small_plan's seeds are 100 + i; retries get hashed 63-bit seeds
        fault = RecordingMotion.faults.get(shot["id"]) if first_attempt else None
        frames = np.stack(list(super().render_clip(keyframe, shot, plan, num_frames, seed, callback)))
        if fault == "black":
            return np.zeros_like(frames)
        if fault == "frozen":
            return np.repeat(frames[:1], len(frames), axis=0)
        if fault == "nan":
            out = frames.astype(np.float32) / 255
            out[3:6] = np.nan
            return out
        return frames


CRITIC = backends.register("test-scripted-critic", ScriptedCritic, "script")
KEYFRAMES = backends.register("test-recording-keyframes", RecordingKeyframes, "rec")
MOTION = backends.register("test-recording-motion", RecordingMotion, "rec")


def small_plan(shots: int) -> str:
    """A quick plan: 448x256, 1-second shots, every shot with the astronaut in frame."""
    plan = sample_plan_dict(width=448, height=256, duration_s=float(shots))
    plan["shots"] = [{"id": f"shot_{i + 1:02d}", "type": "hero", "duration_s": 1.0,
                      "prompt": f"shot {i + 1}: the astronaut walks through the alley", "camera": "push_in",
                      "camera_detail": "slow dolly toward her visor as rain streaks past", "characters": ["astronaut"],
                      "narration": "", "seed": 100 + i, "flow_shift": 5.0, "ref_weight": 0.75}
                     for i in range(shots)]
    return json.dumps(plan)


@pytest.fixture
def make_reel(tmp_path):
    def make(shots: int):
        from cinereel.model_loaders.rules import DirectorRequest

        ScriptedCritic.calls, RecordingKeyframes.calls, RecordingMotion.calls = [], [], []
        RecordingMotion.faults = {}
        reel = direct(preview_handles()["llm"], DirectorRequest("test", duration_s=float(shots), shots=shots),
                      tmp_path, run_id=f"gate-{shots}", plan_override=small_plan(shots))
        reel = animate(render_keyframes(reel, KEYFRAMES), MOTION)
        RecordingKeyframes.calls, RecordingMotion.calls = [], []
        return reel

    return make


EXPECTED = {  # label -> check on the shot dict the renderers receive for attempt 2
    "CHARACTER_DRIFT": lambda s: s["ref_weight"] == pytest.approx(0.9),
    "EXTRAS_INVADE_FRAME": lambda s: "extra people" in s["negative_prompt"],
    "CAMERA_IGNORED": lambda s: s["camera_detail"] == "slow push in" and s["camera"] == "push_in",
    "WALKING_BACKWARDS": lambda s: "walking forward" in s["prompt"] and "walking backwards" in s["negative_prompt"],
    "OBJECT_MORPHING": lambda s: s["flow_shift"] == 4.0,
    "HAND_FINGER_ARTIFACT": lambda s: "five fingers" in s["prompt"] and "extra fingers" in s["negative_prompt"],
    "WARDROBE_DRIFT": lambda s: "white EVA suit" in s["prompt"] and "gold visor" in s["prompt"],
    "NEON_GLOW_LEAK": lambda s: "neutral white balance" in s["prompt"],
    "STYLIZED_AI_LOOK": lambda s: "photorealistic" in s["prompt"] and "plastic skin" in s["negative_prompt"],
    "RANDOM_INTIMACY": lambda s: "no physical contact" in s["prompt"],
}


@pytest.mark.parametrize("label", FAILURE_LABELS)
def test_each_label_changes_what_the_next_render_receives(make_reel, label):
    reel = make_reel(1)
    ScriptedCritic.script = staticmethod(lambda prompt, seen: fail(label) if seen == 1 else PASS)
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1)
    (motion_call,) = RecordingMotion.calls
    assert EXPECTED[label](motion_call), motion_call
    assert motion_call["seed_arg"] == attempt_seed(100, 2) == motion_call["seed"]
    if label in IMAGE_LABELS:
        (keyframe_call,) = RecordingKeyframes.calls
        assert EXPECTED[label](keyframe_call) and keyframe_call["seed"] == attempt_seed(100, 2)
    else:
        assert label in MOTION_LABELS and RecordingKeyframes.calls == []
    shot = out.notes["gate"]["shots"][0]
    assert shot["passed"] and shot["chosen_attempt"] == 2
    assert shot["attempts"][1]["fixes_label"] == label and "seed" in shot["attempts"][1]["changes"]
    assert out.artifacts["clip:shot_01"] == "clips/shot_01.attempt2.mp4"
    assert EXPECTED[label](out.plan.shots[0].model_dump())  # the plan now holds the shot that passed


class EncodingMotion(RecordingMotion):
    """A motion model that encodes the phase's prompts up front, as Wan2.2 does (``encode_prompts``)."""

    encoded: list[list[dict]] = []

    def encode_prompts(self, shots):
        EncodingMotion.encoded.append([dict(shot) for shot in shots])


class EncodingKeyframes(RecordingKeyframes):
    """A keyframe model that encodes the phase's prompts up front, as FLUX.2 klein does."""

    encoded: list[tuple[list[dict], list[dict]]] = []

    def encode_prompts(self, characters, shots, plan):
        EncodingKeyframes.encoded.append(([dict(c) for c in characters], [dict(s) for s in shots]))


ENCODING_MOTION = backends.register("test-encoding-motion", EncodingMotion, "rec")
ENCODING_KEYFRAMES = backends.register("test-encoding-keyframes", EncodingKeyframes, "rec")


def test_a_retry_round_encodes_the_revised_prompts_of_the_clips_it_re_renders(make_reel):
    reel = make_reel(2)
    ScriptedCritic.script = staticmethod(
        lambda prompt, seen: fail("WALKING_BACKWARDS") if seen == 1 and prompt.startswith("shot 2:") else PASS)
    EncodingMotion.encoded, EncodingKeyframes.encoded = [], []
    run_gate(reel, CRITIC, KEYFRAMES, ENCODING_MOTION, max_retries=1)
    (retry,) = EncodingMotion.encoded  # one re-render round, for shot_02 alone
    assert [shot["id"] for shot in retry] == ["shot_02"]
    assert EXPECTED["WALKING_BACKWARDS"](retry[0])  # the prompt the retry renders, not the plan's first one
    assert retry[0]["prompt"] == RecordingMotion.calls[-1]["prompt"]


def test_a_retry_round_encodes_the_revised_prompts_of_the_keyframes_it_redraws(make_reel):
    reel = make_reel(2)
    ScriptedCritic.script = staticmethod(
        lambda prompt, seen: fail("WARDROBE_DRIFT") if seen == 1 and prompt.startswith("shot 1:") else PASS)
    EncodingKeyframes.encoded = []
    run_gate(reel, CRITIC, ENCODING_KEYFRAMES, MOTION, max_retries=1)
    ((characters, shots),) = EncodingKeyframes.encoded
    assert characters == [] and [shot["id"] for shot in shots] == ["shot_01"]
    assert EXPECTED["WARDROBE_DRIFT"](shots[0]) and shots[0]["prompt"] == RecordingKeyframes.calls[-1]["prompt"]


def test_failures_are_re_rendered_in_batched_rounds(make_reel):
    reel = make_reel(6)
    failing = {"shot 2:", "shot 5:"}
    ScriptedCritic.script = staticmethod(
        lambda prompt, seen: fail("CHARACTER_DRIFT") if seen == 1 and prompt.split(" the")[0] in failing else PASS)
    RESIDENCY.evict()
    mark = RESIDENCY.mark()
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=3)
    gate = out.notes["gate"]
    assert gate["rounds"] == 2
    assert sorted({s["id"] for s in RecordingMotion.calls}) == ["shot_02", "shot_05"]
    assert sorted({s["id"] for s in RecordingKeyframes.calls}) == ["shot_02", "shot_05"]
    loads = [e["family"] for e in RESIDENCY.log_since(mark) if e["event"] == "load"]
    assert loads == ["test-scripted-critic", "test-recording-keyframes", "test-recording-motion",
                     "test-scripted-critic"]
    assert gate["model_loads"] == 4
    assert [len(s["attempts"]) for s in gate["shots"]] == [1, 2, 1, 1, 2, 1]


def test_a_critic_that_never_passes_ends_with_the_best_attempt_flagged(make_reel):
    reel = make_reel(2)
    means = iter([3, 3, 5, 4, 4, 6])  # shot_01: 3, 5, 4 / shot_02: 3, 4, 6 (rounds interleave)
    ScriptedCritic.script = staticmethod(
        lambda prompt, seen: {"scores": dict.fromkeys(PASS["scores"], next(means)), "label": "OBJECT_MORPHING"})
    out = run_gate(reel, CRITIC, KEYFRAMES, MOTION, threshold=7.0, max_retries=2)
    gate = out.notes["gate"]
    assert gate["flagged"] == ["shot_01", "shot_02"]
    assert [len(s["attempts"]) for s in gate["shots"]] == [3, 3]
    assert [s["chosen_attempt"] for s in gate["shots"]] == [2, 3]
    assert out.artifacts["clip:shot_01"] == "clips/shot_01.attempt2.mp4"
    clips = sorted(p.name for p in (reel.run_dir.root / "clips").glob("*.mp4"))
    assert len(clips) == 6 == gate["attempts_total"]
    report = json.loads((reel.run_dir.root / "report.json").read_text(encoding="utf-8"))
    on_disk = {f"clips/{name}" for name in clips}
    in_report = {a["clip"] for s in report["gate"]["shots"] for a in s["attempts"]}
    assert in_report == on_disk
    assert report["gate"]["label_counts"] == {"OBJECT_MORPHING": 6}
    assert 0 < report["gate_share_of_wall_time"] <= 1


def test_strict_mode_stops_naming_the_shots_and_keeps_the_attempts(make_reel):
    reel = make_reel(2)
    ScriptedCritic.script = staticmethod(
        lambda prompt, seen: fail("STYLIZED_AI_LOOK") if prompt.startswith("shot 2:") else PASS)
    with pytest.raises(GateFailed, match="shots shot_02 did not reach the threshold 7"):
        run_gate(reel, CRITIC, KEYFRAMES, MOTION, max_retries=1, strict=True)
    assert len(list((reel.run_dir.root / "clips").glob("shot_02.attempt*.mp4"))) == 2
    report = json.loads((reel.run_dir.root / "report.json").read_text(encoding="utf-8"))
    assert report["gate"]["flagged"] == ["shot_02"]


def broken_clips(make_reel):
    """A 4-shot reel whose first clips are black, frozen and NaN-filled, the fourth clean; a critic that passes."""
    from cinereel.nodes.pipeline.motion import clip_job
    from cinereel.nodes.pipeline.stage import run_jobs

    reel = make_reel(4)
    RecordingMotion.faults = {"shot_01": "black", "shot_02": "frozen", "shot_03": "nan"}
    jobs = [clip_job(reel, shot, MOTION, attempt=1) for shot in reel.plan.shots]  # attempt 1 again, with faults
    for job in jobs:
        reel.run_dir.path(job.rel).unlink()
    run_jobs(reel.run_dir, MOTION, jobs)
    ScriptedCritic.script = staticmethod(lambda prompt, seen: PASS)
    ScriptedCritic.calls = []
    return reel


def test_the_technical_check_catches_broken_clips_without_asking_the_critic(make_reel):
    out = run_gate(broken_clips(make_reel), CRITIC, KEYFRAMES, MOTION, max_retries=1)
    first_round = [s["attempts"][0] for s in out.notes["gate"]["shots"]]
    assert "black_frames" in first_round[0]["technical"]
    assert "frozen" in first_round[1]["technical"]
    assert "nan_or_inf" in first_round[2]["technical"]
    assert first_round[3]["technical"] == []
    # the language-model critic saw only the clean clip in round 1, then the three re-renders
    assert [p.split(":")[0] for p in ScriptedCritic.calls] == ["shot 4", "shot 1", "shot 2", "shot 3"]
    assert all(s["passed"] for s in out.notes["gate"]["shots"])


def test_with_the_technical_check_off_the_critic_judges_dark_and_still_clips_but_never_nan(make_reel):
    out = run_gate(broken_clips(make_reel), CRITIC, KEYFRAMES, MOTION, max_retries=0, technical_gate=False)
    gate = out.notes["gate"]
    assert gate["technical_check"] is False
    # the dark and the still clip reach the critic (which passes them); the NaN clip never does
    assert [p.split(":")[0] for p in ScriptedCritic.calls] == ["shot 1", "shot 2", "shot 4"]
    shots = {s["shot"]: s for s in gate["shots"]}
    assert shots["shot_01"]["passed"] and shots["shot_02"]["passed"] and shots["shot_04"]["passed"]
    assert "nan_or_inf" in shots["shot_03"]["attempts"][0]["technical"] and not shots["shot_03"]["passed"]


@pytest.mark.parametrize("threshold,retries,message", [
    (0.5, 3, "threshold must be a number from 1 to 10"),
    (10.5, 3, "threshold must be a number from 1 to 10"),
    (float("nan"), 3, "threshold must be a number from 1 to 10"),
    (7.0, -1, "max_retries must be a whole number from 0 to 5"),
    (7.0, 6, "max_retries must be a whole number from 0 to 5"),
    (7.0, 1.5, "max_retries must be a whole number from 0 to 5"),
])
def test_gate_settings_that_could_not_end_well_are_refused(threshold, retries, message):
    with pytest.raises(ValueError, match=message):
        check_gate_settings(threshold, retries)


# -- the same routing, received by the real renderers on tiny checkpoints ------------------------

class Recorder:
    """Wraps a real backend and records the shot each render call receives, then renders it for real."""

    def __init__(self, inner):
        self._inner = inner

    def render_portrait(self, *args, **kwargs):
        return self._inner.render_portrait(*args, **kwargs)

    def render_keyframe(self, shot, plan, portraits, seed, callback=None):
        RecordingKeyframes.calls.append(dict(shot))
        return self._inner.render_keyframe(shot, plan, portraits, seed, callback=callback)

    def render_clip(self, keyframe, shot, plan, num_frames, seed, callback=None):
        RecordingMotion.calls.append({**shot, "seed_arg": seed})
        return self._inner.render_clip(keyframe, shot, plan, num_frames, seed, callback=callback)


def _recording_real(family_name: str):
    from cinereel.model_loaders.residency import load_model

    def load(handle):
        return Recorder(load_model(ModelHandle(family_name, handle.checkpoint, handle.dtype, handle.device,
                                               handle.options)))

    return load


register_family("test-recording-flux2", _recording_real("flux2-klein"))
register_family("test-recording-wan", _recording_real("wan2.2-i2v"))


@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory, one_torch_thread):
    options = {"steps": 2, "first_block_cache": 0.0}
    keyframes = ModelHandle("test-recording-flux2", str(load_test_module("tiny_flux2").tiny_flux2_checkpoint()),
                            "float32", "cpu", options)
    motion = ModelHandle("test-recording-wan", str(load_test_module("tiny_wan").tiny_wan_checkpoint()),
                         "float32", "cpu", options)
    return keyframes, motion, tmp_path_factory.mktemp("tiny-real-gate")


@pytest.mark.parametrize("label", FAILURE_LABELS)
def test_each_label_reaches_the_tiny_real_renderers(tiny_real, label):
    """The tiny real models' clips fail the technical check (random weights), so the critic's verdict is
    set directly here: what is under test is that the revision reaches the real renderers."""
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline.gate import Attempt, ShotState, render_round, revise_failures

    keyframes, motion, out = tiny_real
    plan = json.loads(small_plan(1))
    plan.update(width=256, height=256)
    reel = direct(preview_handles()["llm"], DirectorRequest("test", duration_s=1.0, shots=1), out,
                  run_id="tiny-real-labels", plan_override=json.dumps(plan))
    reel = animate(render_keyframes(reel, keyframes), motion)  # made once, reused by every label
    RecordingKeyframes.calls, RecordingMotion.calls = [], []
    shot = reel.plan.shots[0]
    state = ShotState(shot, [Attempt(1, shot, f"keyframe:{shot.id}", clip=f"clip:{shot.id}", critique=fail(label))])
    revise_failures(reel, [state])
    render_round(reel, [state], keyframes, motion, "ultrafast")
    (motion_call,) = RecordingMotion.calls
    assert EXPECTED[label](motion_call), motion_call
    assert motion_call["seed_arg"] == attempt_seed(100, 2)
    if label in IMAGE_LABELS:
        (keyframe_call,) = RecordingKeyframes.calls
        assert EXPECTED[label](keyframe_call)
    else:
        assert RecordingKeyframes.calls == []


def test_the_gate_node_shows_scores_once_and_the_critic_s_failure_as_a_warning(make_reel):
    """The node's board has one row per shot; its text panel the gate as a whole, and the warning of a critic
    that could not answer (not the per-shot lines again)."""
    from cinereel.nodes.gate import CriticGateNode

    def script(prompt, seen):
        if prompt.startswith("shot 2:"):
            raise RuntimeError("the critic server went away")
        return PASS

    ScriptedCritic.script = staticmethod(script)
    try:
        reel = make_reel(2)
        result = CriticGateNode().gate(reel, CRITIC, KEYFRAMES, MOTION, 7.0, 1, False)
    finally:
        ScriptedCritic.script = staticmethod(lambda prompt, seen: PASS)
    board, text = result["ui"]["cinereel_scores"], result["ui"]["text"]
    assert [row["shot"] for row in board] == ["shot_01", "shot_02"] and board[1]["reason"] == "critic_unavailable"
    assert text[0].endswith("1 shot(s) flagged (best attempt kept)") and not any("shot_01" in line for line in text)
    (warning,) = [line for line in text if line.startswith("⚠ ")]
    assert "shot_02: critic_unavailable" in warning and warning[2:] in result["result"][0].notes["warnings"]
