"""A batch of reels on a Ray cluster: one long-lived worker per GPU, work handed out phase by phase, shot by shot.

The driver (this process) runs the ordinary stage functions of every reel, phase by phase (director plans,
portraits and keyframes, clips, critic rounds, narration, music; mix and assembly need no model and stay
here), all reels of a phase at once. Every job that needs a model goes to one queue (``stage.set_job_runner``)
and an idle worker pulls the next one, preferring jobs for the model it already holds: each worker loads each
phase's model once, and no worker idles while another finishes the phase (work stealing by shot). A job that
needs another job of the same stage (a keyframe its portraits, the narration track its lines) waits for it.

Workers write each artifact atomically under a temporary name in the run folder (which must therefore be
shared storage at the same path on every machine), or return it to the driver (``return_artifacts``); the
driver, which holds every reel's run lock, moves it into place and records its content key. A worker that
dies costs the job it was rendering: the job is handed to another worker (a replacement is started while
``restarts`` allow) and ``batch.json`` says which job, which worker died and where it ran again.

Ray is an optional extra (``pip install ".[ray]"``), imported only here and only when a batch runs on Ray.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import secrets
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .rundir import RunDir, atomic_write
from .stage import Job

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest
    from .comfy import Progress
    from .headless import PipelineOptions
    from .reel import Reel

LOCAL = "local"
# Variables a worker on another machine needs from the driver's environment (besides the director's API key).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "CINEREEL_WORKER_PLUGINS")


@dataclass
class RayOptions:
    address: str = LOCAL  # "local" starts a Ray instance in this process; else a cluster's address ("auto", host:port)
    workers: int | None = None  # default: one per GPU of the cluster, else 2
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs, else 0
    return_artifacts: bool = False  # workers send artifacts back instead of writing to the shared run folders
    restarts: int | None = None  # replacement workers allowed for workers that die (default: one per worker)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ray*`` flags of ``cinereel batch``."""
    group = parser.add_argument_group("Ray (several GPUs or machines; pip install \".[ray]\")")
    group.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="render the batch on a Ray cluster: its address (e.g. 'auto' on a cluster node, or "
                            "ray://head:10001), or 'local' to start a Ray instance on this machine. --out must be "
                            "a folder every worker sees at the same path (shared storage), unless "
                            "--ray-return-artifacts")
    group.add_argument("--ray-workers", type=int, default=None, metavar="N",
                       help="workers to start (default: one per GPU in the cluster; 2 on a cluster without GPUs)")
    group.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                       help="GPUs each worker reserves (default 1 when the cluster has GPUs, else 0)")
    group.add_argument("--ray-return-artifacts", action="store_true",
                       help="workers send each artifact back to this process, which writes it under --out "
                            "(the workers must still be able to read --out for a job's inputs)")
    group.add_argument("--ray-restarts", type=int, default=None, metavar="N",
                       help="replacement workers started for workers that die (default: one per worker)")


def ray_options_from_args(args: argparse.Namespace) -> RayOptions | None:
    if not getattr(args, "ray", None):
        return None
    return RayOptions(address=args.ray, workers=args.ray_workers, gpus_per_worker=args.ray_gpus_per_worker,
                      return_artifacts=args.ray_return_artifacts, restarts=args.ray_restarts)


def ray_problems(options: RayOptions) -> list[str]:
    """What is wrong with the Ray settings, checked before Ray starts or any model loads."""
    problems = []
    try:
        import ray  # noqa: F401
    except ImportError:
        problems.append('--ray needs Ray, an optional extra: pip install "comfyui-cinereel[ray]" (or pip install '
                        '"ray>=2.40")')
    if options.workers is not None and options.workers < 1:
        problems.append(f"--ray-workers must be at least 1, got {options.workers}")
    if options.gpus_per_worker is not None and options.gpus_per_worker < 0:
        problems.append(f"--ray-gpus-per-worker must not be negative, got {options.gpus_per_worker}")
    if options.restarts is not None and options.restarts < 0:
        problems.append(f"--ray-restarts must not be negative, got {options.restarts}")
    return problems


# -- on a worker --------------------------------------------------------------------------

def load_worker_plugins() -> None:
    """Extra model families from files that define ``register(register_family)`` (``CINEREEL_WORKER_PLUGINS``,
    as for a model's worker subprocess): a backend outside the pack, or a test's."""
    import importlib.util

    from ...model_loaders.residency import register_family

    for plugin in filter(None, os.environ.get("CINEREEL_WORKER_PLUGINS", "").split(os.pathsep)):
        spec = importlib.util.spec_from_file_location(f"_cinereel_plugin_{Path(plugin).stem}", plugin)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.register(register_family)


def staged_path(target: Path) -> Path:
    """Where a worker writes ``target`` before the driver moves it into place: a temporary name the run folder's
    clean-up (``rundir.remove_partials``) removes if the driver never does."""
    return target.parent / f".{target.stem}.{secrets.token_hex(6)}.partial{target.suffix}"


def render_here(job: Job, handle: ModelHandle, run_root: str, return_artifact: bool) -> dict[str, Any]:
    """Run on a worker: make ``job``'s artifact under this process's residency of ``handle``."""
    from ...model_loaders.residency import RESIDENCY

    mark = RESIDENCY.mark()
    started = time.perf_counter()
    target = RunDir(run_root).path(job.rel)
    with ExitStack() as scratch:
        if return_artifact:  # written on this machine, sent back to the driver, which writes it under --out
            target = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="cinereel-ray-"))) / target.name
        staged = staged_path(target)
        with RESIDENCY.use(handle) as model:
            atomic_write(staged, lambda tmp: job.make(model, tmp))
        result: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 3), "pid": os.getpid(),
                                  "events": [{"event": e["event"], "family": e["family"],
                                              "seconds": round(e["seconds"], 3)} for e in RESIDENCY.log_since(mark)]}
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
        self._queue: list[Task] = []
        self._slots: list[Slot] = []
        self._closed = False
        self.phase = ""
        self.loads: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
        self.jobs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.reschedules: list[dict[str, Any]] = []
        self.workers: list[dict[str, Any]] = []
        for _ in range(workers):
            self._start_worker()
        for slot in list(self._slots):
            try:
                info = ray.get(slot.actor.ready.remote())
            except ray.exceptions.RayError as exc:
                self._kill_all()
                raise RuntimeError(
                    f"Ray worker {slot.name} could not start: {_one_line(exc)}. Every worker needs this pack at "
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
    def run_jobs(self, run: RunDir, handle: ModelHandle, pending: Sequence[Job], progress: Progress | None) -> None:
        keys = {job.key for job in pending}
        tasks = []
        for job in pending:
            text = json.dumps(job.inputs, sort_keys=True, default=str)
            tasks.append(Task(job, handle, run, self.phase, {k for k in keys if k != job.key and k in text}))
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
            task.future.result()  # raises the job's error: this reel's stage fails, the others go on
            if progress is not None:
                progress.update()

    # -- the scheduler thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
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
            slot.ref = slot.actor.render.remote(task.job, task.handle, str(task.run.root), self._return)
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
        for event in result["events"]:
            if event["event"] == "load":
                per_phase = self.loads[slot.name][task.phase]
                per_phase[event["family"]] = per_phase.get(event["family"], 0) + 1
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
        if not any(s.alive for s in self._slots):
            for queued in list(self._queue):
                self._queue.remove(queued)
                queued.future.set_exception(RuntimeError(
                    "every Ray worker died and no replacement is allowed (--ray-restarts); the finished work is "
                    "kept: run the same batch again to resume"))

    def close(self) -> None:
        """Stop the workers; a job still queued or running fails as cancelled (its reel resumes next time)."""
        from .comfy import Cancelled

        with self._cond:
            self._closed = True
            for task in [*self._queue, *(s.task for s in self._slots if s.task is not None)]:
                if not task.future.done():
                    task.future.set_exception(Cancelled("the batch was stopped before this job finished"))
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._kill_all()

    def _kill_all(self) -> None:
        for slot in self._slots:
            try:
                self._ray.kill(slot.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def summary(self) -> dict[str, Any]:
        return {"workers": self.workers,
                "loads": {w: {p: dict(f) for p, f in phases.items()} for w, phases in self.loads.items()},
                "jobs": {w: dict(phases) for w, phases in self.jobs.items()},
                "reschedules": list(self.reschedules)}


# -- connecting ------------------------------------------------------------------------------

def pack_location() -> tuple[str, str]:
    """The package name this pack was imported under and its folder: a worker imports it the same way."""
    return __package__.rsplit(".nodes.pipeline", 1)[0], str(Path(__file__).resolve().parents[2])


def forwarded_env(options: PipelineOptions) -> dict[str, str]:
    from ...model_loaders.api_keys import key_env_name

    names = set(FORWARDED_ENV)
    for handle in options.handles.values():
        if "base_url" in dict(handle.options):  # an OpenAI-compatible director: workers send it the same key
            names.add(key_env_name(handle.option("api_key_env")))
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


def connect(ray_options: RayOptions) -> bool:
    """Start or join Ray; True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if ray_options.address == LOCAL:
        ray.init(num_cpus=max(ray_options.workers or 2, 1), include_dashboard=False,
                 object_store_memory=200 * 2**20, log_to_driver=False)
    else:
        ray.init(address=ray_options.address, log_to_driver=False)
    return True


def worker_plan(ray_options: RayOptions) -> tuple[int, float]:
    """How many workers, and GPUs each: one per GPU of the cluster unless told otherwise."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    per_worker = ray_options.gpus_per_worker if ray_options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = ray_options.workers or (int(gpus / per_worker) if gpus and per_worker else 2)
    return max(workers, 1), per_worker


# -- the batch on the driver -------------------------------------------------------------------

@dataclass
class ReelState:
    index: int
    request: DirectorRequest
    run_id: str | None = None
    plan_override: str | None = None
    reel: Reel | None = None
    error: str | None = None
    failed_phase: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def reel_phases(options: PipelineOptions) -> list[tuple[str, Callable[[Reel], Reel]]]:
    """The stages after the director, as ``headless.make_reel`` runs them, each applied to every reel in turn."""
    from .assemble import assemble_stage
    from .gate import run_gate
    from .keyframes import render_keyframes
    from .mix import mix_stage
    from .motion import animate
    from .music import score_music
    from .voice import narrate

    h = options.handles
    return [
        ("keyframes", lambda r: render_keyframes(r, h["keyframes"])),
        ("motion", lambda r: animate(r, h["motion"], options.clip_preset)),
        *([("gate", lambda r: run_gate(r, h["llm"], h["keyframes"], h["motion"], options.threshold,
                                       options.max_retries, clip_preset=options.clip_preset,
                                       technical_gate=options.technical_check))]
          if options.gate else []),
        ("narration", lambda r: narrate(r, h["voice"], lead_in_s=options.lead_in_s)),
        ("music", lambda r: score_music(r, h["music"])),
        ("mix", lambda r: mix_stage(r, options.target_lufs, options.true_peak_dbtp)),
        ("assemble", lambda r: assemble_stage(r, options.crf, options.preset, keep=options.keep)),
    ]


def run_ray_batch(
    requests: Sequence[DirectorRequest | tuple[DirectorRequest, str | None, str | None]],
    out_root: Path | str,
    options: PipelineOptions,
    ray_options: RayOptions,
    on_dispatch: DispatchHook | None = None,
    on_phase: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Render every reel, phase-major across the batch, on Ray workers; returns (and writes) batch.json's dict.

    ``requests`` are DirectorRequests, or (request, run id, plan override) tuples. A reel that fails is
    reported with its phase and error; the others finish.
    """
    from .preflight import PreflightError

    if problems := ray_problems(ray_options):
        raise PreflightError(problems)
    states = [_state(i, item) for i, item in enumerate(requests)]
    started_ray = connect(ray_options)
    import ray

    started = time.perf_counter()
    try:
        workers, gpus = worker_plan(ray_options)
        restarts = ray_options.restarts if ray_options.restarts is not None else workers
        pool = Pool(*pack_location(), workers, gpus, restarts, ray_options.return_artifacts, forwarded_env(options),
                    on_dispatch)
        try:
            with ExitStack() as locks:
                _plan_all(states, out_root, options, pool, locks, on_phase)
                for name, stage in reel_phases(options):
                    _run_phase(name, states, pool, lambda state, stage=stage: stage(state.reel), on_phase)
                summary = pool.summary()
                _note_reels(states, summary)
        finally:
            pool.close()
        address = ray_options.address if ray_options.address != LOCAL else "local"
        batch = {"ray": {"address": address, "gpus_per_worker": gpus, "return_artifacts": ray_options.return_artifacts,
                         **summary},
                 "wall_s": round(time.perf_counter() - started, 3), "reels": [_row(s) for s in states]}
    finally:
        if started_ray:
            ray.shutdown()
    root = Path(out_root).resolve() / "cinereel"
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "batch.json", lambda tmp: tmp.write_text(json.dumps(batch, indent=2, ensure_ascii=False),
                                                                  encoding="utf-8"))
    return batch


def _state(index: int, item: Any) -> ReelState:
    if isinstance(item, tuple):
        request, run_id, plan_override = item
        return ReelState(index, request, run_id, plan_override)
    if hasattr(item, "request"):  # a batch item: its request, run id and plan
        return ReelState(index, item.request, getattr(item, "run_id", None), getattr(item, "plan_override", None))
    return ReelState(index, item)


def _plan_all(states: list[ReelState], out_root: Path | str, options: PipelineOptions, pool: Pool,
              locks: ExitStack, on_phase: Callable[[str, float], None] | None) -> None:
    """Take every reel's run lock (held to the end of the batch), then plan all reels."""
    from .director import direct, run_id_for
    from .voice import request_for_voice

    seen: dict[Path, int] = {}
    for state in states:
        try:
            state.request = request_for_voice(state.request, options.handles["voice"])
            root = Path(out_root).resolve() / "cinereel" / run_id_for(state.request, state.run_id,
                                                                       state.plan_override)
            if root in seen:
                raise ValueError(f"reel {state.index + 1} is the same run as reel {seen[root] + 1} (same sentence "
                                 f"and settings): give it another seed or run id")
            seen[root] = state.index
            locks.enter_context(RunDir(root).locked())
        except Exception as exc:  # noqa: BLE001 - a reel that cannot start is reported; the others go on
            state.error, state.failed_phase = _one_line(exc), "director"

    def plan(state: ReelState) -> Reel:
        reel = direct(options.handles["llm"], state.request, out_root, state.run_id, state.plan_override)
        return reel.evolve(notes={"settings": options.settings}) if options.settings is not None else reel

    _run_phase("director", states, pool, plan, on_phase)


def _run_phase(name: str, states: list[ReelState], pool: Pool, stage: Callable[[ReelState], Reel],
               on_phase: Callable[[str, float], None] | None) -> None:
    """``stage`` on every live reel at once (one thread each), its model jobs going to the pool's queue."""
    from .stage import set_job_runner

    live = [s for s in states if s.error is None]
    pool.phase = name
    started = time.perf_counter()

    def one(state: ReelState) -> None:
        set_job_runner(pool.run_jobs)  # this thread's context: a copy, so nothing leaks into the caller's
        begun = time.perf_counter()
        try:
            state.reel = stage(state)
        except Exception as exc:  # noqa: BLE001 - a failing reel is reported and never stops the others
            state.error, state.failed_phase = _one_line(exc), name
        state.timings[name] = round(time.perf_counter() - begun, 3)

    threads = ThreadPoolExecutor(max_workers=max(1, min(len(live), 32)), thread_name_prefix=f"cinereel-{name}")
    try:
        for future in [threads.submit(contextvars.copy_context().run, one, state) for state in live]:
            future.result()
    except BaseException:  # Ctrl-C: stop the workers first, so the stage threads' waits end at once
        pool.close()
        raise
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
    if on_phase is not None:
        on_phase(name, time.perf_counter() - started)


def _note_reels(states: list[ReelState], summary: dict[str, Any]) -> None:
    """Each finished reel's report.json says it was rendered on Ray and which of its jobs were rescheduled."""
    from .stage import write_report

    for state in states:
        if state.reel is None or state.error is not None:
            continue
        mine = [r for r in summary["reschedules"] if r["run_id"] == state.reel.run_id]
        state.reel = state.reel.evolve(notes={"ray": {"workers": len(summary["workers"]), "reschedules": mine}})
        write_report(state.reel)


def _row(state: ReelState) -> dict[str, Any]:
    row: dict[str, Any] = {"index": state.index, "sentence": state.request.sentence,
                           "status": "failed" if state.error else "done", "timings": state.timings}
    if state.reel is not None:
        row["run_id"] = state.reel.run_id
        if "reel" in state.reel.artifacts and not state.error:
            row["reel"] = str(state.reel.artifact_path("reel"))
    if state.error:
        row.update(error=state.error, failed_phase=state.failed_phase)
    return row


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
