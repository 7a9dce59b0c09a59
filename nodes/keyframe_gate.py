"""The Keyframe Gate node: the critic judges every keyframe before motion (``pipeline/keyframe_gate.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import KEYFRAME_MODEL, LLM, ReelNode, choice, integer, number, reel_input
from .pipeline.gate import DEFAULT_THRESHOLD, MAX_RETRIES
from .pipeline.keyframe_gate import board_rows, real_critic, run_keyframe_gate, summary_text

if TYPE_CHECKING:
    from .pipeline.reel import Reel

MODES = ("auto (on with a real critic)", "on", "off")


class KeyframeGateNode(ReelNode):
    DESCRIPTION = ("Before any clip is animated, the critic judges every keyframe against its characters' portraits "
                   "(the same four scores) and the keyframe model redraws the ones that fail on an image label "
                   "(drift, extras, wardrobe, hands, neon, a stylised look, intimacy) with that label's fix, in "
                   "batched rounds. A redrawn keyframe costs seconds; the same fault found on the clip costs a "
                   "motion render.")
    OUTPUT_TOOLTIPS = ("The REEL with each shot's chosen keyframe; connect it to the Animate node.",)
    FUNCTION = "gate"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Keyframes node."),
            "critic": (LLM, {"tooltip": "The critic model from a CineReel LLM Loader (the director's checkpoint "
                                        "in its vision role: no second load)."}),
            "keyframe_model": (KEYFRAME_MODEL, {"tooltip": "Redraws the keyframes that fail (the Keyframes "
                                                           "node's model)."}),
            "mode": choice(MODES, "auto: judge keyframes when the critic is a real model; the preview critic (a "
                                  "technical check) sees no image label, so the REEL passes through unchanged. on: "
                                  "always judge. off: pass through."),
            "threshold": number("A keyframe fails when the mean of its four scores (1-10) is below this and its "
                                "label is an image label. Use the Critic Gate's threshold.",
                                DEFAULT_THRESHOLD, 1.0, 10.0, 0.1),
            "max_retries": integer("Redraws allowed per keyframe after the first.", 3, 0, MAX_RETRIES),
        }}

    def gate(self, reel: Reel, critic: ModelHandle, keyframe_model: ModelHandle, mode: str, threshold: float,
             max_retries: int) -> dict:
        if mode == "off" or (mode == MODES[0] and not real_critic(critic)):
            why = "off" if mode == "off" else "the preview critic judges no image labels (set mode to on to run it)"
            return {"ui": {"text": [f"keyframes passed through unjudged: {why}"]}, "result": (reel,)}
        out = run_keyframe_gate(reel, critic, keyframe_model, threshold, max_retries)
        section = out.notes["keyframe_gate"]
        earlier = set(reel.notes.get("warnings", []))
        warnings = [f"⚠ {w}" for w in out.notes.get("warnings", []) if w not in earlier]
        return {"ui": {"cinereel_scores": board_rows(section), "text": summary_text(section) + warnings},
                "result": (out,)}


NODES = {"CineReelKeyframeGate": (KeyframeGateNode, "CineReel Keyframe Gate")}
