"""``cinereel "sentence"``: the pipeline without the UI, for scripts and batches."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ...model_loaders.errors import ModelUnavailable
from ...model_loaders.vocabulary.frames import ASPECTS, RESOLUTIONS
from ...model_loaders.vocabulary.languages import LANGUAGES

if TYPE_CHECKING:
    from .headless import PipelineOptions

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report a process ended by it
EXIT_BUG = 1


def parser(sentence: bool = True) -> argparse.ArgumentParser:
    """The run's options; ``sentence=False`` for ``cinereel config show``, which takes the same flags."""
    p = argparse.ArgumentParser(
        prog="cinereel",
        description="Turn one sentence into a cinematic reel (MP4 with narration and music). "
                    "Uses the weights-free preview backends: runs on any CPU.",
        epilog="Run folders: 'cinereel runs [--out DIR]' lists them; 'cinereel clean --older-than 7d [--out DIR]' "
               "removes old ones; 'cinereel edit RUN' edits a run's plan and re-renders what changed; 'cinereel "
               "rerender RUN SHOT' re-renders one shot with a new seed. Settings file: 'cinereel config init' writes "
               "one, 'cinereel config show' prints what is in effect. Many reels: 'cinereel batch FILE' (see "
               "'cinereel batch --help').",
    )
    if sentence:
        p.add_argument("sentence", help="one sentence describing the reel, e.g. 'A lone astronaut walks through a "
                                        "neon-lit Tokyo alley at dusk'")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="a settings file (TOML, or YAML with PyYAML) holding any option below, grouped per stage; "
                        "flags override it, CINEREEL_<SECTION>_<KEY> environment variables sit between "
                        "(default: $CINEREEL_CONFIG)")
    p.add_argument("--duration", type=float, default=30.0, help="reel length in seconds (default 30)")
    p.add_argument("--shots", type=int, default=6, help="number of shots (default 6)")
    p.add_argument("--aspect", choices=ASPECTS, default="16:9", help="16:9 is 1280x720, 9:16 is 720x1280 "
                   "(at 720p)")
    p.add_argument("--resolution", choices=tuple(RESOLUTIONS), default="720p",
                   help="frame size: 720p (1280x720) or 480p (832x480, about 2.3x faster to render)")
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
    p.add_argument("--wait", action="store_true",
                   help="if another process is working on the same run folder, wait for it to finish instead of "
                        "stopping with an error")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the reel's path")
    for stage, what in (("llm", "director and critic"), ("keyframes", "keyframe model"), ("motion", "motion model"),
                        ("voice", "voice"), ("music", "music model")):
        p.add_argument(f"--{stage}", default="preview", metavar="CHECKPOINT",
                       help=f"{what}: 'preview' (default), a hub id or a checkpoint folder"
                            + (", or 'openai' for an OpenAI-compatible server" if stage == "llm" else ""))
    p.add_argument("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                   help="a loader option, e.g. --set motion.steps=30 --set llm.base_url=http://127.0.0.1:8000/v1 "
                        "(repeatable; values are JSON where they parse)")
    p.add_argument("--flow-shift-hero", type=float, default=5.0,
                   help="flow shift every hero shot starts with (default 5; never above 8)")
    p.add_argument("--flow-shift-broll", type=float, default=8.0,
                   help="flow shift every b-roll and establishing shot starts with (default 8, the cap)")
    p.add_argument("--ref-weight", type=float, default=0.75,
                   help="character reference strength every shot starts with, 0 to 1 (default 0.75)")
    p.add_argument("--allow-download", action="store_true",
                   help="download a hub checkpoint that is not in the Hugging Face cache (tens of GB); without "
                        "it a missing checkpoint stops the run at once with the command that fetches it")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="weight precision of the real models (default bfloat16)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu or mps")
    p.add_argument("--gate", action="store_true",
                   help="run the critic gate after the motion stage (see --threshold, --max-retries)")
    p.add_argument("--threshold", type=float, default=7.0,
                   help="with --gate: a clip passes when the mean of its four critic scores (1-10) reaches this "
                        "(default 7)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="with --gate: re-renders allowed per shot after the first attempt (default 3)")
    p.add_argument("--no-technical-check", dest="technical_check", action="store_false",
                   help="with --gate: let the critic judge black, blank, still or flickering clips too, instead of "
                        "failing them at once (for deliberately dark or still shots)")
    p.add_argument("--keyframe-gate", action=argparse.BooleanOptionalAction, default=None,
                   help="the critic judges every keyframe before any clip is animated and redraws the ones that "
                        "fail on an image label, with --threshold and --max-retries (default: on with --gate and a "
                        "real critic, off with the preview critic)")
    p.add_argument("--keep", choices=("all", "best", "final"), default="all",
                   help="what stays in the run folder once the reel is made: all (default: every attempt), best "
                        "(the reel, each shot's chosen attempt and what resuming needs; other attempts and "
                        "superseded/ are removed), final (reel.mp4, reel.srt and report.json only)")
    p.add_argument("--benchmark", action="store_true",
                   help="make the reel in a fresh temporary folder (nothing resumed) and print the wall time and "
                        "each stage's share, model loads and evictions, each Wan2.2 expert's forward passes per "
                        "clip, and a plain x264 encode of as many frames beside it (with --json: one JSON object); "
                        "in rounds, reporting the median round")
    p.add_argument("--benchmark-rounds", type=int, default=None, metavar="N",
                   help="with --benchmark: measured rounds, each a reel and a plain encode (default: 3 when no "
                        "backend holds weights, else 1)")
    p.add_argument("--benchmark-warmup", type=int, default=None, metavar="N",
                   help="with --benchmark: rounds made first and not counted, so the libraries are read from disk "
                        "before the clock matters (default: 1 when no backend holds weights, else 0)")
    return p


def internal_error() -> int:
    """An exception no check foresaw: its traceback, what to do, and exit status 1 (work on disk is kept)."""
    traceback.print_exc()
    print("cinereel: internal error: this is a bug in CineReel, please report it with the traceback above; "
          "everything already made is kept, and the same command resumes", file=sys.stderr)
    return EXIT_BUG


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def os_problem(exc: OSError) -> str:
    """What went wrong with a file or folder, and what to do, in one line."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}; free some space and run the same command again to resume"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; choose another --out folder"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"a file stands where a folder is needed{where}; choose another --out folder"
    return one_line(exc)


def print_warnings(reel) -> None:
    """What the run degraded on (a language fallback, an unjudged clip...), on standard error as well as in
    report.json."""
    for warning in reel.notes.get("warnings", []):
        print(f"cinereel: warning: {warning}", file=sys.stderr)


# Loader settings every stage has (keyword arguments of make_handle, which holds their defaults).
HANDLE_SETTINGS = ("residency", "unload_comfy_models")


def handles_from_args(args: argparse.Namespace) -> dict:
    """The model handle of every stage from --llm ... --music and --set; raises ``PreflightError`` naming
    every problem (an unknown option, a checkpoint that is neither a hub id nor a folder) at once."""
    from .backends import STAGES, backend_for_checkpoint, make_handle, without_defaults
    from .preflight import PreflightError

    problems: list[str] = []
    from_settings = getattr(args, "loader_options", {})  # the settings file and CINEREEL_* variables
    options: dict[str, dict] = {stage: dict(from_settings.get(stage, {})) for stage in STAGES}
    for item in args.set:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or stage not in STAGES:
            problems.append(f"--set {item!r} must look like STAGE.OPTION=VALUE with STAGE one of "
                            f"{', '.join(STAGES)}")
            continue
        known = [option for option, _ in STAGES[stage].options] + [*HANDLE_SETTINGS]
        if name not in known:
            problems.append(f"--set {item!r}: {stage} has no option {name!r}; it has: {', '.join(known)}")
            continue
        try:
            options[stage][name] = json.loads(raw)
        except json.JSONDecodeError:
            options[stage][name] = raw
    handles = {}
    for stage in STAGES:
        try:
            chosen = without_defaults(stage, options[stage])  # written-out defaults key as left out
            settings = {"allow_download": True, **chosen} if args.allow_download else chosen
            handles[stage] = make_handle(stage, backend_for_checkpoint(stage, getattr(args, stage)), args.dtype,
                                         args.device, **settings)
        except PreflightError as exc:
            problems += exc.problems
        except (ValueError, FileNotFoundError, NotImplementedError) as exc:
            problems.append(str(exc))
    if problems:
        raise PreflightError(problems)
    return handles


def read_plan(path: Path | None) -> str | None:
    """The text of --plan; a path that is not a readable UTF-8 file is a one-line error."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ValueError(f"--plan {path} is a folder; give the plan's JSON file (for example its plan.json)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"--plan {path} cannot be read ({reason})") from None
    if not text.strip():
        raise ValueError(f"--plan {path} is empty; give the plan's JSON (for example an edited plan.json)")
    return text


def preflight(args: argparse.Namespace, request) -> tuple[PipelineOptions, str | None]:
    """Everything the run needs, checked before any model loads: all problems in one ``PreflightError``."""
    from ...model_loaders.vocabulary.plan import validate_plan
    from .headless import PipelineOptions
    from .preflight import PreflightError, checkpoint_problems, plan_problems, settings_problems
    from .voice import engine_of

    problems: list[str] = []
    handles: dict = {}
    try:
        handles = handles_from_args(args)
    except PreflightError as exc:
        problems += exc.problems
    plan_override = None
    try:
        plan_override = read_plan(args.plan)
        if plan_override is not None and "voice" not in handles:
            validate_plan(plan_override)  # its narration is checked once the voice is known
    except ValueError as exc:
        problems.append(str(exc))
    if "voice" in handles:
        problems += plan_problems(plan_override, engine_of(handles["voice"]))
    options = PipelineOptions(handles=handles, target_lufs=args.target_lufs, gate=args.gate,
                              technical_check=args.technical_check, keyframe_gate=args.keyframe_gate,
                              threshold=args.threshold,
                              max_retries=args.max_retries, keep=args.keep,
                              settings=settings.report() if (settings := getattr(args, "settings", None)) else None)
    problems += settings_problems(request, options)
    problems += benchmark_problems(args)
    problems += checkpoint_problems({stage: handle for stage, handle in handles.items()
                                     if not args.plan_only or stage == "llm"})
    if problems:
        raise PreflightError(problems)
    return options, plan_override


def benchmark_problems(args: argparse.Namespace) -> list[str]:
    rounds, warmup = getattr(args, "benchmark_rounds", None), getattr(args, "benchmark_warmup", None)
    problems = [f"{flag} {value} only applies with --benchmark" for flag, value in
                (("--benchmark-rounds", rounds), ("--benchmark-warmup", warmup))
                if value is not None and not getattr(args, "benchmark", False)]
    if rounds is not None and rounds < 1:
        problems.append(f"--benchmark-rounds must be at least 1, got {rounds}")
    if warmup is not None and warmup < 0:
        problems.append(f"--benchmark-warmup must be 0 or more, got {warmup}")
    return problems


class Terminated(KeyboardInterrupt):
    """SIGTERM: stopped like Ctrl-C (the same clean-up), reported with its own exit status."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes Ctrl-C's path while the command runs: atomic writes drop their temporary files and
    model workers are stopped; the previous handler comes back afterwards."""
    import signal
    import threading

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # signal handlers live on the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in RUN_COMMANDS:  # cinereel runs / cinereel clean: the run folders, no reel
        return runs_main(argv)
    if argv and argv[0] == "batch":  # cinereel batch FILE: many reels, phase-major (batch_cli.py)
        from .batch_cli import batch_main

        return batch_main(argv[1:])
    if argv and argv[0] in ("edit", "rerender"):  # cinereel edit RUN / rerender RUN SHOT (edit.py)
        from .edit import edit_main

        return edit_main(argv)
    if argv and argv[0] == "config":  # cinereel config init / show: the settings file
        from .settings import config_main

        return config_main(argv[1:])
    if argv and argv[0] == "estimate":  # cinereel estimate: the planned reel's GPU time, on paper
        from .estimate import estimate_main

        return estimate_main(argv[1:])
    from .preflight import PreflightError
    from .settings import resolve

    try:
        args, resolved = resolve(parser(), argv)  # flags > CINEREEL_* > --config FILE > defaults
    except PreflightError as exc:  # an unknown key, a value of the wrong type: before anything loads
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in resolved.ignored:
        print(f"cinereel: note: ignored {note}", file=sys.stderr)
    args.command_line = argv  # a benchmark's rounds run it again
    with sigterm_as_interrupt():
        return run(args)


def with_settings(reel, options: PipelineOptions):
    """The REEL with the run's effective settings in its notes, and report.json rewritten to say them."""
    from .stage import write_report

    if options.settings is None:
        return reel
    reel = reel.evolve(notes={"settings": options.settings})
    write_report(reel)
    return reel


def run(args: argparse.Namespace) -> int:
    from ...model_loaders.rules import DirectorRequest
    from .director import direct
    from .headless import make_reel
    from .rundir import RunInUse, set_lock_policy
    from .stage import new_invocation
    from .voice import request_for_voice

    new_invocation()  # report.json keeps what earlier commands on the same run folder recorded
    set_lock_policy(wait=args.wait, holder="cinereel CLI")

    request = DirectorRequest(sentence=args.sentence, duration_s=args.duration, shots=args.shots,
                              aspect=args.aspect, language=args.language, seed=args.seed,
                              resolution=args.resolution, flow_shift_hero=args.flow_shift_hero,
                              flow_shift_broll=args.flow_shift_broll, ref_weight=args.ref_weight)
    try:
        options, plan_override = preflight(args, request)  # every setting, before anything loads
        request = request_for_voice(request, options.handles["voice"])  # narration sized to that voice
        if args.plan_only:
            reel = with_settings(direct(options.handles["llm"], request, args.out, args.run_id, plan_override),
                                 options)
            print(json.dumps(reel.plan.model_dump(mode="json"), indent=2, ensure_ascii=False))
            print_warnings(reel)
            return 0

        if args.benchmark:  # a reel in a fresh temporary folder beside a plain x264 encode, in rounds
            from .benchmark import benchmark_here, benchmark_in_rounds, round_counts

            warm_up, rounds = round_counts(args.benchmark_rounds, args.benchmark_warmup, options.handles)
            if warm_up + rounds > 1:  # each round a command of its own
                return benchmark_in_rounds(args.command_line, warm_up, rounds, as_json=args.json)
            reel = benchmark_here(lambda out, on_stage: make_reel(request, out, args.run_id, plan_override, options,
                                                                  on_stage=on_stage),
                                  options.handles, options.crf, options.clip_preset, as_json=args.json)
            print_warnings(reel)
            return 0

        def on_stage(name: str, seconds: float) -> None:
            print(f"  {name:<14} {seconds:6.2f} s", file=sys.stderr)  # "delivery_audio", "keyframe_gate"

        reel = make_reel(request, args.out, args.run_id, plan_override, options, on_stage=on_stage)
    except (ValueError, FileNotFoundError, NotImplementedError, ModelUnavailable, RunInUse) as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # an --out that is a file or not writable, a full disk...
        print(f"cinereel: error: {os_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        print("cinereel: cancelled; " + ("a benchmark's reels are made in temporary folders and removed"
                                         if args.benchmark else "run the same command again to resume where it "
                                         "stopped"), file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_CANCELLED
    except Exception:
        return internal_error()
    print_warnings(reel)
    path = reel.artifact_path("reel")
    sheet = reel.run_dir.path("contact_sheet.png")
    sheet = sheet if sheet.is_file() else None
    if args.json:
        print(json.dumps({"reel": str(path), "run_dir": str(reel.run_dir.root), "run_id": reel.run_id,
                          "language": reel.plan.language, "contact_sheet": str(sheet) if sheet else None},
                         ensure_ascii=False))
    else:
        if sheet:  # standard output stays the reel's path alone, for scripts
            print(f"cinereel: contact sheet: {sheet}", file=sys.stderr)
        print(path)
    return 0


# -- cinereel runs / cinereel clean ----------------------------------------------------

RUN_COMMANDS = ("runs", "clean")


def runs_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cinereel", description="List the run folders under an output folder, or "
                                                             "remove old ones.")
    sub = p.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs", help="list runs: run id, size, last change, whether it has a reel")
    clean = sub.add_parser("clean", help="remove whole runs unchanged for longer than --older-than (never one "
                                         "that a running cinereel holds)")
    for command in (runs, clean):
        command.add_argument("--out", default="output", help="output folder; runs are in <out>/cinereel/")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clean.add_argument("--older-than", required=True, metavar="AGE",
                       help="remove runs whose newest file is older than this: 30m, 12h, 7d, 2w")
    clean.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    return p


def run_row(run) -> dict:
    return {"run_id": run.run_id, "path": str(run.path), "bytes": run.size,
            "changed": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.changed)), "reel": run.has_reel,
            "locked": run.locked}


def print_runs(runs: list, as_json: bool) -> None:
    from .retention import human_size

    if as_json:
        print(json.dumps([run_row(run) for run in runs], ensure_ascii=False))
        return
    width = max([len("RUN ID"), *(len(run.run_id) for run in runs)])
    print(f"{'RUN ID':<{width}}  {'SIZE':>9}  {'CHANGED':<16}  REEL")
    for run in runs:
        row = run_row(run)
        print(f"{run.run_id:<{width}}  {human_size(run.size):>9}  {row['changed']:<16}  "
              f"{'yes' if run.has_reel else 'no'}{'  (in use)' if run.locked else ''}")


def runs_main(argv: list[str]) -> int:
    """``cinereel runs`` and ``cinereel clean --older-than 7d``."""
    from .retention import clean_runs, human_size, list_runs, parse_age, runs_folder

    args = runs_parser().parse_args(argv)
    try:
        if args.command == "runs":
            print_runs(list_runs(args.out), args.json)
            return 0
        cleaned = clean_runs(args.out, parse_age(args.older_than), dry_run=args.dry_run)
    except ValueError as exc:
        print(f"cinereel: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"cinereel: error: {os_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"removed": [run_row(r) for r in cleaned.removed], "dry_run": args.dry_run,
                          "skipped_in_use": [run_row(r) for r in cleaned.skipped_locked]}, ensure_ascii=False))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for run in cleaned.removed:
        print(f"{verb} {run.run_id} ({human_size(run.size)})")
    for run in cleaned.skipped_locked:
        print(f"cinereel: skipped {run.run_id}: a running cinereel holds it", file=sys.stderr)
    total = sum(run.size for run in cleaned.removed)
    print(f"{verb} {len(cleaned.removed)} run(s), {human_size(total)}, from {runs_folder(args.out)}")
    return 0
