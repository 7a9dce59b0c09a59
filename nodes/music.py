"""Music stage: an instrumental bed for the whole reel from the plan's mood and pacing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model_loaders.handles import ModelHandle
from .base import MUSIC_MODEL, ReelNode, number, reel_input, stage_done
from .comfy import Progress
from .stage import Job, StageTimer, run_jobs, step_callback, write_report

if TYPE_CHECKING:
    from .reel import Reel

SAMPLE_RATE = 48000


def music_job(reel: Reel, handle: ModelHandle, tempo_bpm: float | None) -> Job:
    plan = reel.plan
    seed = plan.shots[0].seed
    inputs = {"mood": plan.mood, "locale": plan.locale, "time_of_day": plan.time_of_day,
              "duration_s": plan.duration_s, "tempo": tempo_bpm, "seed": seed, "model": handle.key}

    def make(model: Any, tmp: Path) -> None:
        import soundfile as sf

        audio = model.compose(plan.model_dump(mode="json"), plan.duration_s, tempo_bpm, seed, SAMPLE_RATE,
                              callback=step_callback())
        sf.write(tmp, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")

    return Job("music", "audio/music.wav", inputs, make)


def score_music(reel: Reel, handle: ModelHandle, tempo_bpm: float | None = None,
                progress: Progress | None = None) -> Reel:
    timer = StageTimer("music")
    made, count = run_jobs(reel.run_dir, handle.as_role("music"), [music_job(reel, handle, tempo_bpm)],
                           progress or Progress(1))
    out = reel.evolve(artifacts=made)
    engine = {"preview-music": "synth"}.get(handle.family, handle.family)  # others are named by their family
    out = out.evolve(notes=timer.notes(out, music={"engine": engine, "tempo_bpm": tempo_bpm or "from mood"}))
    write_report(out)
    return out


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

    def score(self, reel: Reel, music_model: ModelHandle, tempo_bpm: float) -> tuple[Reel]:
        tempo = float(tempo_bpm)
        if 0 < tempo < 40:
            raise ValueError(f"tempo_bpm {tempo:g} is too slow for a pulse; use 40-200, or 0 for automatic")
        out = score_music(reel, music_model, tempo or None)
        return stage_done(out, "music")


NODES = {"CineReelScoreMusic": (ScoreMusicNode, "CineReel Score Music")}
