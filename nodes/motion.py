"""The Animate node: a clip per shot under one load of the motion model (``pipeline/motion.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import MOTION_MODEL, ReelNode, choice, reel_input, stage_done
from .pipeline.motion import CLIP_PRESETS, animate

if TYPE_CHECKING:
    from .pipeline.reel import Reel


class AnimateNode(ReelNode):
    DESCRIPTION = ("Animates every keyframe into a clip (81 frames at 16 fps for a 5-second shot), all under one "
                   "load of the motion model. Clips are kept as clips/<shot>.attempt<k>.mp4.")
    OUTPUT_TOOLTIPS = ("The REEL with one clip per shot; connect it to the Critic Gate or Assemble node.",)
    FUNCTION = "animate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Keyframes node."),
            "motion_model": (MOTION_MODEL, {"tooltip": "From a CineReel Motion Model Loader."}),
            "clip_preset": choice(CLIP_PRESETS, "x264 speed preset for the per-shot clips (CRF 18). The final reel is "
                                  "re-encoded by the Assemble node, so the fastest is fine here (as faithful, larger files)."),
        }}

    def animate(self, reel: Reel, motion_model: ModelHandle, clip_preset: str) -> tuple | dict:
        out = animate(reel, motion_model, clip_preset)
        return stage_done(out, "motion", reel)


NODES = {"CineReelAnimate": (AnimateNode, "CineReel Animate")}
