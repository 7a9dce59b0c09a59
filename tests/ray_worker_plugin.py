"""Worker plugin (CINEREEL_WORKER_PLUGINS) for tests/test_ray_batch.py: a scripted director and critic on Ray workers.

``test-ray-scripted-llm`` plans like the preview director but refuses any sentence containing ``REFUSE`` (the
error happens on the worker, inside the job, as a real director's would); as the critic it finds six-fingered
hands in every clip until the prompt asks for five fingers (the HAND_FINGER_ARTIFACT fix), so every shot
needs one re-render: a new keyframe and a new clip.

``test-ray-prompt-motion`` is the Ken Burns motion with an ``encode_prompts`` like Wan2.2's: it appends what it
encodes, and each clip it renders, to the log file its handle's checkpoint names (one JSON line each, with the
worker's pid and the model object's id), so a test can see that each worker prepared before rendering.
"""

from __future__ import annotations

import importlib
import json
import os

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

    class PromptMotion(preview.KenBurnsMotion):
        def __init__(self, log: str):
            self.log = log

        def _write(self, entry: dict) -> None:
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(json.dumps({**entry, "pid": os.getpid(), "model": id(self)}) + "\n")

        def encode_prompts(self, shots):
            self._write({"event": "encode", "prompts": sorted(shot["prompt"] for shot in shots)})
            return len(shots)

        def camera_filter(self, size, shot, plan, num_frames, seed):
            self._write({"event": "render", "prompt": shot["prompt"]})
            return super().camera_filter(size, shot, plan, num_frames, seed)

    register_family("test-ray-prompt-motion", lambda handle: PromptMotion(handle.checkpoint), weightless=True)
