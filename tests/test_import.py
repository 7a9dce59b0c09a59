"""Importing the pack the way ComfyUI does must be cheap and must not pull in model libraries."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from cinereel_testkit import PACK_ROOT

PROBE = r"""
import importlib.util, json, sys, time
import torch  # ComfyUI has imported torch before it loads custom nodes
root = sys.argv[1]
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("ComfyUI-CineReel", root + "/__init__.py",
                                              submodule_search_locations=[root])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
heavy = [m for m in ("diffusers", "transformers", "kokoro", "misaki", "spacy", "pydantic", "soundfile", "PIL.Image")
         if m in sys.modules]
print(json.dumps({"ms": elapsed * 1000, "heavy": heavy, "nodes": len(module.NODE_CLASS_MAPPINGS),
                  "web": module.WEB_DIRECTORY}))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(PACK_ROOT)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_cheap_and_leaves_model_libraries_unloaded():
    runs = [probe() for _ in range(5)]
    median_ms = statistics.median(r["ms"] for r in runs)
    assert median_ms <= 50, f"importing the pack took {median_ms:.1f} ms (median of 5) on top of torch"
    for run in runs:
        assert run["heavy"] == [], f"importing the pack imported {run['heavy']}"
        assert run["nodes"] >= 10 and run["web"] == "./js"
