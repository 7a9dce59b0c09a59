"""Before the first model loads: every setting of every stage checked, every problem reported at once.

A real reel is an hour of GPU work; a loudness target or a loader option that cannot work must stop
the run in a second, with all such mistakes named together, not one per attempt after the renders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .mix import MAX_CEILING_DBTP, MAX_TARGET_LUFS, MIN_CEILING_DBTP, MIN_TARGET_LUFS

if TYPE_CHECKING:
    from ...model_loaders.handles import ModelHandle
    from ...model_loaders.rules import DirectorRequest
    from ...model_loaders.vocabulary.plan import Plan
    from .headless import PipelineOptions


class PreflightError(ValueError):
    """Every problem found before anything loaded, in one line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        super().__init__(count + "; ".join(problems))


def settings_problems(request: DirectorRequest, options: PipelineOptions) -> list[str]:
    """Everything wrong with a headless run's settings; an empty list when it can start."""
    from .gate import check_gate_settings
    from .keyframe_gate import keyframe_gate_on

    problems = []
    try:
        request.validate()
    except ValueError as exc:
        problems.append(str(exc))
    if options.gate or keyframe_gate_on(options):
        try:
            check_gate_settings(options.threshold, options.max_retries)
        except ValueError as exc:
            problems.append(str(exc))
    if not (math.isfinite(options.target_lufs) and MIN_TARGET_LUFS <= options.target_lufs <= MAX_TARGET_LUFS):
        problems.append(f"target loudness {options.target_lufs:g} LUFS is outside {MIN_TARGET_LUFS:g} to "
                        f"{MAX_TARGET_LUFS:g} (-18 is the default, -14 for social platforms, -23 for broadcast)")
    if not (math.isfinite(options.true_peak_dbtp) and MIN_CEILING_DBTP <= options.true_peak_dbtp <= MAX_CEILING_DBTP):
        problems.append(f"true-peak ceiling {options.true_peak_dbtp:g} dBTP is outside {MIN_CEILING_DBTP:g} to "
                        f"{MAX_CEILING_DBTP:g}")
    return problems


def check_settings(request: DirectorRequest, options: PipelineOptions) -> None:
    """Raise ``PreflightError`` naming every problem with the settings; before any model loads."""
    problems = settings_problems(request, options)
    if problems:
        raise PreflightError(problems)


def narration_problem(plan: Plan, voice_engine: str | None) -> str | None:
    """What is wrong with a given plan whose narration its voice cannot speak in its shots, even at the
    narration stage's top speed-up; None when every line fits. ``voice_engine`` None: the slower engine."""
    from ...model_loaders.speaking_rates import plan_overruns
    from .audio import MAX_SPEECH_SPEED

    overruns = plan_overruns(plan.model_dump(mode="json"), voice_engine, MAX_SPEECH_SPEED)
    if not overruns:
        return None
    return (f"the plan's narration cannot be spoken in its shots: {'; '.join(o.describe() for o in overruns)}; "
            "shorten those lines or lengthen those shots")


def plan_problems(plan_text: str | None, voice_engine: str | None) -> list[str]:
    """Everything wrong with a user's plan (``--plan``, ``plan_override``): its schema, then its narration."""
    from ...model_loaders.vocabulary.plan import validate_plan

    if plan_text is None or not plan_text.strip():
        return []
    try:
        plan = validate_plan(plan_text)
    except ValueError as exc:
        return [str(exc)]
    problem = narration_problem(plan, voice_engine)
    return [problem] if problem else []


def checkpoint_problems(handles: dict[str, ModelHandle]) -> list[str]:
    """Every chosen checkpoint checked against its model's published layout (files only, nothing loads):
    which folder, which files are missing, and the ``hf download`` command that fixes each."""
    from ...model_loaders.model_layouts import layouts, problems

    found: list[str] = []
    seen: set[tuple[str, str]] = set()
    for stage, handle in handles.items():
        if handle.family not in layouts() or (handle.family, handle.checkpoint) in seen:
            continue  # the preview backends and a server need no checkpoint; one LLM serves two roles
        seen.add((handle.family, handle.checkpoint))
        allow = bool(handle.option("allow_download", False))
        found += [f"{stage}: {problem}" for problem in problems(handle.family, handle.checkpoint, allow,
                                                                 _suggested_folder(handle.family))]
    return found + motion_lora_problems(handles, found)


def motion_lora_problems(handles: dict[str, ModelHandle], checkpoint_problems: list[str]) -> list[str]:
    """The motion model's LoRA files: there, readable, and made for its experts (headers only)."""
    from ...model_loaders.wan import FAMILY, lora_preflight

    found: list[str] = []
    for stage, handle in handles.items():
        if handle.family == FAMILY:
            ready = not any(problem.startswith(f"{stage}: ") for problem in checkpoint_problems)
            found += lora_preflight(handle, ready)
    return found


def _suggested_folder(family: str) -> Path | None:
    """Where a ComfyUI user should download ``family``'s checkpoint (models/cinereel/<repo name>); None
    headless, where the hub cache is the place."""
    from ...model_loaders.model_layouts import layout
    from .comfy import model_folders

    roots = model_folders()
    return roots[0] / layout(family).repo.split("/")[-1] if roots else None


def check_queued_loaders(prompt: dict[str, Any]) -> None:
    """ComfyUI: every CineReel loader in the queued graph and its checkpoint, checked in seconds before the
    director plans (so a queue with three missing models fails once, naming all three, not after an hour)."""
    from .backends import handles_in_prompt

    handles, problems = handles_in_prompt(prompt)
    problems += checkpoint_problems(handles)
    if problems:
        raise PreflightError(problems)
