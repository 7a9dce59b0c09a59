"""Speed figures that tests must not assert (they depend on the machine's load): print them.

    .venv/bin/python tests/bench/speed.py

Prints the cost of importing the pack the way ComfyUI does (on top of torch), of planning with the
rule-based director, of drawing one storyboard keyframe and of a 30-second synth music bed. The
whole preview reel has its own benchmark: ``cinereel --benchmark "…"``. Not collected by pytest.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
IMPORT_PROBE = r"""
import importlib.util, json, sys, time
import torch
root = sys.argv[1]
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("ComfyUI-CineReel", root + "/__init__.py",
                                              submodule_search_locations=[root])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(json.dumps({"ms": (time.perf_counter() - started) * 1000}))
"""
SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"


def import_ms() -> list[float]:
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(PACK_ROOT)], capture_output=True, text=True,
                             check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1])["ms"])
    return runs


def timed(call, repeats: int) -> list[float]:
    call()  # data files, fonts and caches load once
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def import_pack():
    spec = importlib.util.spec_from_file_location("cinereel", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cinereel"] = module
    spec.loader.exec_module(module)


def report(name: str, times: list[float]) -> None:
    print(f"{name:<44} median {statistics.median(times):8.1f} ms   min {min(times):8.1f} ms   "
          f"max {max(times):8.1f} ms   ({len(times)} runs)")


def main() -> None:
    report("import the pack (after torch)", import_ms())
    import_pack()
    from cinereel.model_loaders.rules import DirectorRequest, RuleDirector
    from cinereel.model_loaders.storyboard import render_keyframe
    from cinereel.model_loaders.synth import render_music_bed

    director = RuleDirector()
    report("rule director: 30 s, 6 shots", timed(lambda: director.plan(DirectorRequest(SENTENCE)), 5))
    report("rule director: 120 s, 24 shots",
           timed(lambda: director.plan(DirectorRequest(SENTENCE, duration_s=120, shots=24)), 5))
    plan, _ = director.plan(DirectorRequest(SENTENCE))
    report("storyboard keyframe 1280x720", timed(lambda: render_keyframe(plan.shots[0], plan, {}, 1), 5))
    report("synth music bed, 30 s", timed(lambda: render_music_bed(30.0, "epic", seed=0), 3))


if __name__ == "__main__":
    main()
