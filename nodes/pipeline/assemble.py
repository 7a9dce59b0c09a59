"""Assemble stage: every shot's chosen clip cut together over the mix, reel.mp4 and reel.srt (see ``video.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .comfy import Progress, output_root
from .stage import Job, StageTimer, artifact_key, run_jobs, write_report

COPY = "copy"  # join the clips as they are (video.assemble_reel)

REEL_PRESETS = (COPY, "veryfast", "superfast", "ultrafast", "faster", "fast", "medium", "slow")
MIN_CUE_S = 1.0


def subtitle_cues(placements: Sequence[dict[str, Any]], total_s: float) -> list[tuple[float, float, str]]:
    """One cue per spoken line, from when it starts to a moment after it ends, never overlapping the next."""
    lines = sorted((p for p in placements if p.get("text", "").strip()), key=lambda p: p["start_s"])
    cues = []
    for i, line in enumerate(lines):
        limit = lines[i + 1]["start_s"] if i + 1 < len(lines) else total_s
        end = min(max(line["end_s"] + 0.3, line["start_s"] + MIN_CUE_S), limit)
        cues.append((line["start_s"], max(end, line["start_s"] + 0.1), line["text"]))
    return cues


def _frame_counts(plan: Any) -> list[int]:
    from .motion import shot_frame_spans

    return [n for _, n in shot_frame_spans(plan)]


def delivery_audio_job(reel: Any) -> Job:
    """The mix (or silence) as the reel's AAC track, at the reel's exact length: the assembly copies it. Its
    inputs say everything it is made from, so the headless runner's sound branch can make it early and the
    assembly then finds it current."""
    from .video import AUDIO_BITRATE, AUDIO_RATE

    plan = reel.plan
    total_samples = round(sum(_frame_counts(plan)) * AUDIO_RATE / plan.fps)
    audio = "mix" if "mix" in reel.artifacts else None
    inputs = {"audio": artifact_key(reel, audio) if audio else None, "samples": total_samples,
              "codec": ["aac", AUDIO_BITRATE, AUDIO_RATE, 2]}

    def make(_model: Any, tmp: Path) -> None:
        from .video import encode_delivery_audio

        encode_delivery_audio(reel.artifact_path(audio) if audio else None, tmp, total_samples)

    return Job("delivery_audio", "audio/delivery.m4a", inputs, make)


def encode_reel_audio(reel: Any, progress: Progress | None = None) -> Any:
    """Make the assembly's AAC track now (the headless runner does it beside the picture stages)."""
    timer = StageTimer("delivery_audio")
    made, _ = run_jobs(reel.run_dir, None, [delivery_audio_job(reel)], progress or Progress(1))
    out = reel.evolve(artifacts=made)
    out = out.evolve(notes=timer.notes(out))
    write_report(out)
    return out


def _clip_names(plan: Any) -> list[str]:
    return [f"clip:{shot.id}" for shot in plan.shots]


def read_clips_ahead(reel: Any) -> None:
    """Read the clips' formats and frame counts now, for the assembly to find (``video.probe_videos`` keeps
    them): the headless runner does it while the sound branch finishes, a tenth of a second the assembly
    spent after the two branches joined. A clip that cannot be read is left to the assembly to report."""
    from .video import FFmpegError, probe_videos

    try:
        probe_videos([reel.artifact_path(name) for name in _clip_names(reel.plan)])
    except (OSError, KeyError, FFmpegError):
        pass


def reel_jobs(reel: Any, crf: int, preset: str) -> list[Job]:
    plan = reel.plan
    clips = _clip_names(plan)
    counts = _frame_counts(plan)
    sound = delivery_audio_job(reel)
    inputs = {"clips": [artifact_key(reel, c) for c in clips], "frames": counts, "fps": plan.fps,
              "audio": sound.inputs, "crf": crf, "preset": preset}

    def make_video(_model: Any, tmp: Path) -> None:
        from .video import assemble_reel

        assemble_reel([reel.artifact_path(c) for c in clips], counts, plan.fps, None, tmp, crf, preset,
                      encoded_audio=reel.run_dir.path(sound.rel))

    placements = list(reel.notes.get("narration", {}).get("lines", []))

    def make_srt(_model: Any, tmp: Path) -> None:
        from .video import write_srt

        write_srt(subtitle_cues(placements, plan.duration_s), tmp)

    jobs = [sound, Job("reel", "reel.mp4", inputs, make_video)]
    if any(p.get("text", "").strip() for p in placements):
        jobs.append(Job("subtitles", "reel.srt", {"placements": placements}, make_srt))
    return jobs


def assemble_stage(reel: Any, crf: int = 18, preset: str = COPY, progress: Progress | None = None,
                   keep: str = "all") -> Any:
    """Cut the chosen clip of every shot together over the mastered mix: reel.mp4 and reel.srt; then, the reel
    made, remove what ``keep`` (``retention.py``) does not keep."""
    from .retention import apply_keep, check_keep

    check_keep(keep)
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be from 0 (lossless) to 51, got {crf}")
    if preset not in REEL_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(REEL_PRESETS)}, got {preset!r}")
    timer = StageTimer("assemble")
    jobs = reel_jobs(reel, int(crf), preset)
    made, _ = run_jobs(reel.run_dir, None, jobs, progress or Progress(len(jobs)))
    out = reel.evolve(artifacts=made)
    from .video import probe

    out = out.evolve(notes=timer.notes(out, delivery=probe(out.artifact_path("reel"))))
    write_report(out)
    from .contact_sheet import refresh_contact_sheet

    refresh_contact_sheet(out)  # before keep: the sheet shows the attempts that keep may remove
    if keep != "all":
        out = apply_keep(out, keep)
        write_report(out)
    return out


def ui_video(reel: Any) -> dict[str, Any] | None:
    """Where ComfyUI's /view serves reel.mp4 from, when the run lives under its output folder."""
    path = reel.artifact_path("reel")
    try:
        sub = path.parent.relative_to(output_root())
    except ValueError:
        return None
    return {"filename": path.name, "subfolder": sub.as_posix(), "type": "output", "format": "video/mp4"}
