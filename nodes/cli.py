"""``cinereel "sentence"``: the pipeline without the UI, for scripts and batches."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .languages import LANGUAGES

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cinereel",
        description="Turn one sentence into a cinematic reel (MP4 with narration and music). "
                    "Uses the weights-free preview backends: runs on any CPU.",
    )
    p.add_argument("sentence", help="one sentence describing the reel, e.g. 'A lone astronaut walks through a "
                                    "neon-lit Tokyo alley at dusk'")
    p.add_argument("--duration", type=float, default=30.0, help="reel length in seconds (default 30)")
    p.add_argument("--shots", type=int, default=6, help="number of shots (default 6)")
    p.add_argument("--aspect", choices=("16:9", "9:16"), default="16:9", help="16:9 is 1280x720, 9:16 is 720x1280")
    p.add_argument("--language", default=None,
                   help=f"narration language, overriding the place in the sentence ({', '.join(LANGUAGES)})")
    p.add_argument("--seed", type=int, default=0, help="seed for the plan and every render (default 0)")
    p.add_argument("--out", default="output", help="output folder; the run goes to <out>/cinereel/<run id>/")
    p.add_argument("--run-id", default=None, help="run folder name; re-using one resumes that run "
                                                  "(default: derived from the inputs)")
    p.add_argument("--plan", type=Path, default=None, help="use this plan JSON file instead of the director's plan")
    p.add_argument("--target-lufs", type=float, default=-18.0,
                   help="integrated loudness of the master (default -18; -14 social, -23 EBU R128)")
    p.add_argument("--plan-only", action="store_true", help="write and print the plan, render nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the reel's path")
    p.add_argument("--benchmark", action="store_true",
                   help="make the reel in a fresh temporary folder (nothing resumed) and print the wall time and "
                        "each stage's share")
    return p


def print_benchmark(stages: list[tuple[str, float]], wall_s: float, process_s: float) -> None:
    print(f"preview reel: {wall_s:.2f} s wall for the pipeline, {process_s:.2f} s for the whole process")
    for name, seconds in stages:
        print(f"  {name:<10} {seconds:6.2f} s  {100 * seconds / wall_s:5.1f} %")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..model_loaders.rules import DirectorRequest
    from .director import direct
    from .pipeline import PipelineOptions, make_reel

    request = DirectorRequest(sentence=args.sentence, duration_s=args.duration, shots=args.shots,
                              aspect=args.aspect, language=args.language, seed=args.seed)
    try:
        request.validate()
        plan_override = args.plan.read_text(encoding="utf-8") if args.plan else None
        if args.plan_only:
            options = PipelineOptions()
            reel = direct(options.handles["llm"], request, args.out, args.run_id, plan_override)
            print(json.dumps(reel.plan.model_dump(mode="json"), indent=2, ensure_ascii=False))
            return 0

        stages: list[tuple[str, float]] = []

        def on_stage(name: str, seconds: float) -> None:
            stages.append((name, seconds))
            if not args.benchmark:
                print(f"  {name:<10} {seconds:6.2f} s", file=sys.stderr)

        out = tempfile.mkdtemp(prefix="cinereel-bench-") if args.benchmark else args.out
        started = time.perf_counter()
        reel = make_reel(request, out, args.run_id, plan_override, PipelineOptions(target_lufs=args.target_lufs),
                         on_stage=on_stage)
        if args.benchmark:
            import psutil

            print_benchmark(stages, time.perf_counter() - started, time.time() - psutil.Process().create_time())
    except (ValueError, FileNotFoundError, NotImplementedError) as exc:
        print(f"cinereel: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("cinereel: cancelled; run the same command again to resume where it stopped", file=sys.stderr)
        return EXIT_CANCELLED
    path = reel.artifact_path("reel")
    if args.json:
        print(json.dumps({"reel": str(path), "run_dir": str(reel.run_dir.root), "run_id": reel.run_id,
                          "language": reel.plan.language}, ensure_ascii=False))
    else:
        print(path)
    return 0
