"""The Ray workers of a batch and the one queue they pull jobs from (``ray_batch.py`` drives it).

Every worker is a long-lived actor (``ray_worker.py``) with its own residency manager. A stage thread on the
driver hands the jobs its stage would run in-process to ``Pool.run_jobs`` (``stage.set_job_runner``); an idle
worker takes the next ready job, preferring jobs for the model it already holds, so each worker loads each
phase's model once and no worker waits while another finishes (work stealing by shot). A job that reads
another job of the same hand-out (a keyframe its portraits, the narration track its lines) waits for it.

A worker writes its artifact under a temporary name beside its place in the run folder (shared storage), or
sends it back (``return_artifacts``); the driver, holding the run lock, moves it into place and records its
content key. A worker that dies costs the job it was rendering: that job goes back to the front of the queue
for another worker, a replacement starts while ``restarts`` allow, and ``reschedules`` records it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .rundir import RunDir, atomic_write
from .stage import Job, Prepare

if TYPE_CHECKING:
    from .comfy import Progress


# -- on a worker --------------------------------------------------------------------------

def staged_path(target: Path) -> Path:
    """Where a worker writes ``target`` before the driver moves it into place: a temporary name the run folder's
    clean-up (``rundir.remove_partials``) removes if the driver never does."""
    return target.parent / f".{target.stem}.{secrets.token_hex(6)}.partial{target.suffix}"


@dataclass(frozen=True)
class HandOut:
    """The jobs one stage thread handed out together, and what its stage runs on the model before the first of
    them (``run_jobs``'s ``prepare``: the motion stage encodes every shot's prompt once, then parks the text
    encoder). A worker runs it on its resident model before its first job of the hand-out."""

    token: str
    prepare: Prepare
    jobs: tuple[Job, ...]


# Per resident model (weakly held: an evicted model takes its entry along), the hand-outs prepared on it.
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def prepare_once(model: Any, hand_out: HandOut | None) -> None:
    """Run ``hand_out.prepare`` on ``model`` unless this model has already run it."""
    if hand_out is None:
        return
    try:
        done = _prepared.setdefault(model, set())
    except TypeError:  # a model that cannot be weakly referenced is prepared before each job
        done = set()
    if hand_out.token not in done:
        hand_out.prepare(model, hand_out.jobs)
        done.add(hand_out.token)


def render_here(job: Job, handle: ModelHandle, run_root: str, return_artifact: bool,
                hand_out: HandOut | None = None) -> dict[str, Any]:
    """Run on a worker: make ``job``'s artifact under this process's residency of ``handle``, the hand-out
    prepared on the model first (``prepare_once``)."""
    from ...model_loaders.residency import RESIDENCY

    mark = RESIDENCY.mark()
    started = time.perf_counter()
    target = RunDir(run_root).path(job.rel)
    with ExitStack() as scratch:
        if return_artifact:  # written on this machine, sent back to the driver, which writes it under --out
            target = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="cinereel-ray-"))) / target.name
        staged = staged_path(target)
        with RESIDENCY.use(handle) as model:
            prepare_once(model, hand_out)
            atomic_write(staged, lambda tmp: job.make(model, tmp))
        loads = [{"family": e["family"], "checkpoint": e["checkpoint"], "role": e["role"], "seconds": e["seconds"]}
                 for e in RESIDENCY.log_since(mark) if e["event"] == "load"]
        result: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 3), "pid": os.getpid(),
                                  "loads": loads}
        if return_artifact:
            result["data"] = staged.read_bytes()
        else:
            result["staged"] = str(staged)
    return result


# -- the scheduler on the driver -----------------------------------------------------------

@dataclass(eq=False)
class Task:
    job: Job
    handle: ModelHandle
    run: RunDir
    phase: str
    needs: set[str]  # keys of jobs in the same hand-out that this one reads
    hand_out: HandOut | None = None
    future: Future = field(default_factory=Future)
    dependents: list[Task] = field(default_factory=list)
    rescheduled_from: dict[str, Any] | None = None


@dataclass(eq=False)
class Slot:
    name: str
    actor: Any
    resident: str | None = None  # key of the model the worker holds
    task: Task | None = None
    ref: Any = None
    alive: bool = True


WORKER_START_TIMEOUT_S = 600  # importing the pack and its libraries on a cold machine; a worker never placed
DispatchHook = Callable[[str, Any, str, str], None]  # (worker name, actor, job name, phase): tests kill workers


class Pool:
    """The workers and one queue of jobs: idle workers pull the next ready job, their own model's first."""

    def __init__(self, package: str, root: str, workers: int, gpus_per_worker: float, restarts: int,
                 return_artifacts: bool, env: dict[str, str], on_dispatch: DispatchHook | None = None):
        import ray

        from . import ray_worker

        ray.cloudpickle.register_pickle_by_value(ray_worker)
        self._ray = ray
        self._actor_class = ray.remote(ray_worker.CineReelWorker)
        self._package, self._root = package, root
        self._gpus = gpus_per_worker
        self._runtime_env = {"env_vars": env} if env else None
        self._restarts_left = restarts
        self._return = return_artifacts
        self._on_dispatch = on_dispatch
        self._cond = threading.Condition()
        # The driver's own work (technical checks, mixing, reading files) runs one stage thread at a time: only
        # waiting for workers overlaps. Concurrent numpy calls from several threads gave wrong answers here
        # (OpenBLAS: a valid clip judged black now and then), and not every library the stages use is thread-safe.
        self._driver_turn = threading.Lock()
        self._holder = threading.local()
        self._queue: list[Task] = []
        self._slots: list[Slot] = []
        self._closed = False
        self.phase = ""
        self.load_log: list[dict[str, Any]] = []  # every worker's loads: family, checkpoint, role, worker, phase
        self.jobs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.reschedules: list[dict[str, Any]] = []
        self.workers: list[dict[str, Any]] = []
        for _ in range(workers):
            self._start_worker()
        for slot in list(self._slots):
            try:
                info = ray.get(slot.actor.ready.remote(), timeout=WORKER_START_TIMEOUT_S)
            except ray.exceptions.RayError as exc:
                self._kill_all()
                raise RuntimeError(
                    f"Ray worker {slot.name} could not start: {str(exc).splitlines()[0]}. Every worker needs this pack at "
                    f"{root} (or installed with pip) and its requirements, in the same Python environment") from exc
            self.workers.append({**info, "started": "at batch start"})
        self._thread = threading.Thread(target=self._loop, name="cinereel-ray-scheduler", daemon=True)
        self._thread.start()

    def _start_worker(self) -> Slot:
        name = f"w{len(self._slots) + 1}"
        actor = self._actor_class.options(num_cpus=1, num_gpus=self._gpus, max_restarts=0,
                                          runtime_env=self._runtime_env).remote(self._package, self._root, name)
        slot = Slot(name, actor)
        self._slots.append(slot)
        return slot

    # -- what the stage threads call (stage.set_job_runner) --------------------------------
    def run_jobs(self, run: RunDir, handle: ModelHandle, pending: Sequence[Job], progress: Progress | None,
                 prepare: Prepare | None = None) -> None:
        keys = {job.key for job in pending}
        hand_out = HandOut(secrets.token_hex(8), prepare, tuple(pending)) if prepare is not None else None
        tasks = []
        for job in pending:
            text = json.dumps(job.inputs, sort_keys=True, default=str)
            tasks.append(Task(job, handle, run, self.phase, {k for k in keys if k != job.key and k in text},
                              hand_out))
        by_key = {task.job.key: task for task in tasks}
        for task in tasks:
            for key in task.needs:
                by_key[key].dependents.append(task)
        with self._cond:
            if self._closed:
                raise RuntimeError("the Ray worker pool is closed")
            self._queue.extend(tasks)
            self._cond.notify_all()
        for task in tasks:
            with self._turn_given_up():
                task.future.exception()  # wait for the workers while another stage thread does its own work
            task.future.result()  # raises the job's error: this reel's stage fails, the others go on
            if progress is not None:
                progress.update()

    @contextmanager
    def driver_turn(self) -> Iterator[None]:
        """Hold the driver's turn for a stage thread's own work (released while it waits for workers)."""
        with self._driver_turn:
            self._holder.holds = True
            try:
                yield
            finally:
                self._holder.holds = False

    @contextmanager
    def _turn_given_up(self) -> Iterator[None]:
        holds = getattr(self._holder, "holds", False)
        if holds:
            self._holder.holds = False
            self._driver_turn.release()
        try:
            yield
        finally:
            if holds:
                self._driver_turn.acquire()
                self._holder.holds = True

    # -- the scheduler thread ---------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._schedule()
        except Exception as exc:  # noqa: BLE001 - a scheduler bug must fail the waiting reels, never hang them
            self._stop(RuntimeError(f"the Ray scheduler stopped: {type(exc).__name__}: {exc}"))

    def _schedule(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._fail_queued_without_workers()  # jobs a stage thread queued after the last worker died
                self._dispatch()
                refs = [slot.ref for slot in self._slots if slot.task is not None]
                if not refs:
                    self._cond.wait(0.5)
                    continue
            done, _ = self._ray.wait(refs, num_returns=1, timeout=0.2)
            if done:
                with self._cond:
                    slot = next(s for s in self._slots if s.ref is not None and s.ref == done[0])
                    self._finish(slot)

    def _ready(self) -> list[Task]:
        return [t for t in self._queue if not t.needs]

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not slot.alive or slot.task is not None:
                continue
            ready = self._ready()
            if not ready:
                return
            task = next((t for t in ready if t.handle.key == slot.resident), ready[0])
            self._queue.remove(task)
            slot.task, slot.resident = task, task.handle.key
            slot.ref = slot.actor.render.remote(task.job, task.handle, str(task.run.root), self._return,
                                                task.hand_out)
            if self._on_dispatch is not None:
                self._on_dispatch(slot.name, slot.actor, task.job.name, task.phase)

    def _finish(self, slot: Slot) -> None:
        task, ref = slot.task, slot.ref
        slot.task, slot.ref = None, None
        if self._closed:  # stopped: the job already failed as cancelled
            return
        try:
            result = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._lost(slot, task, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the job itself failed: its reel reports it
            self._fail(task, getattr(exc, "cause", None) or exc)  # the job's own error, not Ray's wrapper
            return
        try:
            self._place(task, result)
        except Exception as exc:  # noqa: BLE001
            self._fail(task, exc)
            return
        self.jobs[slot.name][task.phase] += 1
        self.load_log += [{**load, "worker": slot.name, "phase": task.phase} for load in result["loads"]]
        if task.rescheduled_from is not None:
            task.rescheduled_from["rerun_on"] = slot.name
        for dependent in task.dependents:
            dependent.needs.discard(task.job.key)
        task.future.set_result(result)

    def _place(self, task: Task, result: dict[str, Any]) -> None:
        """Move the worker's file into place and record its key (the driver holds the run lock)."""
        if "data" in result:
            data = result["data"]
            task.run.produce(task.job.rel, task.job.inputs, lambda tmp: tmp.write_bytes(data))
        else:
            staged = Path(result["staged"])
            try:
                task.run.produce(task.job.rel, task.job.inputs, lambda tmp: os.replace(staged, tmp))
            finally:
                staged.unlink(missing_ok=True)  # not moved: the artifact was already current

    def _fail(self, task: Task, exc: BaseException) -> None:
        for dependent in task.dependents:
            if dependent in self._queue:
                self._queue.remove(dependent)
                self._fail(dependent, RuntimeError(f"{dependent.job.name} needs {task.job.name}, which failed"))
        task.future.set_exception(exc)

    def _lost(self, slot: Slot, task: Task, exc: BaseException) -> None:
        """A worker died: its job goes back to the front of the queue, for another (or a new) worker."""
        slot.alive = False
        record = {"job": task.job.name, "run_id": task.run.run_id, "phase": task.phase, "worker_died": slot.name,
                  "error": str(exc).splitlines()[0][:300], "rerun_on": None}
        self.reschedules.append(record)
        task.rescheduled_from = record
        self._queue.insert(0, task)
        if self._restarts_left > 0:
            self._restarts_left -= 1
            new = self._start_worker()
            self.workers.append({"worker": new.name, "started": f"replacing {slot.name}"})
        self._fail_queued_without_workers()

    def _fail_queued_without_workers(self) -> None:
        """With every worker dead, whatever is queued (now, or by a stage thread later) fails at once."""
        if any(s.alive for s in self._slots):
            return
        for queued in list(self._queue):
            self._queue.remove(queued)
            queued.future.set_exception(RuntimeError(
                "every Ray worker died and no replacement is allowed (--ray-restarts); the finished work is "
                "kept: run the same batch again to resume"))

    def close(self) -> None:
        """Stop the workers; a job still queued or running fails as cancelled (its reel resumes next time)."""
        from .comfy import Cancelled

        self._stop(Cancelled("the batch was stopped before this job finished"))
        self._thread.join(timeout=10)
        self._kill_all()

    def _stop(self, reason: BaseException) -> None:
        """No more hand-outs; every job queued or running fails with ``reason``."""
        with self._cond:
            self._closed = True
            for task in [*self._queue, *(s.task for s in self._slots if s.task is not None)]:
                if not task.future.done():
                    task.future.set_exception(reason)
            self._queue.clear()
            self._cond.notify_all()

    def _kill_all(self) -> None:
        for slot in self._slots:
            try:
                self._ray.kill(slot.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def mark(self) -> int:
        """A position in the load log; ``loads_since(mark)`` is what the workers loaded after it."""
        return len(self.load_log)

    def loads_since(self, mark: int) -> list[dict[str, Any]]:
        return [dict(load) for load in self.load_log[mark:]]

    def summary(self) -> dict[str, Any]:
        """Workers, loads and jobs per worker per phase, and every job a dead worker cost."""
        loads: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
        for load in self.load_log:
            per_phase = loads[load["worker"]][load["phase"]]
            per_phase[load["family"]] = per_phase.get(load["family"], 0) + 1
        return {"workers": self.workers, "loads": {w: dict(phases) for w, phases in loads.items()},
                "jobs": {w: dict(phases) for w, phases in self.jobs.items()}, "reschedules": list(self.reschedules)}


# -- connecting ------------------------------------------------------------------------------
