"""Worker plugin (CINEREEL_WORKER_PLUGINS) for tests/test_ray_batch.py: a scripted director and critic on Ray workers.

``test-ray-scripted-llm`` plans like the preview director but refuses any sentence containing ``REFUSE`` (the
error happens on the worker, inside the job, as a real director's would); as the critic it finds six-fingered
hands in every clip until the prompt asks for five fingers (the HAND_FINGER_ARTIFACT fix), so every shot
needs one re-render: a new keyframe and a new clip.
"""

from __future__ import annotations

import importlib

FAMILY = "test-ray-scripted-llm"
SCORES = ("composition", "motion_coherence", "character_consistency", "lighting_fidelity")


def register(register_family) -> None:
    pack = register_family.__module__.rsplit(".model_loaders.", 1)[0]
    preview = importlib.import_module(f"{pack}.model_loaders.preview")

    class ScriptedLLM(preview.PreviewLLM):
        def plan(self, request):
            if "REFUSE" in request["sentence"]:
                raise ValueError("the director refused this sentence")
            return super().plan(request)

        def critique(self, frames, portraits, prompt):
            fixed = "five fingers" in prompt
            return {"scores": dict.fromkeys(SCORES, 9 if fixed else 3),
                    "label": None if fixed else "HAND_FINGER_ARTIFACT"}

    register_family(FAMILY, lambda handle: ScriptedLLM())
