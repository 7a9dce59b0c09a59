"""Scripted critic and recording keyframe/motion backends for the gate tests (test_gate, test_keyframe_gate,
test_shot_editing), loaded with ``load_test_module("scripted_backends")``.

A test module subclasses these with lists of its own (``calls = []``) and registers the subclasses under family
names of its own (``register``): the records and scripts live on each subclass, so one module's tests never see
another's in the same process.
"""

from __future__ import annotations

from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.preview import KenBurnsMotion, StoryboardKeyframes
from cinereel.model_loaders.residency import register_family

AXES = ("composition", "motion_coherence", "character_consistency", "lighting_fidelity")
PASS = {"scores": dict.fromkeys(AXES, 9), "label": None}


def fail(label: str | None) -> dict:
    return {"scores": dict.fromkeys(AXES, 3), "label": label}


def shot_of(prompt: str) -> str:
    """``"shot N"``: the test plans' prompts start "shot N:" and the gate's fixes append to them."""
    return prompt.split(":")[0]


class ScriptedCritic:
    """Answers from a script: script(prompt, seen) -> critique, where ``seen`` counts the critiques of the
    prompt's shot so far, this one included. Every prompt judged is recorded in ``calls``."""

    script: staticmethod
    calls: list[str]

    def critique(self, frames, portraits, prompt):
        records = type(self)
        records.calls.append(prompt)
        return records.script(prompt, sum(shot_of(p) == shot_of(prompt) for p in records.calls))


class RecordingKeyframes(StoryboardKeyframes):
    """Storyboard keyframes that record the shot dict of every keyframe drawn in ``calls``."""

    calls: list[dict]

    def render_keyframe(self, shot, plan, portraits, seed, callback=None):
        type(self).calls.append(dict(shot))
        return super().render_keyframe(shot, plan, portraits, seed, callback)


class RecordingMotion(KenBurnsMotion):
    """Ken Burns motion that records every clip's shot dict, with the seed it was called with as ``seed_arg``."""

    camera_filter = None  # the stage draws the frames with render_clip, which this test alters or counts
    calls: list[dict]

    def render_clip(self, keyframe, shot, plan, num_frames, seed, callback=None):
        type(self).calls.append({**shot, "seed_arg": seed})
        return super().render_clip(keyframe, shot, plan, num_frames, seed, callback)


def register(family: str, backend: type, checkpoint: str) -> ModelHandle:
    """Register ``backend`` as the model ``family`` loads and return a handle to it."""
    register_family(family, lambda handle: backend())
    return ModelHandle(family, checkpoint)


def shot_ids(calls: list[dict]) -> list[str]:
    return [call["id"] for call in calls]
