"""Locked shots: what the run last kept for a shot is what a locked shot keeps, whatever its key says now.

A shot the user locked (``Shot.locked``) is never re-rendered: its keyframe and clip are reused from the run
folder as they are, even when its content key changed (an edited prompt), and the gate never sends it back
(``gate.gate_may_retry``). A locked shot with nothing on disk yet renders once.

``kept.json`` in the run folder remembers, per shot, the keyframe and clip the run last used (the gate's
chosen attempt, not only attempt 1); every report write updates it, so it survives a new invocation, whose
director rewrites report.json before any keyframe exists.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .rundir import atomic_write_text

if TYPE_CHECKING:
    from .reel import Reel
    from .stage import Job

KEPT = "kept.json"
KINDS = ("keyframe", "clip")


def kept(reel: Reel) -> dict[str, str]:
    """``{"clip:shot_03": "clips/shot_03.attempt2.mp4", ...}``: what the run last used for each shot."""
    path = reel.run_dir.path(KEPT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) \
        else {}


def record_kept(reel: Reel) -> None:
    """Merge the REEL's current keyframe and clip of every shot into ``kept.json`` (only what is on disk)."""
    current = kept(reel)
    merged = dict(current)
    for shot in reel.plan.shots:
        for kind in KINDS:
            rel = reel.artifacts.get(f"{kind}:{shot.id}")
            if rel and reel.run_dir.path(rel).is_file():
                merged[f"{kind}:{shot.id}"] = rel
    if merged != current:
        atomic_write_text(reel.run_dir.path(KEPT), json.dumps(merged, indent=1, sort_keys=True))


def locked_reuse(reel: Reel, jobs: list[Job]) -> tuple[list[Job], dict[str, str]]:
    """Split a stage's jobs: those to run, and ``{name: rel}`` reused as they are for locked shots.

    A locked shot's artifact is the one the run last kept, else the job's own file when it is on disk; with
    neither, its job runs (it renders once).
    """
    locked = {shot.id for shot in reel.plan.shots if shot.locked}
    last = kept(reel)
    run, reused = [], {}
    for job in jobs:
        shot_id = job.name.split(":", 1)[1] if job.name.split(":", 1)[0] in KINDS else None
        if shot_id in locked:
            for rel in (last.get(job.name), job.rel):
                if rel and reel.run_dir.path(rel).is_file() and rel in reel.run_dir.manifest():
                    reused[job.name] = rel
                    break
        if job.name not in reused:
            run.append(job)
    return run, reused
