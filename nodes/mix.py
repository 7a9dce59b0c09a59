"""The Mix & Master node: narration over the ducked music, mastered to a loudness target (``pipeline/mix.py``)."""

from __future__ import annotations

from typing import Any

from .base import ReelNode, number, reel_input, stage_done
from .pipeline.mix import MAX_CEILING_DBTP, MAX_TARGET_LUFS, MIN_CEILING_DBTP, MIN_TARGET_LUFS, mix_stage


class MixNode(ReelNode):
    DESCRIPTION = ("Mixes the narration over the music bed, ducking the music under speech, and masters the sum to "
                   "an integrated loudness target (-18 LUFS default) with true peak under a ceiling (-1 dBTP), "
                   "measured per ITU-R BS.1770-4. Writes audio/mix.wav (48 kHz stereo).")
    OUTPUT_TOOLTIPS = ("The REEL with audio/mix.wav; connect it to the Assemble node.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL after Narrate and Score Music."),
            "target_lufs": number("Integrated loudness of the master in LUFS. -18 suits most players; -14 is common "
                                  "for social platforms, -23 for EBU R128 broadcast.", -18.0, MIN_TARGET_LUFS,
                                  MAX_TARGET_LUFS, 0.5),
            "true_peak_dbtp": number("Highest allowed true peak (4x oversampled) in dBTP.", -1.0, MIN_CEILING_DBTP,
                                     MAX_CEILING_DBTP, 0.1),
            "music_level_db": number("Music loudness under the narration, relative to the narration, in dB.",
                                     -14.0, -40.0, 0.0, 0.5),
            "duck_db": number("How far the music dips while someone speaks, in dB (0: no ducking).",
                              -12.0, -40.0, 0.0, 0.5),
        }}

    def mix(self, reel: Any, target_lufs: float, true_peak_dbtp: float, music_level_db: float,
            duck_db: float) -> tuple | dict:
        out = mix_stage(reel, float(target_lufs), float(true_peak_dbtp), float(music_level_db), float(duck_db))
        return stage_done(out, "mix", reel)


NODES = {"CineReelMix": (MixNode, "CineReel Mix & Master")}
