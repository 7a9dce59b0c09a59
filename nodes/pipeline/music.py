"""Music stage: an instrumental bed for the whole reel from the plan's mood and pacing, or the user's own
(``user_media.py``: already fitted to the reel by CineReel Audio to Music; nothing is composed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .comfy import Progress
from .stage import Job, StageTimer, run_jobs, step_callback, write_report

if TYPE_CHECKING:
    from .reel import Reel

SAMPLE_RATE = 48000


def music_job(reel: Reel, handle: ModelHandle, tempo_bpm: float | None) -> Job:
    plan = reel.plan
    seed = plan.whole_reel_seed
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
    from .user_media import check_duration, user_job

    timer = StageTimer("music")
    given = user_job(reel, "music")
    if given is not None:  # the user's own bed (CineReel Audio to Music): nothing composed, no model loaded
        check_duration(reel, given)
        made, _ = run_jobs(reel.run_dir, None, [given], progress or Progress(1))
        music = {"engine": "user audio", "source": reel.notes["user_media"]["music"]["from"]}
    else:
        made, _ = run_jobs(reel.run_dir, handle.as_role("music"), [music_job(reel, handle, tempo_bpm)],
                           progress or Progress(1))
        engine = {"preview-music": "synth"}.get(handle.family, handle.family)  # others are named by their family
        music = {"engine": engine, "tempo_bpm": tempo_bpm or "from mood"}
    out = reel.evolve(artifacts=made)
    out = out.evolve(notes=timer.notes(out, music=music))
    write_report(out)
    return out
