"""Assemble stage: every shot's chosen clip cut together over the mix, reel.mp4 and reel.srt (see ``video.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import ReelNode, choice, integer, reel_input
from .comfy import Progress, output_root, send_ui_event
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


def assemble_stage(reel: Any, crf: int = 18, preset: str = COPY, progress: Progress | None = None) -> Any:
    """Cut the chosen clip of every shot together over the mastered mix: reel.mp4 and reel.srt."""
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
    return out


def ui_video(reel: Any) -> dict[str, Any] | None:
    """Where ComfyUI's /view serves reel.mp4 from, when the run lives under its output folder."""
    path = reel.artifact_path("reel")
    try:
        sub = path.parent.relative_to(output_root())
    except ValueError:
        return None
    return {"filename": path.name, "subfolder": sub.as_posix(), "type": "output", "format": "video/mp4"}


class AssembleNode(ReelNode):
    DESCRIPTION = ("Cuts every shot's chosen clip together over the mastered mix into reel.mp4 (H.264 yuv420p, "
                   "CRF 18, AAC 48 kHz, +faststart) with reel.srt beside it, and plays the reel in the node.")
    OUTPUT_TOOLTIPS = ("The finished REEL; REEL to Video gives ComfyUI's VIDEO for core video nodes.",)
    FUNCTION = "assemble"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL after Animate (or the Critic Gate) and Mix."),
            "crf": integer("x264 quality: lower is better and bigger. 18 is visually lossless.", 18, 0, 51),
            "preset": choice(REEL_PRESETS, "copy: join the clips without re-encoding (no quality loss, seconds, a "
                             "larger file). An x264 preset re-encodes at the crf: slower presets make smaller files "
                             "at the same quality; veryfast is within a few percent of medium's size."),
        }}

    def assemble(self, reel: Any, crf: int, preset: str) -> dict[str, Any]:
        out = assemble_stage(reel, int(crf), preset)
        delivery = out.notes["delivery"]
        summary = (f"{out.artifact_path('reel')}  {delivery['width']}x{delivery['height']}  "
                   f"{delivery['duration']:.2f} s  {delivery['video_codec']}+{delivery['audio_codec']}")
        ui: dict[str, Any] = {"text": [summary]}
        video = ui_video(out)
        if video:
            ui["cinereel_video"] = [video]
        send_ui_event("cinereel.stage", {"run_id": out.run_id, "stage": "assemble"})
        return {"ui": ui, "result": (out,)}


NODES = {"CineReelAssemble": (AssembleNode, "CineReel Assemble")}
