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


def reel_jobs(reel: Any, crf: int, preset: str) -> list[Job]:
    from .motion import shot_frame_spans

    plan = reel.plan
    clips = [f"clip:{shot.id}" for shot in plan.shots]
    counts = [n for _, n in shot_frame_spans(plan)]
    audio = "mix" if "mix" in reel.artifacts else None
    inputs = {"clips": [artifact_key(reel, c) for c in clips], "frames": counts, "fps": plan.fps,
              "audio": artifact_key(reel, audio) if audio else None, "crf": crf, "preset": preset}

    def make_video(_model: Any, tmp: Path) -> None:
        from .video import assemble_reel

        assemble_reel([reel.artifact_path(c) for c in clips], counts, plan.fps,
                      reel.artifact_path(audio) if audio else None, tmp, crf, preset)

    placements = list(reel.notes.get("narration", {}).get("lines", []))

    def make_srt(_model: Any, tmp: Path) -> None:
        from .video import write_srt

        write_srt(subtitle_cues(placements, plan.duration_s), tmp)

    jobs = [Job("reel", "reel.mp4", inputs, make_video)]
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
