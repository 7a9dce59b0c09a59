"""Importing the pack the way ComfyUI does must stay light: no model libraries, few modules.

What is asserted here does not depend on the machine's load. How long the import takes is a
figure, printed by ``python tests/bench/speed.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cinereel_testkit import PACK_ROOT

NAME = "ComfyUI-CineReel"
PROBE = r"""
import importlib.util, json, sys
import torch  # ComfyUI has imported torch before it loads custom nodes
root, name = sys.argv[1], sys.argv[2]
before = set(sys.modules)
spec = importlib.util.spec_from_file_location(name, root + "/__init__.py", submodule_search_locations=[root])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
added = sorted(set(sys.modules) - before)
print(json.dumps({"added": added, "nodes": len(module.NODE_CLASS_MAPPINGS), "web": module.WEB_DIRECTORY}))
"""
# Imported when a model loads or a stage runs, never when ComfyUI starts.
HEAVY = ("diffusers", "transformers", "kokoro", "misaki", "spacy", "accelerate", "pydantic", "soundfile", "scipy",
         "pyloudnorm", "imageio_ffmpeg", "PIL.Image", "openai", "llguidance", "espeakng_loader", "ray")
LOADED_ON_USE = ("model_loaders.rules", "model_loaders.qwen", "model_loaders.openai_compat", "model_loaders.flux2",
                 "model_loaders.wan", "model_loaders.kokoro_tts", "model_loaders.acestep", "model_loaders.storyboard",
                 "model_loaders.kenburns", "model_loaders.synth", "model_loaders.espeak", "model_loaders.technical",
                 "model_loaders.vocabulary.plan", "nodes.pipeline.audio", "nodes.pipeline.video",
                 "nodes.pipeline.reel", "nodes.pipeline.cli", "nodes.pipeline.headless", "nodes.pipeline.ray_batch",
                 "nodes.pipeline.ray_pool", "nodes.pipeline.ray_worker")
MAX_OUTSIDE_MODULES = 6  # standard-library modules the pack may add on top of what torch imported
MAX_PACK_MODULES = 46  # 42 today: the node modules and what their classes need to declare inputs


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(PACK_ROOT), NAME], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_leaves_model_libraries_and_stage_code_unloaded():
    run = probe()
    added = run["added"]
    heavy = [m for m in HEAVY if m in added or any(a.startswith(m + ".") for a in added)]
    assert heavy == [], f"importing the pack imported {heavy}"
    ours = [m[len(NAME) + 1:] for m in added if m.startswith(NAME + ".")]
    early = [m for m in LOADED_ON_USE if m in ours]
    assert early == [], f"importing the pack imported {early}, which should load when a stage first runs"
    outside = [m for m in added if m != NAME and not m.startswith(NAME + ".")]
    assert len(outside) <= MAX_OUTSIDE_MODULES, f"importing the pack added {len(outside)} other modules: {outside}"
    assert len(ours) <= MAX_PACK_MODULES, f"importing the pack imported {len(ours)} of its modules: {ours}"
    assert run["nodes"] >= 10 and run["web"] == "./js"
