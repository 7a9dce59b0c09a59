"""The Batch node: many sentences in, every reel rendered phase-major in one node (``pipeline/batch.py``).

The stage nodes pass one REEL each; chaining them once per sentence would load every model once per reel. This
node takes the loader handles and a list of sentences and runs the whole batch itself, so each model loads once
per phase for all reels. Its output is a list of REELs (one per finished reel) for the adapter nodes.
"""

from __future__ import annotations

from typing import Any

from ..model_loaders.handles import ModelHandle
from ..model_loaders.vocabulary.frames import ASPECTS, RESOLUTIONS
from ..model_loaders.vocabulary.languages import LANGUAGES
from .base import (
    CATEGORY,
    KEYFRAME_MODEL,
    LLM,
    MOTION_MODEL,
    MUSIC_MODEL,
    REEL,
    VOICE_MODEL,
    choice,
    integer,
    number,
    seed_input,
    text,
    toggle,
)
from .pipeline.director import LANGUAGE_AUTO
from .pipeline.gate import DEFAULT_THRESHOLD, MAX_RETRIES
from .pipeline.mix import MAX_TARGET_LUFS, MIN_TARGET_LUFS
from .pipeline.retention import KEEP_CHOICES

EXAMPLE = ("A lone astronaut walks through a neon-lit Tokyo alley at dusk\n"
           "A fisherman mends his nets on a Lisbon pier at dawn\n"
           "A chef plates dessert in a busy Paris kitchen at night")


class BatchNode:
    DESCRIPTION = ("Renders many reels at once, phase-major: every plan, then every keyframe, every clip, the critic "
                   "gate's rounds, narration, music, mix and assembly for all reels, so each model loads once per "
                   "phase for the whole batch instead of once per reel. Each reel gets its own run folder; a reel "
                   "that fails is listed and the others finish. The shot list shows every reel.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (REEL,)
    RETURN_NAMES = ("reels",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_TOOLTIPS = ("Every finished reel as a list of REELs: a node connected here runs once per reel.",)
    FUNCTION = "render"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "llm": (LLM, {"tooltip": "The director and critic model from a CineReel LLM Loader."}),
                "keyframe_model": (KEYFRAME_MODEL, {"tooltip": "Draws every reel's portraits and keyframes."}),
                "motion_model": (MOTION_MODEL, {"tooltip": "Animates every reel's keyframes into clips."}),
                "voice_model": (VOICE_MODEL, {"tooltip": "Speaks every reel's narration."}),
                "music_model": (MUSIC_MODEL, {"tooltip": "Scores every reel's music bed."}),
                "sentences": text("One reel per line: a sentence, or a JSON object such as {\"sentence\": \"...\", "
                                  "\"seed\": 3, \"language\": \"fr\", \"duration\": 20, \"shots\": 4} whose keys "
                                  "override the widgets below for that reel. Blank lines and # lines are skipped.",
                                  EXAMPLE, multiline=True),
                "duration_s": number("Length of every reel in seconds (a line may set its own).", 30.0, 2.0, 120.0,
                                     0.5),
                "shots": integer("Shots per reel (a line may set its own).", 6, 1, 24),
                "aspect": choice(ASPECTS, "16:9 landscape or 9:16 vertical, for every reel."),
                "language": choice([LANGUAGE_AUTO, *LANGUAGES], "Narration language of every reel. auto: from the "
                                   "place named in each sentence."),
                "seed": seed_input("Seed of every reel (a line may set its own)."),
                "gate": toggle("Run the critic gate after motion, its rounds shared by all reels.", False),
                "threshold": number("With the gate: a clip passes when the mean of its four scores reaches this.",
                                    DEFAULT_THRESHOLD, 1.0, 10.0, 0.1),
                "max_retries": integer("With the gate: re-renders allowed per shot.", 3, 0, MAX_RETRIES),
                "target_lufs": number("Integrated loudness of every master (-18 default, -14 social, -23 EBU).",
                                      -18.0, MIN_TARGET_LUFS, MAX_TARGET_LUFS, 0.5),
            },
            "optional": {
                "resolution": choice(tuple(RESOLUTIONS), "Frame size of every reel: 720p or 480p (drafts)."),
                "keep": choice(KEEP_CHOICES, "What stays in each run folder once its reel is made: all, best or "
                               "final (see the Assemble node)."),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, sentences: str = "") -> bool | str:
        from .pipeline.batch import read_batch_text
        from .pipeline.comfy import output_root

        if not isinstance(sentences, str):
            return True  # linked from another node: checked when the node runs
        try:
            read_batch_text(sentences, None, "sentences", output_root())
        except ValueError as exc:
            return str(exc)
        return True

    def render(self, llm: ModelHandle, keyframe_model: ModelHandle, motion_model: ModelHandle,
               voice_model: ModelHandle, music_model: ModelHandle, sentences: str, duration_s: float, shots: int,
               aspect: str, language: str, seed: int, gate: bool, threshold: float, max_retries: int,
               target_lufs: float, resolution: str = "720p", keep: str = "all",
               prompt: dict[str, Any] | None = None) -> dict[str, Any]:
        from .pipeline.batch import default_request, read_batch_text, run_batch, summary_lines
        from .pipeline.comfy import output_root
        from .pipeline.headless import PipelineOptions
        from .pipeline.preflight import check_queued_loaders, check_settings

        check_queued_loaders(prompt or {})  # every checkpoint of the graph, before the director loads
        defaults = default_request(duration_s=float(duration_s), shots=int(shots), aspect=aspect, seed=int(seed),
                                   language=None if language == LANGUAGE_AUTO else language, resolution=resolution)
        items = read_batch_text(sentences, defaults, "sentences", output_root())
        handles = {"llm": llm, "keyframes": keyframe_model, "motion": motion_model, "voice": voice_model,
                   "music": music_model}
        options = PipelineOptions(handles=handles, gate=bool(gate), threshold=float(threshold),
                                  max_retries=int(max_retries), target_lufs=float(target_lufs), keep=keep)
        check_settings(defaults, options)
        result = run_batch(items, output_root(), options)
        table = summary_lines(result)
        reels = [o.reel for o in result.reels if o.status == "done"]
        if not reels:
            raise RuntimeError("no reel of the batch finished:\n" + "\n".join(table))
        return {"ui": {"cinereel_shots": shot_rows(result), "cinereel_plan": [plan_summary(result)], "text": table},
                "result": (reels,)}


def shot_rows(result: Any) -> list[dict[str, Any]]:
    """The Director's shot list for every reel: each shot id led by its reel's number."""
    from .pipeline.director import shot_list

    return [{**row, "id": f"reel {o.index} · {row['id']}"} for o in result.reels if o.reel is not None
            for row in shot_list(o.reel.plan)]


def plan_summary(result: Any) -> dict[str, Any]:
    done = len(result.reels) - len(result.failed)
    return {"run_id": result.batch_id, "locale": f"{done} of {len(result.reels)} reels done",
            "warnings": [f"reel {o.index} ({o.item.source}) failed at {o.failed_at}: {o.error}"
                         for o in result.reels if not o.ok]}


NODES = {"CineReelBatch": (BatchNode, "CineReel Batch")}
