"""Keyframes stage: a master portrait per character, then one keyframe per shot.

Phase-major: every portrait and keyframe is drawn under one residency of the
keyframe model. Each keyframe is conditioned on the portraits of the
characters in its shot, so characters stay the same person across shots.
A portrait or keyframe the user gave (``user_media.py``) is used as it is and
not drawn; the report's ``portrait_sources`` and ``keyframe_sources`` say which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .comfy import Progress
from .rundir import RunDir
from .stage import (
    Job,
    StageTimer,
    call_record,
    pending_items,
    record_call,
    run_jobs,
    step_callback,
    write_report,
)

if TYPE_CHECKING:
    from ...model_loaders.vocabulary.plan import Plan, Shot
    from .reel import Reel


def _save_png(image: Any, tmp: Path) -> None:
    # zlib's fastest level: half the time of Pillow's default (6) to write, quicker for ffmpeg and the contact
    # sheet to read, for files about a fifth larger (ComfyUI's own SaveImage uses 4)
    image.save(tmp, format="PNG", compress_level=1)


def _load_image(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def cast(plan: Plan) -> list[str]:
    """Characters that appear in at least one shot, in plan order."""
    in_frame = {c for shot in plan.shots for c in shot.characters}
    return [c.id for c in plan.characters if c.id in in_frame]


def portrait_job(plan: Plan, char_id: str, handle: ModelHandle) -> Job:
    character = plan.character(char_id)
    seed = (plan.whole_reel_seed + sum(map(ord, char_id))) % 2**63
    inputs = {"character": character, "mood": plan.mood, "time_of_day": plan.time_of_day, "seed": seed,
              "model": handle.key, "size": [plan.width, plan.height]}

    def make(model: Any, tmp: Path) -> None:
        _save_png(model.render_portrait(character.model_dump(mode="json"), plan.model_dump(mode="json"), seed,
                                        callback=step_callback()), tmp)

    return Job(f"portrait:{char_id}", f"portraits/{char_id}.png", inputs, make)


def keyframe_job(plan: Plan, shot: Shot, portraits: dict[str, Job], run_root: Path, handle: ModelHandle,
                 attempt: int = 1, tag: str = "attempt") -> Job:
    """``keyframes/<shot>.png`` for attempt 1, else ``keyframes/<shot>.<tag><attempt>.png`` (the clip gate's
    ``attempt``, the keyframe gate's ``kfgate``: their redraws never share a file)."""
    from ...model_loaders.vocabulary.plan import shot_render_fields

    refs = {c: portraits[c] for c in shot.characters}
    inputs = {"shot": shot_render_fields(shot),
              "plan_look": [plan.mood, plan.time_of_day, plan.locale, plan.width, plan.height],
              "references": {c: job.key for c, job in refs.items()}, "model": handle.key}
    suffix = "" if attempt == 1 else f".{tag}{attempt}"

    rel = f"keyframes/{shot.id}{suffix}.png"

    def make(model: Any, tmp: Path) -> None:
        images = {c: _load_image(run_root / job.rel) for c, job in refs.items()}
        _save_png(model.render_keyframe(shot.model_dump(mode="json"), plan.model_dump(mode="json"), images,
                                        shot.seed, callback=step_callback()), tmp)
        record_call(RunDir(run_root), rel, model, handle)

    return Job(f"keyframe:{shot.id}", rel, inputs, make)


def encode_prompts(model: Any, plan: Plan, characters: Sequence[str], shots: Sequence[Shot]) -> None:
    """Let a model that can (``encode_prompts``: FLUX.2 klein) encode the prompts of the portraits and
    keyframes about to be drawn once, before the first, instead of once per picture with its text encoder
    resident."""
    encode = getattr(model, "encode_prompts", None)
    if encode is not None and (characters or shots):
        encode([plan.character(c).model_dump(mode="json") for c in characters],
               [shot.model_dump(mode="json") for shot in shots], plan.model_dump(mode="json"))


def portrait_jobs(reel: Reel, handle: ModelHandle) -> dict[str, Job]:
    """The portrait of each character in frame: the user's picture where one was given, else a render."""
    from .user_media import user_job

    return {c: user_job(reel, f"portrait:{c}") or portrait_job(reel.plan, c, handle) for c in cast(reel.plan)}


def render_keyframes(reel: Reel, handle: ModelHandle, progress: Progress | None = None) -> Reel:
    from .board import send_picture
    from .contact_sheet import refresh_contact_sheet
    from .locks import locked_reuse
    from .user_media import USER_FOLDER, user_job

    timer = StageTimer("keyframes")
    plan = reel.plan
    portraits = portrait_jobs(reel, handle)
    shots = [user_job(reel, f"keyframe:{shot.id}") or keyframe_job(plan, shot, portraits, reel.run_dir.root, handle)
             for shot in plan.shots]
    jobs = [*portraits.values(), *shots]
    given = {job.name for job in jobs if job.rel.startswith(USER_FOLDER)}
    progress = progress or Progress(len(jobs))
    to_draw, locked = locked_reuse(reel, [j for j in jobs if j.name not in given])  # locked shots keep theirs
    if locked:
        progress.update(len(locked))
    for name, rel in locked.items():
        send_picture(reel, "keyframe", name, rel)

    def ready(job: Job) -> None:
        send_picture(reel, job.name.split(":", 1)[0], job.name, job.rel)

    # The user's pictures were written by their adapter nodes: checked here without loading the model.
    made, _ = run_jobs(reel.run_dir, None, [j for j in jobs if j.name in given], progress, ready)
    character_of = {job.name: c for c, job in portraits.items()}
    shot_of = {f"keyframe:{shot.id}": shot for shot in plan.shots}
    drawn, count = run_jobs(reel.run_dir, handle.as_role("keyframes"), to_draw, progress, ready,
                            prepare=lambda model, pending: encode_prompts(
                                model, plan, pending_items(character_of, pending), pending_items(shot_of, pending)))
    out = reel.evolve(artifacts={**made, **drawn, **locked})
    renders = {shot.id: call_record(reel.run_dir, out.artifacts[f"keyframe:{shot.id}"]) for shot in plan.shots}
    sources = {kind: {job.name.split(":", 1)[1]: "user image" if job.name in given else "rendered"
                      for job in jobs if job.name.startswith(f"{kind}:")} for kind in ("portrait", "keyframe")}
    out = out.evolve(notes=timer.notes(out, keyframes_made=count, keyframe_renders=renders,
                                       portrait_sources=sources["portrait"], keyframe_sources=sources["keyframe"],
                                       **({"locked_shots": sorted(n.split(":", 1)[1] for n in locked)}
                                          if locked else {})))
    write_report(out)
    refresh_contact_sheet(out)
    return out
