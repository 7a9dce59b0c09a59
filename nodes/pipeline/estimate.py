"""``cinereel estimate``: the planned reel's wall time on real GPUs, for the quality and fast motion presets.

Takes the same flags as a run; plans with the weights-free director (or reads
``--plan``), loads nothing, and projects with ``model_loaders/cost_model.py`` from
the sourced figures in ``model_loaders/rules_data/gpu_costs.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ...model_loaders.cost_model import load_costs, project

DEFAULT_SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
PRESETS = ("quality", "fast")
MOTION_KNOBS = ("steps", "guidance", "guidance_2")


def estimate_parser() -> argparse.ArgumentParser:
    from .cli import parser

    p = parser(sentence=False)
    p.prog = "cinereel estimate"
    p.description = ("Project the wall time of the planned reel on H100, H200, MI300X, RTX 4090 and L40S for the "
                     "quality and fast motion presets (and your --set motion.* settings), from published per-pass "
                     "costs; loads no model. Takes the same flags as a run.")
    p.epilog = "Every figure and its source: model_loaders/rules_data/gpu_costs.json."
    p.add_argument("sentence", nargs="?", default=DEFAULT_SENTENCE,
                   help="the reel's sentence (it decides the shot types, hence the flow shifts; default: the README's)")
    p.add_argument("--gpu", action="append", default=None, metavar="NAME",
                   help="only this GPU (repeatable; default: every GPU in the cost data)")
    p.add_argument("--costs", type=Path, default=None, help=argparse.SUPPRESS)  # a copy of the data, for tests
    return p


def reel_work(plan: Any) -> dict[str, Any]:
    """What the cost model needs from a plan: frame size, clips (flow shift, Wan frame count), counts."""
    from ...model_loaders.wan import wan_frame_count
    from .motion import clip_frames

    return {"width": plan.width, "height": plan.height, "duration_s": plan.duration_s,
            "characters": len(plan.characters), "narration_lines": sum(1 for s in plan.shots if s.narration.strip()),
            "clips": [{"flow_shift": s.flow_shift, "frames": wan_frame_count(clip_frames(plan, s))}
                      for s in plan.shots]}


def motion_settings(items: list[str]) -> tuple[str | None, dict[str, float]]:
    """The chosen ``speed`` preset and any motion steps/guidance from ``--set motion.NAME=VALUE``."""
    speed, knobs = None, {}
    for item in items:
        key, _, raw = item.partition("=")
        if key == "motion.speed":
            speed = raw.strip().strip('"')
        elif key.startswith("motion.") and key[len("motion."):] in MOTION_KNOBS:
            knobs[key[len("motion."):]] = json.loads(raw)
    return speed, knobs


def presets(costs: dict[str, Any], speed: str | None, knobs: dict[str, float]) -> dict[str, dict[str, Any]]:
    chosen = {name: costs["presets"][name] for name in PRESETS}
    if knobs or speed == "custom":
        base = costs["presets"].get(speed if speed in PRESETS else "quality")
        chosen["custom"] = {**base, **knobs}
    return chosen


def estimate(plan: Any, costs: dict[str, Any], gpus: list[str] | None = None, speed: str | None = None,
             knobs: dict[str, float] | None = None, gate: bool = False) -> dict[str, Any]:
    work = reel_work(plan)
    rows = [{"preset": name, **project(costs, gpu, preset, work, gate=gate)}
            for gpu in (gpus or list(costs["gpus"])) for name, preset in presets(costs, speed, knobs or {}).items()]
    return {"reel": {k: v for k, v in work.items() if k != "clips"} | {"shots": len(work["clips"]),
                                                                       "frames_per_clip": [c["frames"] for c in
                                                                                           work["clips"]]},
            "speed": speed, "gate": gate, "as_of": costs["as_of"], "rows": rows}


def minutes(seconds: float) -> str:
    """``9.4 min`` under an hour, ``2 h 41 min`` from there."""
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    whole = round(seconds / 60)
    return f"{whole // 60} h {whole % 60:02d} min"


def table(result: dict[str, Any]) -> str:
    """The projection as a Markdown table (what README.md shows for the default plan)."""
    reel = result["reel"]
    lines = [f"Planned reel: {reel['duration_s']:g} s, {reel['shots']} shots at {reel['width']}x{reel['height']}, "
             f"{reel['frames_per_clip'][0] if reel['frames_per_clip'] else 0} frames per clip"
             f"{', critic gate on (one round)' if result['gate'] else ''}; cost data of {result['as_of']}.",
             "",
             "| GPU | preset | Wan passes (high + low) | s/pass | loads | motion | other stages | total |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        passes = row["expert_passes"]
        other = row["total_s"] - row["stages_s"]["motion"]
        notes = [f"{row['motion_offload']} offload" if row["motion_offload"] != "none" else "",
                 "LLM offloaded" if row["llm_offloaded"] else ""]
        note = "; ".join(n for n in notes if n)
        lines.append(f"| {row['gpu']}{f' ({note})' if note else ''} | {row['preset']} | "
                     f"{sum(passes.values())} ({passes['transformer']} + {passes['transformer_2']}) | "
                     f"{row['pass_s']:.1f} | {minutes(row['load_s'])} | {minutes(row['stages_s']['motion'])} | "
                     f"{minutes(other)} | {minutes(row['total_s'])} |")
    lines += ["", "Every figure, its source and how it was derived: model_loaders/rules_data/gpu_costs.json."]
    return "\n".join(lines)


def plan_for(args: argparse.Namespace) -> Any:
    from ...model_loaders.rules import DirectorRequest, RuleDirector
    from ...model_loaders.vocabulary.plan import validate_plan
    from .cli import read_plan

    text = read_plan(args.plan)
    if text is not None:
        return validate_plan(text)
    request = DirectorRequest(sentence=args.sentence, duration_s=args.duration, shots=args.shots, aspect=args.aspect,
                              language=args.language, seed=args.seed, resolution=args.resolution,
                              flow_shift_hero=args.flow_shift_hero, flow_shift_broll=args.flow_shift_broll,
                              ref_weight=args.ref_weight)
    plan, _warnings = RuleDirector().plan(request)
    return plan


def summary_line(plan: Any, gpu: str = "H100") -> str:
    """One line for the Director node: the planned reel on one GPU, both presets."""
    result = estimate(plan, load_costs(), gpus=[gpu])
    totals = {row["preset"]: row["total_s"] for row in result["rows"]}
    return (f"estimate on one {gpu}: quality {minutes(totals['quality'])}, fast {minutes(totals['fast'])} "
            "(cinereel estimate for other GPUs)")


def estimate_main(argv: list[str]) -> int:
    from .cli import EXIT_BAD_INPUT, one_line

    args = estimate_parser().parse_args(argv)
    try:
        costs = load_costs(args.costs)
        speed, knobs = motion_settings(args.set)
        if speed not in (None, "custom", *PRESETS):
            raise ValueError(f"--set motion.speed={speed!r} must be one of quality, fast, custom")
        result = estimate(plan_for(args), costs, args.gpu, speed, knobs, gate=args.gate)
    except (ValueError, OSError) as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(result, ensure_ascii=False) if args.json else table(result))
    return 0
