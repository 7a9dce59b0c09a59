"""``cinereel batch FILE --ray ADDRESS``: the batch of ``batch.py`` on a Ray cluster, one long-lived worker per GPU.

The driver (this process) walks the same phases as ``batch.run_batch`` (director plans, portraits and
keyframes, clips, the critic's rounds, narration, music; mix and assembly need no model and stay here), but
runs every reel's stage of a phase at once, one thread each, and hands every job that needs a model to the
workers' one queue (``ray_pool.Pool``): each worker loads each phase's model once, and no GPU waits while
another finishes its reel. The driver holds every reel's run lock; the run folders under ``--out`` must be
shared storage at the same path on every machine. The result is ``batch.py``'s ``BatchResult`` (the same
``batch.json``), its phase loads being the workers', plus a ``ray`` section: the workers, loads and jobs per
worker per phase, and every job a dead worker cost (which job, which worker died, where it ran again).

Ray is an optional extra (``pip install ".[ray]"``), imported only here and in ``ray_pool.py``, only when a
batch runs on Ray.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import BatchResult, PhaseRecord

if TYPE_CHECKING:
    from .batch import BatchItem, PhaseCallback, ReelOutcome
    from .headless import PipelineOptions
    from .ray_pool import DispatchHook, Pool

LOCAL = "local"
# Variables a worker on another machine needs from the driver's environment (besides the director's API key).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "CINEREEL_WORKER_PLUGINS")
MAX_STAGE_THREADS = 32  # reels whose stage runs at once in a phase (each thread mostly waits for workers)


@dataclass
class RayOptions:
    address: str = LOCAL  # "local" starts a Ray instance in this process; else a cluster's address ("auto", host:port)
    workers: int | None = None  # default: one per GPU of the cluster, else 2
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs, else 0
    return_artifacts: bool = False  # workers send artifacts back instead of writing to the shared run folders
    restarts: int | None = None  # replacement workers allowed for workers that die (default: one per worker)


def ray_problems(options: RayOptions) -> list[str]:
    """What is wrong with the Ray settings, checked before Ray starts or any model loads."""
    problems = []
    try:
        import ray  # noqa: F401
    except ImportError:
        problems.append('Ray support is not installed: --ray needs the Ray extra (pip install ".[ray]", or pip '
                        'install "ray>=2.40"); without --ray the batch runs on this machine')
    if options.workers is not None and options.workers < 1:
        problems.append(f"--ray-workers must be at least 1, got {options.workers}")
    if options.gpus_per_worker is not None and options.gpus_per_worker < 0:
        problems.append(f"--ray-gpus-per-worker must not be negative, got {options.gpus_per_worker}")
    if options.restarts is not None and options.restarts < 0:
        problems.append(f"--ray-restarts must not be negative, got {options.restarts}")
    return problems


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
        # As many CPU slots as workers asked for (default: this machine's cores); its GPUs are found by Ray.
        ray.init(num_cpus=ray_options.workers, include_dashboard=False, object_store_memory=200 * 2**20,
                 log_to_driver=False)
    else:
        ray.init(address=ray_options.address, log_to_driver=False)
    return True


def worker_plan(ray_options: RayOptions) -> tuple[int, float]:
    """How many workers, and GPUs each: one per GPU of the cluster unless told otherwise. Refuses a plan the
    cluster cannot place (its workers would wait for resources forever)."""
    import ray

    from .preflight import PreflightError

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    per_worker = ray_options.gpus_per_worker if ray_options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = max(ray_options.workers or (int(gpus / per_worker) if gpus and per_worker else 2), 1)
    problems = []
    if workers * per_worker > gpus:
        problems.append(f"{workers} Ray worker(s) with {per_worker:g} GPU each need {workers * per_worker:g} GPUs; "
                        f"the cluster has {gpus:g} (--ray-workers, --ray-gpus-per-worker)")
    if workers > cpus:
        problems.append(f"{workers} Ray worker(s) need a CPU each; the cluster has {cpus:g} (--ray-workers)")
    if problems:
        raise PreflightError(problems)
    return workers, per_worker


# -- the batch on the driver -------------------------------------------------------------------

@dataclass
class RayBatchResult(BatchResult):
    """``batch.py``'s result with the cluster's side of it: workers, loads and jobs per worker per phase,
    reschedules."""

    ray: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "ray": self.ray}


def run_batch_on_ray(items: list[BatchItem], out_root: Path | str, options: PipelineOptions | None = None,
                     ray: str | RayOptions = LOCAL, on_phase: PhaseCallback | None = None,
                     on_dispatch: DispatchHook | None = None, **flags: Any) -> RayBatchResult:
    """``batch.run_batch`` on Ray workers; writes batch.json. ``ray``: an address, ``local``, or ``RayOptions``;
    ``flags``: the other ``RayOptions`` fields (``cinereel batch``'s --ray-* flags). ``on_dispatch(worker,
    actor, job name, phase)`` hears every hand-out (the tests kill a worker with it)."""
    from .batch import batch_id, options_summary, write_batch_json
    from .gate import check_gate_settings
    from .headless import PipelineOptions
    from .preflight import PreflightError
    from .ray_pool import Pool

    options = options or PipelineOptions()
    ray_options = dataclasses.replace(ray if isinstance(ray, RayOptions) else RayOptions(address=ray), **flags)
    if problems := ray_problems(ray_options):
        raise PreflightError(problems)
    if options.gate:
        check_gate_settings(options.threshold, options.max_retries)
    out_root = Path(out_root).resolve()
    outcomes = _outcomes(items, options)
    result = RayBatchResult(batch_id(outcomes, options), out_root, outcomes, options=options_summary(options))
    started_ray = connect(ray_options)
    try:
        workers, gpus = worker_plan(ray_options)
        restarts = ray_options.restarts if ray_options.restarts is not None else workers
        pool = Pool(*pack_location(), workers, gpus, restarts, ray_options.return_artifacts, forwarded_env(options),
                    on_dispatch)
        started = time.perf_counter()
        try:
            _run_phases(result, options, pool, on_phase)
        finally:  # a cancelled batch records how far each reel got, as batch.run_batch does
            pool.close()
            result.wall_s = time.perf_counter() - started
            result.ray = {"address": ray_options.address, "gpus_per_worker": gpus,
                          "return_artifacts": ray_options.return_artifacts, **pool.summary()}
            write_batch_json(result)
    finally:
        if started_ray:
            import ray as ray_module

            ray_module.shutdown()
    return result


def _outcomes(items: list[BatchItem], options: PipelineOptions) -> list[ReelOutcome]:
    from .batch import ReelOutcome
    from .director import run_id_for
    from .voice import request_for_voice

    outcomes = []
    for index, item in enumerate(items, 1):
        request = request_for_voice(item.request, options.handles["voice"])
        outcomes.append(ReelOutcome(index, item, run_id_for(request, item.run_id, item.plan_override), request))
    return outcomes


def _run_phases(result: RayBatchResult, options: PipelineOptions, pool: Pool,
                on_phase: PhaseCallback | None) -> None:
    """``batch.run_batch``'s phases in its order, every reel's run folder locked to the end."""
    from .batch import gate_phase, plan_reel, run_guarded
    from .headless import reel_stages
    from .rundir import RunDir

    out_root = result.out_root
    with ExitStack() as locks:
        for outcome in result.reels:
            run_guarded(outcome, "lock",
                        lambda o: locks.enter_context(RunDir(out_root / "cinereel" / o.run_id).locked()))
        _phase(result, pool, "director", lambda o: plan_reel(o, out_root, options, result.batch_id), on_phase)
        for name, stage in reel_stages(options):
            if name != "gate":
                _phase(result, pool, name, lambda o, stage=stage: setattr(o, "reel", stage(o.reel)), on_phase)
                continue
            pool.phase, mark = "gate", pool.mark()
            gate_phase(result, options, on_phase, each=lambda gates, step: _at_once(pool, "gate", gates, step))
            result.phases[-1].loads = pool.loads_since(mark)
        _note_reels(result, pool)


def _phase(result: RayBatchResult, pool: Pool, name: str, step: Callable[[ReelOutcome], Any],
           on_phase: PhaseCallback | None) -> None:
    """``step`` on every reel still going, all at once; their model jobs go to the workers."""
    from .batch import run_guarded

    active = [o for o in result.reels if o.ok]
    pool.phase, mark, started = name, pool.mark(), time.perf_counter()

    def done(count: int) -> None:
        if on_phase is not None:
            on_phase(name, count, len(active), time.perf_counter() - started)

    _at_once(pool, name, active, lambda outcome: run_guarded(outcome, name, step), done)
    result.phases.append(PhaseRecord(name, len(active), time.perf_counter() - started, pool.loads_since(mark)))


def _at_once(pool: Pool, name: str, reels: list[Any], step: Callable[[Any], None],
             done: Callable[[int], None] | None = None) -> None:
    """``step`` on every reel, one thread each, their model jobs going to the pool's queue; ``done(count)``
    after each. The threads take turns at their own work and overlap while they wait for workers
    (``Pool.driver_turn``). A step that raises (a cancel: a reel's own failure is recorded by the step) stops
    the batch."""
    from .stage import jobs_run_by

    def one(reel: Any) -> None:
        with pool.driver_turn(), jobs_run_by(pool.run_jobs):
            step(reel)

    threads = ThreadPoolExecutor(max_workers=max(1, min(len(reels), MAX_STAGE_THREADS)),
                                 thread_name_prefix=f"cinereel-{name}")
    try:
        futures = [threads.submit(one, reel) for reel in reels]
        for count, future in enumerate(as_completed(futures), 1):
            future.result()
            if done is not None:
                done(count)
    except BaseException:  # Ctrl-C or a cancel: stop the workers first, so the other threads' waits end at once
        pool.close()
        raise
    finally:
        threads.shutdown(wait=True, cancel_futures=True)


def _note_reels(result: RayBatchResult, pool: Pool) -> None:
    """Each finished reel's report.json says it was rendered on Ray and which of its jobs were rescheduled."""
    from .stage import write_report

    for outcome in result.reels:
        if outcome.reel is None or not outcome.ok:
            continue
        mine = [r for r in pool.reschedules if r["run_id"] == outcome.run_id]
        outcome.reel = outcome.reel.evolve(notes={"ray": {"workers": len(pool.workers), "reschedules": mine}})
        write_report(outcome.reel)
