"""Many reels, phase-major: each model loads once per phase for the whole batch, not once per reel.

A batch renders every reel's plan under one residency of the director, every portrait and keyframe under one
of the keyframe model, every clip under one of the motion model, the critic gate's rounds for all reels
together (one critic load per round, then one keyframe and one motion load for every reel's re-renders),
then narration, music, mix and assembly. The residency manager keeps a model resident while the next reel
asks for the same handle, so walking the reels inside each phase is what makes the loads per batch about
what one reel needs, whatever the number of reels.

The batch file (``read_batch``): one sentence per line; or a JSON object per line (``{"sentence": ...,
"seed": 7, "language": "fr", "duration": 20, "aspect": "9:16", "shots": 4, "resolution": "480p",
"run_id": ..., "plan": "edited.json"}``, every key but the sentence optional); or a folder of plan files.
Blank lines and lines starting with ``#`` are skipped. Every bad line is reported with its line number, all
in one ``BatchError``, before anything loads.

Each reel keeps its own run folder (content-keyed, resumable, locked for the whole batch). A reel that fails
(at the director, or any later phase) is reported and leaves the later phases; the others go on.
``<out>/cinereel/batch-<id>/batch.json`` records each reel's status, share of the wall time and gate result,
and the model loads of every phase.

For another scheduler (``--ray``): ``read_batch`` gives ``BatchItem``s; ``BatchItem.request``,
``run_id`` and ``plan_override`` are what one reel's run takes (``headless.make_reel``); a scheduler returns
a ``BatchResult`` and ``write_batch_json`` records it the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.residency import RESIDENCY
from .comfy import Progress, check_cancel, is_cancel, progress_into
from .preflight import PreflightError
from .rundir import RunDir, atomic_write_text, check_run_id, input_key

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest
    from .headless import PipelineOptions
    from .reel import Reel

# Batch-file key -> the DirectorRequest field it sets and the JSON types it accepts.
REQUEST_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "sentence": ("sentence", (str,)),
    "seed": ("seed", (int,)),
    "language": ("language", (str, type(None))),
    "duration": ("duration_s", (int, float)),
    "aspect": ("aspect", (str,)),
    "shots": ("shots", (int,)),
    "resolution": ("resolution", (str,)),
    "flow_shift_hero": ("flow_shift_hero", (int, float)),
    "flow_shift_broll": ("flow_shift_broll", (int, float)),
    "ref_weight": ("ref_weight", (int, float)),
}
OTHER_KEYS = ("run_id", "plan")
PHASES = ("director", "keyframes", "keyframe_gate", "motion", "gate", "narration", "music", "mix", "assemble")


class BatchError(PreflightError):
    """Every problem of a batch file, each with its line number (or plan file), before anything loads."""


@dataclass(frozen=True)
class BatchItem:
    """One reel of a batch: the request one run would get, where it came from, its run id and plan."""

    source: str  # "reels.txt line 3", or a plan file's name
    request: DirectorRequest
    run_id: str | None = None  # None: derived from the request, as a single run's
    plan_override: str | None = None  # a plan's JSON text, rendered instead of the director's plan

    @property
    def sentence(self) -> str:
        return self.request.sentence


# -- reading a batch -----------------------------------------------------------------------

def default_request(**fields: Any) -> DirectorRequest:
    """What every reel of a batch starts from (the command's flags); a placeholder sentence."""
    from ...model_loaders.rules import DirectorRequest

    return DirectorRequest(sentence=fields.pop("sentence", "(batch)"), **fields)


def read_batch(path: Path | str, defaults: DirectorRequest | None = None) -> list[BatchItem]:
    """The reels of a batch file or plan folder, each request filled in from ``defaults``; raises
    ``BatchError`` naming every bad line at once."""
    path = Path(path)
    defaults = defaults or default_request()
    if path.is_dir():
        items, problems = _read_plan_folder(path, defaults)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise BatchError([f"batch file {path} cannot be read ({reason})"]) from None
        items, problems = parse_lines(text, defaults, path.name, path.parent)
    return _checked(items, problems, str(path))


def read_batch_text(text: str, defaults: DirectorRequest | None = None, name: str = "sentences",
                    base: Path | None = None) -> list[BatchItem]:
    """The reels of a batch given as text (the CineReel Batch node's list): as ``read_batch`` reads a file."""
    items, problems = parse_lines(text, defaults or default_request(), name, base or Path.cwd())
    return _checked(items, problems, name)


def _checked(items: list[BatchItem], problems: list[str], where: str) -> list[BatchItem]:
    problems = problems + _duplicate_runs(items)
    if not items and not problems:
        problems.append(f"{where} holds no reel: write one sentence per line (or a JSON object per line)")
    if problems:
        raise BatchError(problems)
    return items


def parse_lines(text: str, defaults: DirectorRequest, name: str, base: Path) -> tuple[list[BatchItem], list[str]]:
    items, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name} line {number}"
        try:
            item = _json_item(line, where, defaults, base) if line.startswith(("{", "[")) else \
                _sentence_item(line, where, defaults)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        items.append(item)
    return items, problems


def _sentence_item(line: str, where: str, defaults: DirectorRequest) -> BatchItem:
    request = dataclasses.replace(defaults, sentence=line)
    request.validate()
    return BatchItem(where, request)


def _json_item(line: str, where: str, defaults: DirectorRequest, base: Path) -> BatchItem:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError('a JSON line must be one object, like {"sentence": "...", "seed": 3}')
    problems = [_unknown_key(key) for key in data if key not in REQUEST_KEYS and key not in OTHER_KEYS]
    fields = {}
    for key, (name, types) in REQUEST_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{key} must be {_kind(types)}, got {json.dumps(value)}")
        else:
            fields[name] = value
    plan_text, plan_sentence = None, None
    if "plan" in data:
        try:
            plan_text, plan_sentence = _plan_file(data["plan"], base)
        except ValueError as exc:
            problems.append(str(exc))
    if "sentence" not in data and plan_sentence is not None:
        fields["sentence"] = plan_sentence
    elif "sentence" not in data and "plan" not in data:
        problems.append('the "sentence" key is missing')
    run_id = data.get("run_id")
    if run_id is not None:
        try:
            check_run_id(run_id) if isinstance(run_id, str) else problems.append("run_id must be text")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    request = dataclasses.replace(defaults, **fields)
    request.validate()
    return BatchItem(where, request, run_id, plan_text)


def _unknown_key(key: str) -> str:
    known = [*REQUEST_KEYS, *OTHER_KEYS]
    near = difflib.get_close_matches(key, known, n=1)
    return f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(known)}")


def _kind(types: tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", float: "a number", type(None): "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types if not (t is int and float in types)))


def _plan_file(value: Any, base: Path) -> tuple[str, str]:
    """A plan file named in a JSON line (relative to the batch file): its text, validated, and its sentence."""
    from ...model_loaders.vocabulary.plan import validate_plan

    if not isinstance(value, str) or not value.strip():
        raise ValueError("plan must be the path of a plan JSON file")
    path = (base / value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ValueError(f"plan file {path} cannot be read") from None
    plan = validate_plan(text)
    return text, plan.sentence


def _read_plan_folder(folder: Path, defaults: DirectorRequest) -> tuple[list[BatchItem], list[str]]:
    from ...model_loaders.vocabulary.plan import validate_plan

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".json")
    if not files:
        return [], [f"folder {folder} has no plan files (*.json)"]
    items, problems = [], []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            plan = validate_plan(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{path.name}: {' '.join(str(exc).split()) or type(exc).__name__}")
            continue
        items.append(BatchItem(path.name, dataclasses.replace(defaults, sentence=plan.sentence), None, text))
    return items, problems


def _duplicate_runs(items: list[BatchItem]) -> list[str]:
    """Two reels in one run folder would overwrite each other: each pair named."""
    from .director import run_id_for

    first: dict[str, str] = {}
    problems = []
    for item in items:
        run_id = run_id_for(item.request, item.run_id, item.plan_override)
        if run_id in first:
            problems.append(f"{item.source}: the same reel (run {run_id}) as {first[run_id]}; give it another "
                            "seed or run_id, or remove one")
        else:
            first[run_id] = item.source
    return problems


# -- running a batch ----------------------------------------------------------------------

@dataclass
class ReelOutcome:
    """One reel's way through the batch."""

    index: int
    item: BatchItem
    run_id: str
    request: DirectorRequest  # the item's request with the batch's voice engine (sizes the narration)
    reel: Reel | None = None
    failed_at: str | None = None
    error: str | None = None
    trace: str | None = None
    seconds: float = 0.0  # time spent on this reel's own work, all phases

    @property
    def ok(self) -> bool:
        return self.failed_at is None

    @property
    def status(self) -> str:
        return "done" if self.ok and self.reel is not None and "reel" in self.reel.artifacts else \
            ("failed" if not self.ok else "unfinished")

    def fail(self, phase: str, exc: BaseException) -> None:
        self.failed_at = phase
        self.error = " ".join(str(exc).split()) or type(exc).__name__
        self.trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def gate_result(self) -> str:
        gate = self.reel.notes.get("gate") if self.reel is not None else None
        if not gate:
            return "-"
        shots = len(gate["shots"])
        flagged = f", {len(gate['flagged'])} flagged" if gate["flagged"] else ""
        return f"{shots - len(gate['flagged'])}/{shots} passed{flagged}"


@dataclass
class PhaseRecord:
    phase: str
    reels: int
    seconds: float
    loads: list[dict[str, Any]]  # the residency manager's load entries during the phase
    rounds: int | None = None  # the gate's rounds

    def to_json(self) -> dict[str, Any]:
        loads = [{"family": e["family"], "checkpoint": e["checkpoint"], "role": e.get("role"),
                  "seconds": round(e["seconds"], 3)} for e in self.loads]
        record = {"phase": self.phase, "reels": self.reels, "seconds": round(self.seconds, 3),
                  "model_loads": len(loads), "loads": loads}
        return record if self.rounds is None else {**record, "rounds": self.rounds}


@dataclass
class BatchResult:
    batch_id: str
    out_root: Path
    reels: list[ReelOutcome]
    phases: list[PhaseRecord] = field(default_factory=list)
    wall_s: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.out_root / "cinereel" / self.batch_id

    @property
    def failed(self) -> list[ReelOutcome]:
        return [o for o in self.reels if o.status != "done"]

    @property
    def model_loads(self) -> int:
        return sum(len(p.loads) for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        wall = max(self.wall_s, 1e-9)
        reels = [{"reel": o.index, "source": o.item.source, "sentence": o.item.sentence, "run_id": o.run_id,
                  "status": o.status, "failed_at": o.failed_at, "error": o.error, "traceback": o.trace,
                  "seconds": round(o.seconds, 3), "wall_share": round(o.seconds / wall, 4),
                  "gate": o.gate_result(), "run_dir": str(self.out_root / "cinereel" / o.run_id),
                  "reel_mp4": str(o.reel.artifact_path("reel")) if o.status == "done" else None}
                 for o in self.reels]
        gate = next((p for p in self.phases if p.phase == "gate"), None)
        return {"batch_id": self.batch_id, "reels": reels, "done": len(self.reels) - len(self.failed),
                "failed": len(self.failed), "wall_s": round(self.wall_s, 3), "model_loads": self.model_loads,
                "gate_rounds": gate.rounds if gate else 0, "phases": [p.to_json() for p in self.phases],
                "options": self.options}


PhaseCallback = Callable[[str, int, int, float], None]  # phase, reels done, reels in the phase, seconds so far


def run_batch(items: list[BatchItem], out_root: Path | str, options: PipelineOptions | None = None,
              on_phase: PhaseCallback | None = None) -> BatchResult:
    """Render every item's reel phase-major; a failing reel is recorded and the others go on. Writes
    ``batch.json`` and returns the result (cancel, Ctrl-C or SIGTERM still stop the whole batch)."""
    from .director import run_id_for
    from .gate import check_gate_settings
    from .headless import PipelineOptions, reel_stages
    from .voice import request_for_voice

    options = options or PipelineOptions()
    if options.gate:
        check_gate_settings(options.threshold, options.max_retries)
    out_root = Path(out_root).resolve()
    outcomes = []
    for index, item in enumerate(items, 1):
        request = request_for_voice(item.request, options.handles["voice"])
        outcomes.append(ReelOutcome(index, item, run_id_for(request, item.run_id, item.plan_override), request))
    result = BatchResult(batch_id(outcomes, options), out_root, outcomes, options=options_summary(options))
    started = time.perf_counter()
    try:
        with ExitStack() as locks:
            for outcome in outcomes:  # every reel's folder is this batch's until it ends
                run_guarded(outcome, "lock",
                            lambda o: locks.enter_context(RunDir(out_root / "cinereel" / o.run_id).locked()))
            _phase(result, "director", lambda o: plan_reel(o, out_root, options, result.batch_id), on_phase)
            for name, stage in reel_stages(options):
                if name == "gate":
                    gate_phase(result, options, on_phase)
                elif name == "keyframe_gate":
                    _keyframe_gate_phase(result, options, on_phase)
                else:
                    _phase(result, name, lambda o, stage=stage: setattr(o, "reel", stage(o.reel)), on_phase)
    finally:  # a cancelled batch records how far each reel got (its status "unfinished"): the same command resumes
        result.wall_s = time.perf_counter() - started
        write_batch_json(result)
    return result


def plan_reel(outcome: ReelOutcome, out_root: Path, options: PipelineOptions, batch: str) -> None:
    from .director import direct

    item = outcome.item
    reel = direct(options.handles["llm"], outcome.request, out_root, item.run_id, item.plan_override)
    notes = {"batch": batch, **({"settings": options.settings} if options.settings is not None else {})}
    outcome.reel = reel.evolve(notes=notes)


def run_guarded(outcome: ReelOutcome, phase: str, step: Callable[[ReelOutcome], Any]) -> None:
    """Run one reel's step; a failure is that reel's (recorded), a cancel is the batch's (raised)."""
    started = time.perf_counter()
    try:
        step(outcome)
    except Exception as exc:
        if is_cancel(exc):
            raise
        outcome.fail(phase, exc)
    finally:
        outcome.seconds += time.perf_counter() - started


def _phase(result: BatchResult, name: str, step: Callable[[ReelOutcome], Any],
           on_phase: PhaseCallback | None) -> None:
    """One phase across every reel still going: one progress bar, each reel's share of it in turn."""
    active = [o for o in result.reels if o.ok]
    mark, started = RESIDENCY.mark(), time.perf_counter()
    bar = Progress(len(active))
    for done, outcome in enumerate(active):
        check_cancel()
        with progress_into(lambda fraction: bar.step(fraction, 1)):  # this reel's part of the phase's bar
            run_guarded(outcome, name, step)
        bar.update()
        if on_phase is not None:
            on_phase(name, done + 1, len(active), time.perf_counter() - started)
    result.phases.append(PhaseRecord(name, len(active), time.perf_counter() - started, _loads(mark)))


def _keyframe_gate_phase(result: BatchResult, options: PipelineOptions, on_phase: PhaseCallback | None) -> None:
    """The keyframe gate's rounds over every reel at once (one critic load, then one keyframe-model load, per
    round); a reel that fails there is recorded and the others go on without it."""
    from .keyframe_gate import keyframe_gate_reels

    h = options.handles
    active = [o for o in result.reels if o.ok]
    mark, started = RESIDENCY.mark(), time.perf_counter()
    try:
        reels = keyframe_gate_reels([o.reel for o in active], h["llm"], h["keyframes"], options.threshold,
                                    options.max_retries)
    except Exception as exc:
        if is_cancel(exc):
            raise
        # which reel broke the shared rounds is not known: each goes again alone, so only that one fails
        for outcome in active:
            run_guarded(outcome, "keyframe_gate", lambda o: setattr(o, "reel", keyframe_gate_reels(
                [o.reel], h["llm"], h["keyframes"], options.threshold, options.max_retries)[0]))
    else:
        for outcome, reel in zip(active, reels):
            outcome.reel = reel
    seconds = time.perf_counter() - started
    if on_phase is not None:
        on_phase("keyframe_gate", len(active), len(active), seconds)
    result.phases.append(PhaseRecord("keyframe_gate", len(active), seconds, _loads(mark)))


def gate_phase(result: BatchResult, options: PipelineOptions, on_phase: PhaseCallback | None,
               each: Any = None) -> None:
    """The critic gate's rounds over every reel at once (``gate.gate_reels``; ``each``: how a step reaches the
    reels, as there), then each reel's report."""
    from .gate import finish_gate, gate_reels
    from .stage import StageTimer

    active = [o for o in result.reels if o.ok]
    timer, mark, started = StageTimer("gate"), RESIDENCY.mark(), time.perf_counter()
    h = options.handles
    gates = gate_reels([o.reel for o in active], h["llm"], h["keyframes"], h["motion"], options.threshold,
                       options.max_retries, clip_preset=options.clip_preset, technical_gate=options.technical_check,
                       on_error=lambda g, exc: active[g.index].fail("gate", exc), each=each)
    for outcome, gate in zip(active, gates):
        outcome.seconds += gate.seconds
        if gate.error is None:
            run_guarded(outcome, "gate", lambda o, gate=gate: setattr(o, "reel", finish_gate(
                gate, options.threshold, options.max_retries, timer, mark, options.technical_check)))
        if on_phase is not None:
            on_phase("gate", active.index(outcome) + 1, len(active), time.perf_counter() - started)
    rounds = max((g.rounds for g in gates), default=0)
    result.phases.append(PhaseRecord("gate", len(active), time.perf_counter() - started, _loads(mark), rounds))


def _loads(mark: int) -> list[dict[str, Any]]:
    return [e for e in RESIDENCY.log_since(mark) if e["event"] == "load"]


def batch_id(outcomes: list[ReelOutcome], options: PipelineOptions) -> str:
    """Content-keyed like a run: the same reels with the same models and settings, the same batch folder."""
    key = input_key({"runs": [o.run_id for o in outcomes], "options": options_summary(options)})
    return f"batch-{key[:12]}"


def options_summary(options: PipelineOptions) -> dict[str, Any]:
    return {"models": {stage: handle.key for stage, handle in sorted(options.handles.items())},
            "gate": options.gate, "threshold": options.threshold, "max_retries": options.max_retries,
            "technical_check": options.technical_check, "target_lufs": options.target_lufs,
            "true_peak_dbtp": options.true_peak_dbtp, "keep": options.keep}


def write_batch_json(result: BatchResult) -> Path:
    path = result.folder / "batch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(result.to_json(), indent=2, ensure_ascii=False))


def summary_lines(result: BatchResult) -> list[str]:
    """The table printed at the end: reel, status, share of the wall time, gate result, and the run or error."""
    rows = [("REEL", "STATUS", "WALL", "GATE", "RUN / ERROR")]
    wall = max(result.wall_s, 1e-9)
    for o in result.reels:
        what = o.run_id if o.ok else f"{o.failed_at}: {o.error}"
        rows.append((f"{o.index} ({o.item.source})", o.status, f"{100 * o.seconds / wall:.1f}%", o.gate_result(),
                     what))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    loads = ", ".join(f"{p.phase} {len(p.loads)}" for p in result.phases)
    lines.append(f"{len(result.reels) - len(result.failed)} of {len(result.reels)} reel(s) done in "
                 f"{result.wall_s:.1f} s; model loads: {result.model_loads} ({loads})")
    return lines
