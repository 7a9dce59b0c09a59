"""The Director node: one sentence in, the plan and its run folder out (``pipeline/director.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model_loaders.handles import ModelHandle
from ..model_loaders.vocabulary.frames import ASPECTS, RESOLUTIONS
from ..model_loaders.vocabulary.languages import LANGUAGES
from .base import LLM, VOICE_MODEL, ReelNode, choice, integer, number, seed_input, text
from .pipeline.comfy import output_root, send_ui_event
from .pipeline.director import LANGUAGE_AUTO, direct, shot_list
from .pipeline.preflight import check_queued_loaders
from .pipeline.rundir import check_run_id
from .pipeline.voice import request_for_voice


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
                "voice_model": (VOICE_MODEL, {"tooltip": "Optional: the voice loader the Narrate node uses. Each "
                                "shot's narration is then sized to that voice's speaking rate, and a plan_override "
                                "it cannot speak in time is refused. Not connected: sized for the slower voice."}),
                "plan_edits": text("The shot editor's edited plan (JSON), stored in the workflow; empty: the "
                                   "director's plan. Checked against the plan's rules and the voice's narration "
                                   "budget, then rendered in the same run folder: only the shots it changed are "
                                   "rendered again. Locked shots keep their keyframe and clip.", multiline=True),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, sentence: str = "", run_id: str = "", plan_override: str = "",
                        plan_edits: str = "") -> bool | str:
        from ..model_loaders.vocabulary.plan import validate_plan
        from .pipeline.plan_edits import PlanEditError, plan_edit_problems

        if isinstance(sentence, str) and not sentence.strip():
            return "sentence is empty: describe the reel in one sentence"
        try:
            if run_id and run_id.strip():
                check_run_id(run_id.strip())
            if plan_override and plan_override.strip():
                validate_plan(plan_override)
            if isinstance(plan_edits, str) and plan_edits.strip():  # the voice's budget is checked on queue
                problems = plan_edit_problems(plan_edits, narration=False)
                if problems:
                    raise PlanEditError(problems)
        except ValueError as exc:
            return str(exc)
        return True

    def plan(self, llm: ModelHandle, sentence: str, duration_s: float, shots: int, aspect: str, language: str,
             seed: int, run_id: str = "", plan_override: str = "", resolution: str = "720p",
             voice_model: ModelHandle | None = None, plan_edits: str = "",
             prompt: dict[str, Any] | None = None) -> dict[str, Any]:
        from ..model_loaders.rules import DirectorRequest
        from .pipeline.director import run_id_for
        from .pipeline.plan_edits import check_plan_edits
        from .pipeline.voice import engine_of

        check_queued_loaders(prompt or {})  # every checkpoint of the graph, before the director loads
        edits = check_plan_edits(plan_edits, engine_of(voice_model)) if plan_edits and plan_edits.strip() else None

        request = DirectorRequest(sentence=sentence, duration_s=float(duration_s), shots=int(shots), aspect=aspect,
                                  language=None if language == LANGUAGE_AUTO else language, seed=int(seed),
                                  resolution=resolution)
        request = request_for_voice(request, voice_model)
        if edits is not None:  # the run folder of the unedited plan: only what the edits changed renders again
            run_id = run_id_for(request, run_id or None, plan_override or None)
            edits = keep_whole_reel_seed(output_root() / "cinereel" / run_id / "plan.json", edits)
        reel = direct(llm, request, output_root(), run_id or None, edits or plan_override or None)
        rows = shot_list(reel.plan)
        send_ui_event("cinereel.plan", {"run_id": reel.run_id, "shots": rows})
        summary = {"run_id": reel.run_id, "language": reel.plan.language, "locale": reel.plan.locale,
                   "mood": reel.plan.mood, "time_of_day": reel.plan.time_of_day, "edited": edits is not None,
                   "locked": reel.plan.locked_shots(), "plan": reel.plan.model_dump(mode="json"),
                   "warnings": list(reel.notes.get("warnings", []))}
        return {"ui": {"cinereel_shots": rows, "cinereel_plan": [summary]}, "result": (reel,)}


def keep_whole_reel_seed(plan_file: Path, edits: str) -> str:
    """The edits with the run's portrait and music seed pinned when they change the first shot's seed."""
    import json

    from .pipeline.plan_edits import pin_reel_seed

    if not plan_file.is_file():
        return edits
    new = json.loads(edits)
    pinned = pin_reel_seed(json.loads(plan_file.read_text(encoding="utf-8")), new)
    return edits if pinned is new else json.dumps(pinned, ensure_ascii=False)


NODES = {"CineReelDirector": (DirectorNode, "CineReel Director")}
