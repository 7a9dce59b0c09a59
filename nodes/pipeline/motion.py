"""Motion stage: every keyframe becomes a clip, all under one residency of the motion model.

Each clip has one frame more than its shot needs (81 frames for 5 s at 16 fps,
the 4k+1 length Wan2.2 renders); assembly takes exactly the shot's frames so
shots butt together. Every attempt's clip is kept: ``clips/<shot>.attempt<k>.mp4``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .comfy import Progress, check_cancel
from .rundir import atomic_write_text
from .stage import (
    Job,
    StageTimer,
    add_warning,
    artifact_key,
    call_record,
    cores_per_job,
    pending_items,
    record_call,
    run_jobs,
    step_callback,
    write_report,
)

if TYPE_CHECKING:
    from ...model_loaders.vocabulary.plan import Plan, Shot
    from .reel import Reel

CLIP_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def shot_frame_spans(plan: Plan) -> list[tuple[int, int]]:
    """(first frame, frame count) of each shot in the reel, rounded cumulatively so they add up exactly."""
    spans, start_s = [], 0.0
    for shot in plan.shots:
        first = round(start_s * plan.fps)
        start_s += shot.duration_s
        spans.append((first, round(start_s * plan.fps) - first))
    return spans


def clip_frames(plan: Plan, shot: Shot) -> int:
    spans = dict(zip((s.id for s in plan.shots), shot_frame_spans(plan)))
    return spans[shot.id][1] + 1


def clip_job(reel: Reel, shot: Shot, handle: ModelHandle, attempt: int = 1, preset: str = "ultrafast",
             keyframe_name: str | None = None) -> Job:
    from ...model_loaders.vocabulary.plan import shot_render_fields
    from ...model_loaders.wan import lora_files

    plan = reel.plan
    keyframe_name = keyframe_name or f"keyframe:{shot.id}"
    keyframe_path = reel.artifact_path(keyframe_name)
    num_frames = clip_frames(plan, shot)
    inputs = {"shot": shot_render_fields(shot), "keyframe": artifact_key(reel, keyframe_name), "frames": num_frames,
              "fps": plan.fps, "model": handle.key, "attempt": attempt, "preset": preset}
    loras = lora_files(handle)
    if loras:  # only with LoRAs, so clips made without them keep their keys
        inputs["lora_files"] = loras

    rel = f"clips/{shot.id}.attempt{attempt}.mp4"
    qc_path = reel.run_dir.path(qc_rel(rel))

    def make(model: Any, tmp: Path) -> None:
        from PIL import Image

        from .video import encode_still, write_clip

        shot_data, plan_data = shot.model_dump(mode="json"), plan.model_dump(mode="json")
        watch = NonFiniteWatch()
        with Image.open(keyframe_path) as img:
            camera_filter = getattr(model, "camera_filter", None)
            if camera_filter is not None:  # the backend moves the camera inside ffmpeg (preview.py)
                encode_still(keyframe_path, camera_filter(img.size, shot_data, plan_data, num_frames, shot.seed),
                             num_frames, plan.fps, tmp, preset=preset, on_frame=step_callback(),
                             threads=cores_per_job())
            else:
                frames = model.render_clip(img.convert("RGB"), shot_data, plan_data, num_frames, shot.seed,
                                           callback=step_callback())
                write_clip(watch.frames(frames), plan.fps, tmp, preset=preset)
        record_call(reel.run_dir, rel, model, handle)
        check_cancel()
        atomic_write_text(qc_path, json.dumps({"technical": watch.problems(), "nonfinite_frames": watch.count}))

    return Job(f"clip:{shot.id}", rel, inputs, make)


def encode_prompts(model: Any, shots: Sequence[Shot]) -> None:
    """Let a model that can (``encode_prompts``: Wan2.2) encode the prompts of the shots about to render
    once, before their clips, instead of once per clip with its text encoder resident."""
    encode = getattr(model, "encode_prompts", None)
    if encode is not None and shots:
        encode([shot.model_dump(mode="json") for shot in shots])


def qc_rel(clip_rel: str) -> str:
    """Where a clip's render-time findings go: what the MP4 cannot show (NaN frames become black)."""
    return clip_rel[: -len(".mp4")] + ".qc.json"


class NonFiniteWatch:
    """Counts frames with NaN or infinite values on their way to the encoder (a numerical render failure)."""

    def __init__(self) -> None:
        self.count = 0

    def frames(self, frames: Any) -> Any:
        import numpy as np

        for frame in frames:
            frame = np.asarray(frame)
            if np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
                self.count += 1
            yield frame

    def problems(self) -> list[str]:
        return ["nan_or_inf"] if self.count else []


def animate(reel: Reel, handle: ModelHandle, preset: str = "ultrafast", progress: Progress | None = None) -> Reel:
    from ...model_loaders.wan import speed_warning
    from .contact_sheet import refresh_contact_sheet
    from .locks import locked_reuse

    timer = StageTimer("motion")
    jobs = [clip_job(reel, shot, handle, preset=preset) for shot in reel.plan.shots]
    progress = progress or Progress(len(jobs))
    to_make, locked = locked_reuse(reel, jobs)  # a locked shot keeps the clip the run last kept for it
    if locked:
        progress.update(len(locked))
    by_job = {f"clip:{shot.id}": shot for shot in reel.plan.shots}
    made, count = run_jobs(reel.run_dir, handle.as_role("motion"), to_make, progress,
                           prepare=lambda model, pending: encode_prompts(model, pending_items(by_job, pending)))
    made = {**made, **locked}
    out = reel.evolve(artifacts=made)
    renders = {shot.id: call_record(reel.run_dir, made[f"clip:{shot.id}"]) for shot in reel.plan.shots}
    notes = timer.notes(out, clips_made=count, clip_renders=renders)
    warning = speed_warning(handle)
    if warning:  # printed by the CLI, shown on the Animate node
        notes["warnings"] = add_warning(out, warning)
    out = out.evolve(notes=notes)
    write_report(out)
    refresh_contact_sheet(out)
    return out
