"""``cinereel batch FILE``: many reels phase-major on this machine (``batch.py``), or on a Ray cluster with
``--ray ADDRESS`` when the optional Ray module is installed.

The Ray scheduler lives in ``ray_batch.py`` (absent unless installed) and offers
``run_batch_on_ray(items, out_root, options, address, on_phase=None, **ray_flags) -> BatchResult``, the same
contract as ``batch.run_batch`` (``ray_flags``: the ``--ray-*`` flags that were given, ``RAY_FLAGS``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from ...model_loaders.errors import ModelUnavailable

EXIT_SOME_FAILED = 3  # the batch ran, and at least one reel did not finish (batch.json says why)
NOT_FOR_A_BATCH = (("plan", "--plan", "give each reel's plan in the batch file ({\"plan\": \"file.json\"}) or "
                    "pass a folder of plan files"),
                   ("run_id", "--run-id", "give each reel its run_id in the batch file"),
                   ("plan_only", "--plan-only", None), ("benchmark", "--benchmark", None),
                   ("benchmark_rounds", "--benchmark-rounds", None), ("benchmark_warmup", "--benchmark-warmup", None))


def batch_parser() -> argparse.ArgumentParser:
    """The run's flags (every reel gets them) plus the batch file and ``--ray``."""
    from .cli import parser

    p = parser(sentence=False)
    p.prog = "cinereel batch"
    p.description = ("Render many reels phase-major: each model loads once per phase for the whole batch. "
                     "Each reel gets its own run folder; a reel that fails is reported and the others go on.")
    p.epilog = ("FILE: one sentence per line; or one JSON object per line, e.g. {\"sentence\": \"...\", \"seed\": 3, "
                "\"language\": \"fr\", \"duration\": 20, \"aspect\": \"9:16\", \"shots\": 4, \"resolution\": \"480p\", "
                "\"run_id\": \"...\", \"plan\": \"plan.json\"} (keys left out take the flags' values); or a folder "
                "of plan JSON files. Blank lines and lines starting with # are skipped. The summary goes to "
                "<out>/cinereel/batch-<id>/batch.json.")
    for action in p._actions:  # still parsed (a settings file may set them) and refused, but not offered
        if action.dest in {dest for dest, _, _ in NOT_FOR_A_BATCH}:
            action.help = argparse.SUPPRESS
    p.add_argument("file", type=Path, help="the batch file (sentences or JSON lines) or a folder of plan files")
    add_ray_arguments(p)
    return p


# --ray-* flag -> run_batch_on_ray keyword, passed only when given (ray_batch.py: RayOptions)
RAY_FLAGS = {"ray_workers": "workers", "ray_gpus_per_worker": "gpus_per_worker",
             "ray_return_artifacts": "return_artifacts", "ray_restarts": "restarts"}


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("Ray (several GPUs or machines; the Ray extra: pip install \".[ray]\")")
    group.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="render on a Ray cluster: its address ('auto' on a machine of the cluster, or "
                            "HEAD_IP:6379), or 'local' for a Ray instance on this machine. --out must be a folder "
                            "every worker sees at the same path (shared storage)")
    group.add_argument("--ray-workers", type=int, default=None, metavar="N",
                       help="workers to start (default: one per GPU of the cluster; 2 where it has none)")
    group.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                       help="GPUs each worker reserves (default 1 where the cluster has GPUs, else 0)")
    group.add_argument("--ray-return-artifacts", action="store_true",
                       help="workers send each artifact back to this process, which writes it under --out")
    group.add_argument("--ray-restarts", type=int, default=None, metavar="N",
                       help="replacement workers started for workers that die (default: one per worker)")


def ray_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = {key: getattr(args, flag, None) for flag, key in RAY_FLAGS.items()}
    return {key: value for key, value in given.items() if value is not None and value is not False}  # 0 is given


def ray_runner() -> Any:
    """The Ray scheduler, or None when its module is not installed."""
    name = f"{__package__}.ray_batch"  # by name: the module is optional, so no import statement names it
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name).run_batch_on_ray


def batch_main(argv: list[str]) -> int:
    from .cli import EXIT_BAD_INPUT, one_line
    from .preflight import PreflightError
    from .settings import resolve

    try:
        args, resolved = resolve(batch_parser(), argv)
    except PreflightError as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in resolved.ignored:
        print(f"cinereel: note: ignored {note}", file=sys.stderr)
    runner = None
    if args.ray:
        runner = ray_runner()
        if runner is None:
            print("cinereel: error: Ray support is not installed (pip install \".[ray]\"); without --ray the batch "
                  "runs on this machine", file=sys.stderr)
            return EXIT_BAD_INPUT
    from .cli import sigterm_as_interrupt

    with sigterm_as_interrupt():
        return run_batch_command(args, runner)


def checked_batch(args: argparse.Namespace) -> tuple[list, Any]:
    """The batch's reels and the options every reel shares, or one ``PreflightError`` naming every problem
    (bad lines with their numbers, flags, checkpoints, plans a voice cannot speak) before any model loads."""
    from .batch import BatchError, default_request, read_batch
    from .cli import preflight
    from .preflight import PreflightError, plan_problems
    from .voice import engine_of

    problems = [f"{flag} does not apply to a batch" + (f": {fix}" if fix else "")
                for dest, flag, fix in NOT_FOR_A_BATCH if getattr(args, dest, None)]
    fields = {"duration_s": args.duration, "shots": args.shots, "aspect": args.aspect, "language": args.language,
              "seed": args.seed, "resolution": args.resolution, "flow_shift_hero": args.flow_shift_hero,
              "flow_shift_broll": args.flow_shift_broll, "ref_weight": args.ref_weight}
    items, options = [], None
    try:
        options, _ = preflight(argparse.Namespace(**{**vars(args), "plan": None}), default_request(**fields))
    except PreflightError as exc:
        problems += exc.problems
    try:
        items = read_batch(args.file, default_request(**fields))
    except BatchError as exc:
        problems += exc.problems
    if options is not None:
        engine = engine_of(options.handles.get("voice"))
        problems += [f"{item.source}: {problem}" for item in items
                     for problem in plan_problems(item.plan_override, engine)]
    if problems:
        raise PreflightError(problems)
    return items, options


def run_batch_command(args: argparse.Namespace, runner: Any = None) -> int:
    from .batch import run_batch, summary_lines
    from .cli import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_TERMINATED, Terminated, internal_error, one_line, os_problem
    from .rundir import RunInUse, set_lock_policy
    from .stage import new_invocation

    new_invocation()
    set_lock_policy(wait=args.wait, holder="cinereel batch")
    try:
        items, options = checked_batch(args)

        def on_phase(phase: str, done: int, total: int, seconds: float) -> None:
            print(f"  {phase:<10} {done:>4}/{total:<4} {seconds:8.2f} s", file=sys.stderr)

        if runner is not None:
            result = runner(items, args.out, options, args.ray, on_phase=on_phase, **ray_flags(args))
        else:
            result = run_batch(items, args.out, options, on_phase=on_phase)
    except (ValueError, FileNotFoundError, NotImplementedError, ModelUnavailable, RunInUse) as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"cinereel: error: {os_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        print("cinereel: cancelled; run the same command again to resume: every finished artifact is kept",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_CANCELLED
    except Exception:
        return internal_error()
    for outcome in result.reels:
        for warning in (outcome.reel.notes.get("warnings", []) if outcome.reel is not None else []):
            print(f"cinereel: warning: reel {outcome.index}: {warning}", file=sys.stderr)
    if args.json:
        summary = result.to_json()
        print(json.dumps({**summary, "batch_json": str(result.folder / "batch.json"),
                          "reels": [{k: v for k, v in r.items() if k != "traceback"} for r in summary["reels"]]},
                         ensure_ascii=False))
    else:
        print("\n".join(summary_lines(result)))
        print(result.folder / "batch.json")
    return EXIT_SOME_FAILED if result.failed else 0
