"""Worker plugin (CINEREEL_WORKER_PLUGINS) for tests/test_ray_batch.py: a director that fails on Ray workers.

``test-ray-refusing-llm`` plans like the preview director, except that it refuses any sentence containing
``REFUSE``: the error happens on the worker, inside the job, as a real director's would.
"""

from __future__ import annotations

import importlib

FAMILY = "test-ray-refusing-llm"


def register(register_family) -> None:
    pack = register_family.__module__.rsplit(".model_loaders.", 1)[0]
    preview = importlib.import_module(f"{pack}.model_loaders.preview")

    class RefusingDirector(preview.PreviewLLM):
        def plan(self, request):
            if "REFUSE" in request["sentence"]:
                raise ValueError("the director refused this sentence")
            return super().plan(request)

    register_family(FAMILY, lambda handle: RefusingDirector())
