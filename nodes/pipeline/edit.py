"""``cinereel edit RUN`` and ``cinereel rerender RUN SHOT``: change a finished run, re-render only what changed.

Both render with the run's recorded settings (report.json ``settings``: backends, loader options, gate,
loudness...) into the same run folder, with the edited plan as its ``--plan``; the content-keyed run folder
re-renders exactly the artifacts whose inputs changed (``rundir.py``), locked shots keep theirs (``locks.py``).

- ``edit`` opens the run's plan.json in ``$VISUAL``/``$EDITOR``, or prints it when standard output is not a
  terminal or with ``--print``, or reads the edited plan from ``--plan FILE`` (``-``: standard input). An edit
  that breaks a rule is refused with every problem named, before anything renders.
- ``rerender`` gives one shot a new seed, derived from its seed and how many times it was re-rendered
  (``rerenders.json`` records each), so it makes exactly that shot's keyframe and clip again, then the
  assembly (narration and music do not depend on a shot's seed; the mix of unchanged audio is reused).

When an edit changes the first shot's seed (a re-render of it, a reorder), the plan's ``reel_seed`` is pinned
to the old value: the portraits and the music bed belong to the whole reel and stay as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EDIT_COMMANDS = ("edit", "rerender")
EDITED_PLAN = "edited_plan.json"
RERENDERS = "rerenders.json"
MAX_SEED = 2**63 - 1


def edit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cinereel", description="Edit a run's plan and re-render what changed, or "
                                                             "re-render one shot with a new seed.")
    sub = p.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="open the run's plan in $EDITOR (or print it), then re-render what the edit "
                                       "changed")
    rerender = sub.add_parser("rerender", help="re-render one shot (its keyframe and clip) with a new seed, then "
                                               "the assembly")
    for command in (edit, rerender):
        command.add_argument("run", help="a run id under --out, or a run folder")
    rerender.add_argument("shot", help="the shot's id, e.g. shot-03 (shot_03 is read the same)")
    edit.add_argument("--plan", default=None, metavar="FILE",
                      help="take the edited plan from FILE ('-': standard input) instead of opening an editor")
    edit.add_argument("--print", action="store_true", help="print the run's plan and stop (also when standard "
                                                           "output is not a terminal and no --plan is given)")
    for command in (edit, rerender):
        command.add_argument("--out", default="output", help="output folder holding cinereel/<run id>/ "
                                                             "(default: output)")
        command.add_argument("--wait", action="store_true", help="wait for another process that holds the run")
        command.add_argument("--json", action="store_true", help="print a JSON summary instead of the reel's path")
    return p


# -- the run and its recorded settings ----------------------------------------------------

def find_run(run: str, out: str) -> Path:
    """The run folder named by ``run``: a folder holding plan.json, else a run id under ``out``/cinereel/."""
    from .rundir import check_run_id

    as_path = Path(run).expanduser()
    if (as_path / "plan.json").is_file():
        return as_path.resolve()
    root = Path(out).resolve() / "cinereel" / check_run_id(run)
    if not (root / "plan.json").is_file():
        raise ValueError(f"no run {run!r}: neither a run folder nor a run id under {root.parent} "
                         "('cinereel runs --out DIR' lists them)")
    return root


def read_report(root: Path) -> dict[str, Any]:
    try:
        report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def recorded_args(root: Path, plan_file: Path, wait: bool, as_json: bool) -> argparse.Namespace:
    """The CLI arguments the run was made with (its report's ``settings``), pointed at ``plan_file`` and the run
    folder. A run without recorded settings (made in ComfyUI) gets the defaults, with a note."""
    from .cli import parser
    from .settings import Resolved, resolve, settings

    report = read_report(root)
    sentence = report.get("sentence") or json.loads((root / "plan.json").read_text(encoding="utf-8"))["sentence"]
    recorded = (report.get("settings") or {}).get("values") or {}
    args, resolved = resolve(parser(), [sentence], env={})
    if recorded:
        values = {name: recorded[name]["value"] if name in recorded else resolved.values[name] for name in settings()}
        sources = {name: recorded[name]["source"] if name in recorded else "default" for name in settings()}
        args = Resolved(values, sources, dict(sources), None, []).namespace(argparse.Namespace(set=[]))
        args.loader_options = {stage: {} for stage in args.loader_options}
        for name, setting in settings().items():  # every loader option the run set, however it was set
            if setting.loader_option and sources[name] != "default":
                args.loader_options[setting.section][setting.key] = values[name]
        args.sentence = sentence
    else:
        print("cinereel: note: the run has no recorded settings (made in ComfyUI?); rendering with the defaults "
              "(the preview backends)", file=sys.stderr)
    args.plan, args.run_id, args.out = plan_file, root.name, str(root.parent.parent)
    args.plan_only = args.benchmark = False
    args.wait, args.json = wait, as_json
    return args


def voice_engine(args: argparse.Namespace) -> str | None:
    from .cli import handles_from_args
    from .preflight import PreflightError
    from .voice import engine_of

    try:
        return engine_of(handles_from_args(args)["voice"])
    except PreflightError:
        return None  # the run's own preflight names the problem


# -- plan changes ------------------------------------------------------------------------

def rerender_seed(seed: int, count: int) -> int:
    """The seed of a shot's ``count``-th re-render (1-based), from its seed before the first one."""
    digest = hashlib.blake2b(f"cinereel-rerender:{seed}:{count}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & MAX_SEED


def shot_index(plan: dict[str, Any], shot_id: str) -> int:
    """Where ``shot_id`` is in the plan; ``shot_03`` and ``shot-03`` name the same shot."""
    ids = [s["id"] for s in plan["shots"]]
    for candidate in (shot_id, shot_id.replace("_", "-"), shot_id.replace("-", "_")):
        if candidate in ids:
            return ids.index(candidate)
    raise ValueError(f"the run has no shot {shot_id!r}; its shots are {', '.join(ids)}")


def record_rerender(root: Path, shot_id: str, old_seed: int) -> tuple[int, list[dict[str, Any]]]:
    """The new seed of ``shot_id`` and the updated record of every re-render of this run."""
    from .rundir import atomic_write_text

    try:
        log = json.loads((root / RERENDERS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log = []
    earlier = [r for r in log if r.get("shot") == shot_id]
    base = earlier[0]["from_seed"] if earlier else old_seed
    seed = rerender_seed(base, len(earlier) + 1)
    log.append({"shot": shot_id, "count": len(earlier) + 1, "from_seed": base, "previous_seed": old_seed,
                "seed": seed, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write_text(root / RERENDERS, json.dumps(log, indent=1))
    return seed, log


# -- the commands --------------------------------------------------------------------------

def read_edited(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--plan {source} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})") \
            from None


def open_in_editor(text: str) -> str:
    """``text`` as the user left it in ``$VISUAL`` / ``$EDITOR`` (vi when neither is set)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="cinereel-edit-") as folder:
        path = Path(folder) / "plan.json"
        path.write_text(text, encoding="utf-8")
        done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        if done.returncode != 0:
            raise ValueError(f"the editor ({editor}) exited with status {done.returncode}; nothing was changed")
        return path.read_text(encoding="utf-8")


def render_edited(root: Path, plan: dict[str, Any], args: argparse.Namespace) -> int:
    """Write the edited plan into the run folder and render the run with it."""
    from .cli import run
    from .rundir import atomic_write_text

    atomic_write_text(root / EDITED_PLAN, json.dumps(plan, indent=2, ensure_ascii=False))
    return run(args)


def edit(parsed: argparse.Namespace) -> int:
    from .plan_edits import PlanEditError, check_plan_edits, pin_reel_seed

    root = find_run(parsed.run, parsed.out)
    current = (root / "plan.json").read_text(encoding="utf-8")
    if parsed.plan is None and (parsed.print or not sys.stdout.isatty()):
        print(current.rstrip())
        return 0
    text = read_edited(parsed.plan) if parsed.plan is not None else open_in_editor(current)
    args = recorded_args(root, root / EDITED_PLAN, parsed.wait, parsed.json)
    try:
        check_plan_edits(text, voice_engine(args))
    except PlanEditError as exc:
        raise ValueError(f"{exc}; nothing was rendered") from None
    old, new = json.loads(current), json.loads(text)
    if new == old:
        print("cinereel: the plan is unchanged; nothing to render", file=sys.stderr)
    return render_edited(root, pin_reel_seed(old, new), args)


def rerender(parsed: argparse.Namespace) -> int:
    from .plan_edits import pin_reel_seed

    root = find_run(parsed.run, parsed.out)
    plan = json.loads((root / "plan.json").read_text(encoding="utf-8"))
    index = shot_index(plan, parsed.shot)
    shot = plan["shots"][index]
    if shot.get("locked"):
        raise ValueError(f"{shot['id']} is locked: unlock it ('cinereel edit {parsed.run}', \"locked\": false) "
                         "to re-render it")
    args = recorded_args(root, root / EDITED_PLAN, parsed.wait, parsed.json)
    seed, _ = record_rerender(root, shot["id"], shot["seed"])
    print(f"cinereel: re-rendering {shot['id']} with seed {seed} (was {shot['seed']})", file=sys.stderr)
    shots = [dict(s, seed=seed) if i == index else s for i, s in enumerate(plan["shots"])]
    return render_edited(root, pin_reel_seed(plan, {**plan, "shots": shots}), args)


def edit_main(argv: list[str]) -> int:
    """``cinereel edit RUN`` and ``cinereel rerender RUN SHOT``."""
    from .cli import EXIT_BAD_INPUT, one_line

    parsed = edit_parser().parse_args(argv)
    try:
        return edit(parsed) if parsed.command == "edit" else rerender(parsed)
    except (ValueError, OSError) as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
