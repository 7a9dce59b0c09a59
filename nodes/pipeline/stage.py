"""What every stage shares: keyed artifact jobs under one residency, timings, the report.

A stage lists the artifacts it would make as ``Job``s. Jobs whose artifact is
already on disk from the same inputs are skipped; if nothing is left to do,
the model is not even loaded. Otherwise the stage's model is made resident
once and every pending job runs under it (phase-major), with progress and
cancel checks between jobs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ...model_loaders.handles import ModelHandle
from ...model_loaders.residency import RESIDENCY
from .comfy import Progress, check_cancel
from .rundir import RunDir, atomic_write_text, input_key

if TYPE_CHECKING:
    from .reel import Reel

T = TypeVar("T")


class Job(NamedTuple):
    """One artifact: where it goes, the inputs that decide its content, and how to make it."""

    name: str  # logical name in the REEL, e.g. "keyframe:shot_01"
    rel: str  # path relative to the run directory
    inputs: Any  # JSON-able; its hash keys the artifact
    make: Callable[[Any, Path], None]  # make(model, tmp_path) writes the file

    @property
    def key(self) -> str:
        return input_key(self.inputs)


def run_jobs(
    run: RunDir,
    handle: ModelHandle | None,
    jobs: Sequence[Job],
    progress: Progress | None = None,
    on_ready: Callable[[Job], None] | None = None,
    prepare: Prepare | None = None,
) -> tuple[dict[str, str], int]:
    """Make every job's artifact not already current, under one residency of ``handle``.

    Returns ``({name: rel}, number made)``. ``handle=None`` runs jobs with no model. ``on_ready(job)`` is
    called for each artifact once it is on disk (reused ones first), e.g. to show it in the browser.
    ``prepare(model, pending)`` runs once the model is resident, before the first job (the motion stage
    encodes the phase's prompts there).
    """
    pending = [job for job in jobs if not run.is_current(job.rel, job.key)]
    if progress is not None and len(jobs) > len(pending):
        progress.update(len(jobs) - len(pending))
    if on_ready is not None:
        for job in jobs:
            if job not in pending:
                on_ready(job)
    if pending:
        with run.locked():
            if handle is None:
                _run_pending(run, None, pending, progress, on_ready)
            elif (remote := _job_runner.get()) is not None:  # a Ray batch: workers render (ray_batch.py)
                remote(run, handle, pending, progress, prepare)
                if on_ready is not None:
                    for job in pending:
                        on_ready(job)
            else:
                with RESIDENCY.use(handle) as model:
                    if prepare is not None:
                        prepare(model, pending)
                    _run_pending(run, model, pending, progress, on_ready)
    return {job.name: job.rel for job in jobs}, len(pending)


_current_progress: ContextVar[Progress | None] = ContextVar("cinereel_progress", default=None)
_jobs_at_once: ContextVar[int] = ContextVar("cinereel_jobs_at_once", default=1)
# Who runs jobs that need a model, when not this process: runner(run, handle, pending, progress, prepare) makes
# every pending artifact and records it in the run's manifest (ray_batch.py hands them to Ray workers, each of
# which runs ``prepare`` on its resident model before its first job of the hand-out).
Prepare = Callable[[Any, Sequence[Job]], None]
JobRunner = Callable[[RunDir, ModelHandle, Sequence[Job], Progress | None, Prepare | None], None]
_job_runner: ContextVar[JobRunner | None] = ContextVar("cinereel_job_runner", default=None)


@contextmanager
def jobs_run_by(runner: JobRunner) -> Iterator[None]:
    """Inside this block (this thread's context), model jobs go to ``runner`` instead of this process's model."""
    token = _job_runner.set(runner)
    try:
        yield
    finally:
        _job_runner.reset(token)


def step_callback() -> Callable[[int, int], None]:
    """For a backend's per-step callback: moves the running stage's bar and honours cancel."""
    progress = _current_progress.get()
    return progress.step if progress is not None else (lambda done, of: check_cancel())


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13
        return max(1, os.process_cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cores_per_job() -> int:
    """The running job's share of the cores: all of them, or its part when the stage runs jobs side by side
    (``parallel_jobs``). For a job that starts threads of its own (x264): more threads than that share only
    make the jobs take turns, and x264 spends a sixth more CPU on the same clip with three threads than with one."""
    return max(1, usable_cpus() // _jobs_at_once.get())


def _run_pending(run: RunDir, model: Any, pending: Sequence[Job], progress: Progress | None,
                 on_ready: Callable[[Job], None] | None = None) -> None:
    workers = min(len(pending), max(1, int(getattr(model, "parallel_jobs", 1))))
    if workers > 1:
        _run_side_by_side(run, model, pending, progress, on_ready, workers)
        return
    token = _current_progress.set(progress)
    try:
        for job in pending:
            check_cancel()
            run.produce(job.rel, job.inputs, lambda tmp, job=job: job.make(model, tmp))
            if on_ready is not None:
                on_ready(job)
            if progress is not None:
                progress.update()
    finally:
        _current_progress.reset(token)


def _run_side_by_side(run: RunDir, model: Any, pending: Sequence[Job], progress: Progress | None,
                      on_ready: Callable[[Job], None] | None, workers: int) -> None:
    """Jobs ``workers`` at a time, for a model whose renders run outside Python (``parallel_jobs``: the Ken
    Burns backend's ffmpeg encodes). The bar moves per finished job; cancel stops what has not started and
    reaches the running renders through their own cancel checks."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    failed = threading.Event()

    def make(job: Job) -> Job | None:
        if failed.is_set():  # a job failed or was cancelled: start no other
            return None
        _jobs_at_once.set(workers)  # this pool thread's own context
        try:
            check_cancel()
            run.produce(job.rel, job.inputs, lambda tmp: job.make(model, tmp))
        except BaseException:
            failed.set()
            raise
        return job

    with ThreadPoolExecutor(workers, thread_name_prefix="cinereel-job") as pool:
        futures = [pool.submit(make, job) for job in pending]
        try:
            for future in futures:  # in job order, so on_ready sees them as a serial run would
                job = future.result()  # raises the failure, which comes before any job skipped for it
                if job is None:
                    continue
                if on_ready is not None:
                    on_ready(job)
                if progress is not None:
                    progress.update()
        except BaseException:
            failed.set()
            for future in futures:
                future.cancel()
            raise


def pending_items(by_job: Mapping[str, T], pending: Sequence[Job]) -> list[T]:
    """What each pending job renders (a shot, a character), by job name, in job order: for ``prepare``."""
    return [by_job[job.name] for job in pending if job.name in by_job]


def call_rel(artifact_rel: str) -> str:
    """Where a render's call record goes: beside its artifact (``clips/s1.attempt1.call.json``)."""
    return str(Path(artifact_rel).with_suffix(".call.json"))


def record_call(run: RunDir, artifact_rel: str, model: Any, handle: ModelHandle) -> None:
    """Keep what a real renderer was sent (prompt, negative prompt, seed, flow shift, guidance, steps...);
    the preview renderers draw without a model call to record, and a plug-in backend may keep none."""
    last_call = getattr(model, "last_call", None)
    if not handle.family.startswith("preview-") and last_call is not None:
        atomic_write_text(run.path(call_rel(artifact_rel)), json.dumps(last_call(), ensure_ascii=False))


def call_record(run: RunDir, artifact_rel: str | None) -> dict[str, Any] | None:
    """The call record of ``artifact_rel``, or None (a preview render, or an artifact made before records)."""
    path = run.path(call_rel(artifact_rel)) if artifact_rel else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def artifact_key(reel: Reel, name: str) -> str:
    """The input key an earlier stage recorded for artifact ``name``: chains keys across stages."""
    rel = reel.artifacts.get(name)
    if rel is None:
        raise KeyError(f"the REEL has no {name!r}; connect the stage that makes it first")
    entry = reel.run_dir.manifest().get(rel)
    if entry is None:
        raise FileNotFoundError(f"{rel} is listed in the REEL but missing from {reel.run_dir.root}; re-run its stage")
    return entry["key"]


class StageTimer:
    """Measures a stage and records it in the REEL's notes (timings, model loads)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.mark = RESIDENCY.mark()
        self.started = time.perf_counter()

    def notes(self, reel: Reel, **extra: Any) -> dict[str, Any]:
        timings = dict(reel.notes.get("timings", {}))
        timings[self.stage] = round(time.perf_counter() - self.started, 3)
        residency = list(reel.notes.get("residency", [])) + [
            {**{k: v for k, v in entry.items() if k != "key"}, "stage": self.stage}
            for entry in RESIDENCY.log_since(self.mark)
        ]
        return {"timings": timings, "residency": residency, **extra}


def add_warning(reel: Reel, warning: str) -> list[str]:
    warnings = list(reel.notes.get("warnings", []))
    if warning not in warnings:
        warnings.append(warning)
    return warnings


# One invocation: a ComfyUI server's life, or one headless command (the CLI starts a new one).
_invocation = uuid.uuid4().hex[:12]
HISTORY_FIELDS = ("timings", "residency", "model_loads", "stage_seconds_total", "gate", "keyframe_gate", "warnings",
                  "retention")


def new_invocation(invocation: str | None = None) -> str:
    """A new command starts (a fresh id), or this process works for the command ``invocation`` names (the
    headless runner's sound process: its reports are the command's, not an earlier one's)."""
    global _invocation
    _invocation = invocation or uuid.uuid4().hex[:12]
    return _invocation


def current_invocation() -> str:
    return _invocation


def report_history(reel: Reel) -> list[dict[str, Any]]:
    """What earlier invocations on this run folder recorded (loads, evictions, timings, gate attempts): a
    resumed run appends to it, so nothing an earlier invocation did is lost from report.json."""
    path = reel.run_dir.path("report.json")
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(previous, dict):
        return []
    history = [h for h in previous.get("history", []) if isinstance(h, dict)]
    if previous.get("invocation") not in (None, _invocation):
        history.append({"invocation": previous["invocation"],
                        **{k: previous[k] for k in HISTORY_FIELDS if k in previous}})
    return history


def write_report(reel: Reel) -> Path:
    """report.json: what the run made and how (rewritten after every stage; earlier invocations kept
    under ``history``)."""
    notes = dict(reel.notes)
    residency = notes.get("residency", [])
    report = {
        "run_id": reel.run_id,
        "sentence": reel.plan.sentence,
        "language": reel.plan.language,
        "locale": reel.plan.locale,
        "duration_s": reel.plan.duration_s,
        "shots": [s.id for s in reel.plan.shots],
        "artifacts": dict(reel.artifacts),
        "model_loads": sum(1 for e in residency if e.get("event") == "load"),
        **notes,
        "invocation": _invocation,
        "history": report_history(reel),
        "superseded": reel.run_dir.superseded(),
    }
    from .locks import record_kept

    record_kept(reel)
    timings = notes.get("timings", {})
    if timings:
        report["stage_seconds_total"] = round(sum(timings.values()), 3)
        if "gate" in timings:
            report["gate_share_of_wall_time"] = round(timings["gate"] / max(sum(timings.values()), 1e-9), 4)
    return reel.run_dir.write_json("report.json", report)
