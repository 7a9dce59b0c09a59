"""The Score Music node: an instrumental bed as long as the reel (``pipeline/music.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import MUSIC_MODEL, ReelNode, number, reel_input, stage_done
from .pipeline.music import score_music

if TYPE_CHECKING:
    from .pipeline.reel import Reel


class ScoreMusicNode(ReelNode):
    DESCRIPTION = "Scores an instrumental music bed as long as the reel, following the plan's mood and pacing."
    OUTPUT_TOOLTIPS = ("The REEL with audio/music.wav; connect it to the Mix node.",)
    FUNCTION = "score"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the Director (or any later stage)."),
            "music_model": (MUSIC_MODEL, {"tooltip": "From a CineReel Music Loader."}),
            "tempo_bpm": number("Tempo in beats per minute; 0 picks one from the plan's mood.", 0.0, 0.0, 200.0, 1.0),
        }}

    def score(self, reel: Reel, music_model: ModelHandle, tempo_bpm: float) -> tuple | dict:
        tempo = float(tempo_bpm)
        if 0 < tempo < 40:
            raise ValueError(f"tempo_bpm {tempo:g} is too slow for a pulse; use 40-200, or 0 for automatic")
        out = score_music(reel, music_model, tempo or None)
        return stage_done(out, "music", reel)


NODES = {"CineReelScoreMusic": (ScoreMusicNode, "CineReel Score Music")}
