"""Before the first model loads: every setting of every stage checked, every problem reported at once.

A real reel is an hour of GPU work; a loudness target or a loader option that cannot work must stop
the run in a second, with all such mistakes named together, not one per attempt after the renders.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .mix import MAX_CEILING_DBTP, MAX_TARGET_LUFS, MIN_CEILING_DBTP, MIN_TARGET_LUFS

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest
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

    problems = []
    try:
        request.validate()
    except ValueError as exc:
        problems.append(str(exc))
    if options.gate:
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
