"""The Narrate node: each shot's line in the plan's language, placed at its shot's start (``pipeline/voice.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import VOICE_MODEL, ReelNode, number, reel_input, stage_done, text
from .pipeline.voice import narrate

if TYPE_CHECKING:
    from .pipeline.reel import Reel


class NarrateNode(ReelNode):
    DESCRIPTION = ("Speaks each shot's narration in the plan's language and places it at the shot's start plus a "
                   "short lead-in. Lines too long for their shot are sped up gently or given room; never cut.")
    OUTPUT_TOOLTIPS = ("The REEL with audio/narration.wav; connect it to the Mix node.",)
    FUNCTION = "narrate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the Director (or any later stage)."),
            "voice_model": (VOICE_MODEL, {"tooltip": "From a CineReel Voice Loader."}),
            "lead_in_s": number("Silence at the start of each shot before its line begins, in seconds.",
                                0.25, 0.0, 2.0, 0.05),
        }, "optional": {
            "voice": text("Voice name for the engine (blank: the default voice for the plan's language)."),
        }}

    def narrate(self, reel: Reel, voice_model: ModelHandle, lead_in_s: float, voice: str = "") -> tuple | dict:
        out = narrate(reel, voice_model, voice.strip(), float(lead_in_s))
        return stage_done(out, "narration", reel)


NODES = {"CineReelNarrate": (NarrateNode, "CineReel Narrate")}
