"""The Keyframes node: a master portrait per character, a keyframe per shot (``pipeline/keyframes.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import KEYFRAME_MODEL, ReelNode, reel_input, stage_done
from .pipeline.keyframes import render_keyframes

if TYPE_CHECKING:
    from .pipeline.reel import Reel


class KeyframesNode(ReelNode):
    DESCRIPTION = ("Draws a master portrait of each character, then one keyframe per shot that references the "
                   "portraits of the characters in it. All under one load of the keyframe model.")
    OUTPUT_TOOLTIPS = ("The REEL with portraits and keyframes; connect it to the Animate node.",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Director."),
            "keyframe_model": (KEYFRAME_MODEL, {"tooltip": "From a CineReel Keyframe Model Loader."}),
        }}

    def render(self, reel: Reel, keyframe_model: ModelHandle) -> tuple | dict:
        out = render_keyframes(reel, keyframe_model)
        return stage_done(out, "keyframes", reel)


NODES = {"CineReelKeyframes": (KeyframesNode, "CineReel Keyframes")}
