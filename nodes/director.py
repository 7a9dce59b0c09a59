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

from ..model_loaders.handles import ModelHandle
from .base import LLM, ReelNode, choice, integer, number, seed_input, text
from .comfy import Progress, output_root, send_ui_event
from .frames import ASPECTS, RESOLUTIONS
from .languages import LANGUAGES
from .rundir import RunDir, check_run_id, derive_run_id
from .stage import Job, StageTimer, run_jobs, write_report

if TYPE_CHECKING:
    from ..model_loaders.rules import DirectorRequest
    from .plan import Plan
    from .reel import Reel

LANGUAGE_AUTO = "auto (from the place in the sentence)"


def run_id_for(request: DirectorRequest, run_id: str | None, plan_override: str | None) -> str:
    if run_id and run_id.strip():
        return check_run_id(run_id.strip())
    return derive_run_id(request.sentence, request=dataclasses.asdict(request), plan_override=plan_override or "")


def direct(
    llm: ModelHandle,
    request: DirectorRequest,
    out_root: Path | str,
    run_id: str | None = None,
    plan_override: str | None = None,
) -> Reel:
    """Plan the reel for ``request`` (or validate ``plan_override``) in its run directory."""
    from .plan import validate_plan
    from .reel import Reel

    timer = StageTimer("director")
    request.validate()
    override = validate_plan(plan_override) if plan_override and plan_override.strip() else None
    run = RunDir.create(out_root, run_id_for(request, run_id, plan_override))

    def make(model: Any, tmp: Path) -> None:
        if override is not None:
            planned = {"plan": override.model_dump(mode="json"), "warnings": [], "engine": "plan_override"}
        else:
            planned = model.plan(dataclasses.asdict(request))
        plan = validate_plan(planned["plan"])
        tmp.write_text(json.dumps({**planned, "plan": plan.model_dump(mode="json")}, indent=2, ensure_ascii=False),
                       encoding="utf-8")

    inputs = {"request": dataclasses.asdict(request), "llm": llm.key, "override": override}
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
                     "prompt": shot.prompt})
        start += shot.duration_s
    return rows


class DirectorNode(ReelNode):
    DESCRIPTION = ("Turns one sentence into the reel's plan: characters, locale and narration language, mood, "
                   "and the shot list with durations, camera moves, prompts and narration. Creates the run folder "
                   "under ComfyUI's output/cinereel/. Re-running with the same inputs resumes that run.")
    OUTPUT_TOOLTIPS = ("The REEL: the plan and its run folder; connect it to the Keyframes node.",)
    FUNCTION = "plan"
    OUTPUT_NODE = False

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "llm": (LLM, {"tooltip": "The director model from a CineReel LLM Loader."}),
                "sentence": text("One sentence describing the reel: who, where, when, what happens. "
                                 "A named place sets the narration language (Tokyo: Japanese).",
                                 "A lone astronaut walks through a neon-lit Tokyo alley at dusk", multiline=True),
                "duration_s": number("Length of the reel in seconds (the shots' durations add up to it).",
                                     30.0, 2.0, 120.0, 0.5),
                "shots": integer("Number of shots. Six 5-second shots make the classic 30-second reel.", 6, 1, 24),
                "aspect": choice(ASPECTS, "16:9 for landscape, 9:16 for vertical platforms (the frame size follows the "
                                 "resolution input: 1280x720 or 720x1280 at 720p)."),
                "language": choice([LANGUAGE_AUTO, *LANGUAGES], "Narration language. auto: from the place named in "
                                   "the sentence (English when none). A choice here wins."),
                "seed": seed_input("Seed for the plan and, derived per shot, for every render."),
            },
            "optional": {
                "run_id": text("Run folder name under output/cinereel/. Blank: derived from the inputs, so the same "
                               "inputs resume the same run. Letters, digits, '.', '_' and '-' only."),
                "plan_override": text("Optional: a complete plan as JSON (for example an edited plan.json). It is "
                                      "validated and used instead of the director's plan.", multiline=True),
                "resolution": choice(tuple(RESOLUTIONS), "Frame size, the two Wan2.2 was trained at. 720p: 1280x720 (or "
                                     "720x1280). 480p: 832x480 (or 480x832), about 2.3x faster to render, for "
                                     "drafts and smaller GPUs."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, sentence: str = "", run_id: str = "", plan_override: str = "") -> bool | str:
        from .plan import validate_plan

        if isinstance(sentence, str) and not sentence.strip():
            return "sentence is empty: describe the reel in one sentence"
        try:
            if run_id and run_id.strip():
                check_run_id(run_id.strip())
            if plan_override and plan_override.strip():
                validate_plan(plan_override)
        except ValueError as exc:
            return str(exc)
        return True

    def plan(self, llm: ModelHandle, sentence: str, duration_s: float, shots: int, aspect: str, language: str,
             seed: int, run_id: str = "", plan_override: str = "", resolution: str = "720p") -> dict[str, Any]:
        from ..model_loaders.rules import DirectorRequest

        request = DirectorRequest(sentence=sentence, duration_s=float(duration_s), shots=int(shots), aspect=aspect,
                                  language=None if language == LANGUAGE_AUTO else language, seed=int(seed),
                                  resolution=resolution)
        reel = direct(llm, request, output_root(), run_id or None, plan_override or None)
        rows = shot_list(reel.plan)
        send_ui_event("cinereel.plan", {"run_id": reel.run_id, "shots": rows})
        summary = {"run_id": reel.run_id, "language": reel.plan.language, "locale": reel.plan.locale,
                   "mood": reel.plan.mood, "time_of_day": reel.plan.time_of_day,
                   "warnings": list(reel.notes.get("warnings", []))}
        return {"ui": {"cinereel_shots": rows, "cinereel_plan": [summary]}, "result": (reel,)}


NODES = {"CineReelDirector": (DirectorNode, "CineReel Director")}
