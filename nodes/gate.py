"""The Critic Gate node: score every clip, re-render the failures (``pipeline/gate.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import KEYFRAME_MODEL, LLM, MOTION_MODEL, ReelNode, integer, number, reel_input, toggle
from .pipeline.gate import DEFAULT_CRITIC_FRAMES, DEFAULT_THRESHOLD, MAX_RETRIES, run_gate, score_rows, summary_text

if TYPE_CHECKING:
    from .pipeline.reel import Reel


class CriticGateNode(ReelNode):
    DESCRIPTION = ("Scores every clip (a cheap technical check, then the critic) and re-renders the ones below the "
                   "threshold with a concrete fix for their failure label, in batched rounds. Every attempt is kept; "
                   "a shot that never passes keeps its best attempt and is flagged in the report.")
    OUTPUT_TOOLTIPS = ("The REEL with the chosen attempt of every shot; connect it to Narrate or Assemble.",)
    FUNCTION = "gate"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Animate node."),
            "critic": (LLM, {"tooltip": "The critic model from a CineReel LLM Loader (the director's checkpoint "
                                        "in its vision role: no second load)."}),
            "keyframe_model": (KEYFRAME_MODEL, {"tooltip": "Re-draws keyframes for image failures."}),
            "motion_model": (MOTION_MODEL, {"tooltip": "Re-animates clips for every failure."}),
            "threshold": number("A clip passes when the mean of its four scores (1-10) reaches this.",
                                DEFAULT_THRESHOLD, 1.0, 10.0, 0.1),
            "max_retries": integer("Re-renders allowed per shot after the first attempt.", 3, 0, MAX_RETRIES),
            "strict": toggle("On: stop the run with an error naming the shots that never passed. Off: keep each "
                             "such shot's best attempt and flag it in the report.", False),
        }, "optional": {
            "critic_frames": integer("Frames sampled from each clip for the critic to look at.",
                                     DEFAULT_CRITIC_FRAMES, 2, 32),
            "technical_check": toggle("On: clips with black, blank, frozen or flickering frames fail at once, "
                                      "without a critic call. Off: the critic judges them too (turn off when a "
                                      "deliberately dark or still shot keeps failing). Frames with NaN values "
                                      "always fail.", True),
        }}

    def gate(self, reel: Reel, critic: ModelHandle, keyframe_model: ModelHandle, motion_model: ModelHandle,
             threshold: float, max_retries: int, strict: bool, critic_frames: int = DEFAULT_CRITIC_FRAMES,
             technical_check: bool = True) -> dict:
        from .pipeline.board import attempt_rows

        out = run_gate(reel, critic, keyframe_model, motion_model, threshold, max_retries, strict, critic_frames,
                       technical_gate=technical_check)
        gate = out.notes["gate"]
        earlier = set(reel.notes.get("warnings", []))
        warnings = [f"⚠ {w}" for w in out.notes.get("warnings", []) if w not in earlier]  # a critic that failed
        return {"ui": {"cinereel_scores": score_rows(gate), "cinereel_attempts": attempt_rows(out, gate),
                       "text": summary_text(gate) + warnings},
                "result": (out,)}


NODES = {"CineReelCriticGate": (CriticGateNode, "CineReel Critic Gate")}
