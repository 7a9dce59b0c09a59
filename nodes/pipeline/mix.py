"""Mix stage: narration over the ducked music bed, mastered to a loudness target (see ``audio.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .comfy import Progress
from .stage import Job, StageTimer, artifact_key, run_jobs, write_report

# The limits of the target widgets (audio.py holds the same numbers; it is imported only when mixing).
MIN_TARGET_LUFS, MAX_TARGET_LUFS = -40.0, -5.0
MIN_CEILING_DBTP, MAX_CEILING_DBTP = -20.0, 0.0

MIX_SAMPLE_RATE = 48000


def _read_audio(path: Path) -> Any:
    import soundfile

    from ...model_loaders.sampling import resample

    audio, sr = soundfile.read(path, dtype="float32", always_2d=False)
    return resample(audio, sr, MIX_SAMPLE_RATE) if sr != MIX_SAMPLE_RATE else audio


def mix_job(reel: Any, target_lufs: float, true_peak: float, music_level_db: float, duck_db: float) -> Job:
    from .audio import _check_master_targets

    _check_master_targets(target_lufs, true_peak)
    sources = [name for name in ("narration", "music") if name in reel.artifacts]
    if "music" not in sources and "narration" not in sources:
        raise ValueError("nothing to mix: connect the Narrate and/or Score Music nodes before Mix")
    inputs = {"sources": {name: artifact_key(reel, name) for name in sources}, "target_lufs": target_lufs,
              "true_peak": true_peak, "music_level_db": music_level_db, "duck_db": duck_db,
              "duration_s": reel.plan.duration_s}
    report_path = reel.run_dir.path("audio/mix.json")

    def make(_model: Any, tmp: Path) -> None:
        import json

        import numpy as np
        import soundfile

        from .audio import mix_reel
        from .rundir import atomic_write

        n = round(reel.plan.duration_s * MIX_SAMPLE_RATE)
        speech = _read_audio(reel.artifact_path("narration")) if "narration" in sources else np.zeros(n, np.float32)
        music = _read_audio(reel.artifact_path("music")) if "music" in sources else np.zeros((n, 2), np.float32)
        mixed, report = mix_reel(speech, music, MIX_SAMPLE_RATE, target_lufs, music_level_db, duck_db, true_peak)
        soundfile.write(tmp, mixed, MIX_SAMPLE_RATE, subtype="PCM_24", format="WAV")
        atomic_write(report_path, lambda t: t.write_text(json.dumps(report, indent=2), encoding="utf-8"))

    return Job("mix", "audio/mix.wav", inputs, make)


def mix_stage(reel: Any, target_lufs: float = -18.0, true_peak_dbtp: float = -1.0, music_level_db: float = -14.0,
              duck_db: float = -12.0, progress: Progress | None = None) -> Any:
    """Narration over the ducked music bed, mastered to ``target_lufs`` with true peak <= ``true_peak_dbtp``."""
    import json

    timer = StageTimer("mix")
    job = mix_job(reel, target_lufs, true_peak_dbtp, music_level_db, duck_db)
    made, _ = run_jobs(reel.run_dir, None, [job], progress or Progress(1))
    report = json.loads(reel.run_dir.path("audio/mix.json").read_text(encoding="utf-8"))
    out = reel.evolve(artifacts=made)
    out = out.evolve(notes=timer.notes(out, mix={**report, "target_lufs": target_lufs,
                                                 "true_peak_ceiling_dbtp": true_peak_dbtp}))
    write_report(out)
    return out
