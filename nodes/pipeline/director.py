"""Director stage: one sentence in, a validated plan and a run directory out.

The director model (rules in preview, a language model for real) writes the
plan; a user may instead paste a plan as JSON (``plan_override``), which is
validated like any plan. The plan is an artifact like any other: re-running
with the same inputs and run id reuses it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .comfy import Progress
from .rundir import RunDir, check_run_id, derive_run_id
from .stage import Job, StageTimer, run_jobs, write_report

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest
    from ...model_loaders.vocabulary.plan import Plan
    from .reel import Reel

LANGUAGE_AUTO = "auto (from the place in the sentence)"


def run_id_for(request: DirectorRequest, run_id: str | None, plan_override: str | None) -> str:
    if run_id and run_id.strip():
        return check_run_id(run_id.strip())
    return derive_run_id(request.sentence, request=request.identity(), plan_override=plan_override or "")


def direct(
    llm: ModelHandle,
    request: DirectorRequest,
    out_root: Path | str,
    run_id: str | None = None,
    plan_override: str | None = None,
) -> Reel:
    """Plan the reel for ``request`` (or validate ``plan_override``) in its run directory."""
    from ...model_loaders.vocabulary.plan import validate_plan

    timer = StageTimer("director")
    request.validate()
    override = validate_plan(plan_override) if plan_override and plan_override.strip() else None
    if override is not None:
        from .preflight import narration_problem

        if problem := narration_problem(override, request.voice_engine):
            raise ValueError(problem)
    run = RunDir.create(out_root, run_id_for(request, run_id, plan_override))
    with run.locked():  # planning, plan.json and the report: one process at a time
        return _plan_in(run, llm, request, override, timer)


def _plan_in(run: RunDir, llm: ModelHandle, request: DirectorRequest, override: Any, timer: StageTimer) -> Reel:
    from ...model_loaders.vocabulary.plan import validate_plan
    from .reel import Reel

    def make(model: Any, tmp: Path) -> None:
        if override is not None:
            planned = {"plan": override.model_dump(mode="json"), "warnings": [], "engine": "plan_override"}
        else:
            planned = model.plan(dataclasses.asdict(request))
        plan = validate_plan(planned["plan"])
        tmp.write_text(json.dumps({**planned, "plan": plan.model_dump(mode="json")}, indent=2, ensure_ascii=False),
                       encoding="utf-8")

    inputs = {"request": request.identity(), "llm": llm.key, "override": override}
    job = Job("director", "director.json", inputs, make)
    run_jobs(run, None if override is not None else llm.as_role("director"), [job], Progress(1))
    result = run.read_json("director.json")
    plan = validate_plan(result["plan"])
    run.write_json("plan.json", plan.model_dump(mode="json"))
    reel = Reel(plan, run.root, {"plan": "plan.json", "director": "director.json"})
    reel = reel.evolve(notes=timer.notes(reel, warnings=list(result.get("warnings", [])),
                                         director_engine=result.get("engine", llm.family)))
    write_report(reel)
    return reel


def shot_list(plan: Plan) -> list[dict[str, Any]]:
    """What the UI shows on the director node: one row per shot."""
    start = 0.0
    rows = []
    for shot in plan.shots:
        rows.append({"id": shot.id, "type": shot.type, "start_s": round(start, 3), "duration_s": shot.duration_s,
                     "camera": shot.camera, "characters": list(shot.characters), "narration": shot.narration,
                     "prompt": shot.prompt, "camera_detail": shot.camera_detail, "seed": shot.seed,
                     "flow_shift": shot.flow_shift, "ref_weight": shot.ref_weight, "locked": shot.locked})
        start += shot.duration_s
    return rows
