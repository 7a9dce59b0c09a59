"""The whole pipeline as plain Python: what the headless command runs, stage by stage.

It is the same sequence of stage functions the ComfyUI nodes call, with the
same handles, so a graph and a script make the same reel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...model_loaders.handles import ModelHandle
from .backends import PREVIEW_CHOICES, make_handle
from .director import direct, run_id_for
from .keyframes import render_keyframes
from .motion import animate
from .music import score_music
from .reel import Reel
from .rundir import RunDir
from .voice import narrate, request_for_voice

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest

def preview_handles() -> dict[str, ModelHandle]:
    return {stage: make_handle(stage, selected) for stage, selected in PREVIEW_CHOICES.items()}


@dataclass
class PipelineOptions:
    handles: dict[str, ModelHandle] = field(default_factory=preview_handles)
    lead_in_s: float = 0.25
    target_lufs: float = -18.0
    true_peak_dbtp: float = -1.0
    crf: int = 18
    preset: str = "copy"
    clip_preset: str = "ultrafast"
    gate: bool = False  # the critic gate between motion and narration
    threshold: float = 7.0
    max_retries: int = 3
    technical_check: bool = True  # off: the critic also judges black, blank, still or flickering clips
    keep: str = "all"  # what stays on disk once the reel is made: all, best or final (retention.py)
    # The effective settings and where each came from (settings.Resolved.report()), recorded in report.json.
    settings: dict | None = None


StageCallback = Callable[[str, float], None]
Stage = tuple[str, Callable[[Reel], Reel]]


def reel_stages(options: PipelineOptions) -> list[Stage]:
    """Every stage after the director, in order, as (name, REEL -> REEL); ``batch.py`` runs the same list."""
    from .assemble import assemble_stage
    from .gate import run_gate
    from .mix import mix_stage

    h = options.handles
    return [
        ("keyframes", lambda r: render_keyframes(r, h["keyframes"])),
        ("motion", lambda r: animate(r, h["motion"], options.clip_preset)),
        *([("gate", lambda r: run_gate(r, h["llm"], h["keyframes"], h["motion"], options.threshold,
                                       options.max_retries, clip_preset=options.clip_preset,
                                       technical_gate=options.technical_check))]
          if options.gate else []),
        ("narration", lambda r: narrate(r, h["voice"], lead_in_s=options.lead_in_s)),
        ("music", lambda r: score_music(r, h["music"])),
        ("mix", lambda r: mix_stage(r, options.target_lufs, options.true_peak_dbtp)),
        ("assemble", lambda r: assemble_stage(r, options.crf, options.preset, keep=options.keep)),
    ]


def make_reel(
    request: DirectorRequest,
    out_root: Path | str,
    run_id: str | None = None,
    plan_override: str | None = None,
    options: PipelineOptions | None = None,
    on_stage: StageCallback | None = None,
) -> Reel:
    """Sentence to reel.mp4, phase-major: each stage renders every shot under one residency."""
    options = options or PipelineOptions()
    stages = reel_stages(options)
    request = request_for_voice(request, options.handles["voice"])
    root = Path(out_root).resolve() / "cinereel" / run_id_for(request, run_id, plan_override)
    with RunDir(root).locked():  # the whole reel, so no other process interleaves with it
        started = time.perf_counter()
        reel = direct(options.handles["llm"], request, out_root, run_id, plan_override)
        if options.settings is not None:  # report.json says what the run was configured with
            reel = reel.evolve(notes={"settings": options.settings})
        if on_stage:
            on_stage("director", time.perf_counter() - started)
        for name, run in stages:
            started = time.perf_counter()
            reel = run(reel)
            if on_stage:
                on_stage(name, time.perf_counter() - started)
    return reel
