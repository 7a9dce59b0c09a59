"""The residency manager: one model resident, memory really returned, shared roles, worker processes."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path

import psutil
import pytest
import torch

# As inside ComfyUI, torch is imported (and its thread pool warmed up) before any model loads,
# so the memory measured around a load is the model's own.
torch.nn.Linear(8, 8)(torch.ones(1, 8))

from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY, ResidencyManager, register_family

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_torch_family", HERE / "tiny_torch_family.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
tiny.register(register_family)

MB = 2**20


def handle(name: str, seed: int = 0, residency: str = "in_process", **options) -> ModelHandle:
    return ModelHandle("test-tiny-torch", name, dtype="float32", device="cpu", residency=residency,
                       options={"seed": seed, **options})


def test_a_b_a_keeps_one_model_and_memory_returns_after_each_eviction():
    manager = ResidencyManager()
    a, b = handle("A", seed=1), handle("B", seed=2)
    for h in (a, b, a):
        with manager.use(h) as model:
            assert model.parameter_bytes() >= 190 * MB
            model.forward_sum()
            assert manager.resident == h
        del model
    manager.evict("end of test")
    events = [(e["event"], e["checkpoint"]) for e in manager.log]
    assert events == [("load", "A"), ("evict", "A"), ("load", "B"), ("evict", "B"), ("load", "A"), ("evict", "A")]
    loads = [e for e in manager.log if e["event"] == "load"]
    evicts = [e for e in manager.log if e["event"] == "evict"]
    for load, evict in zip(loads, evicts):
        assert load["rss_after"] - load["rss_before"] > 150 * MB, "the model did not occupy memory"
        tolerance = max(0.05 * load["rss_before"], 50 * MB)
        assert abs(evict["rss_after"] - load["rss_before"]) <= tolerance, (load, evict)
        assert evict["still_referenced"] is False
        assert load["seconds"] >= 0 and evict["seconds"] >= 0


def test_exactly_one_model_is_resident_at_any_time():
    manager = ResidencyManager()
    with manager.use(handle("A", width=256)):
        pass
    with manager.use(handle("B", width=256)):
        assert manager.resident.checkpoint == "B"
    assert [e["event"] for e in manager.log].count("load") - [e["event"] for e in manager.log].count("evict") == 1


def test_director_and_critic_on_one_checkpoint_load_once():
    manager = ResidencyManager()
    base = handle("shared", width=256)
    director, critic = base.as_role("director"), base.as_role("critic")
    assert director != critic and director.key == critic.key
    with manager.use(director) as m1:
        first = id(m1)
    with manager.use(critic) as m2:
        assert id(m2) == first
    with manager.use(director):
        pass
    assert [e["event"] for e in manager.log] == ["load"]
    assert manager.reuses == 2


def test_different_options_are_different_models():
    assert handle("A", seed=1).key != handle("A", seed=2).key
    assert handle("A").key != handle("A", residency="subprocess").key


def test_subprocess_residency_runs_the_model_in_a_worker_that_is_gone_after_eviction(monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(HERE / "tiny_torch_family.py"))
    manager = ResidencyManager()
    with manager.use(handle("W", seed=3, residency="subprocess", width=512)) as worker:
        pid = worker.pid
        assert pid != os.getpid() and psutil.pid_exists(pid)
        in_worker = worker.forward_sum(2)
    local = tiny.TinyTorchModel(512, 3, 3).forward_sum(2)
    assert in_worker == pytest.approx(local, rel=1e-5)
    del worker
    manager.evict()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [e["event"] for e in manager.log] == ["load", "evict"]
    assert manager.log[0]["worker_pid"] == pid


def test_worker_errors_come_back_with_the_cause(monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(HERE / "tiny_torch_family.py"))
    manager = ResidencyManager()
    from cinereel.model_loaders.worker import WorkerError

    with manager.use(handle("E", residency="subprocess", width=64)) as worker:
        with pytest.raises(WorkerError, match="TypeError"):
            worker.forward_sum("two")  # raised in the worker, sent back with its traceback
    manager.evict()


def test_a_worker_proxy_has_the_attributes_its_model_has_and_no_others(monkeypatch):
    """A stage asks its model what it offers (``getattr(model, "encode_prompts", None)``): a proxy must not
    answer yes for a method the model in the worker does not have."""
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(HERE / "tiny_torch_family.py"))
    manager = ResidencyManager()
    with manager.use(handle("P", residency="subprocess", width=64)) as worker:
        assert worker.forward_sum(1) == pytest.approx(tiny.TinyTorchModel(64, 3, 0).forward_sum(1), rel=1e-5)
        assert worker.width == 64  # a plain value, copied when the worker loaded
        assert getattr(worker, "encode_prompts", None) is None and getattr(worker, "parallel_jobs", 1) == 1
        with pytest.raises(AttributeError, match="no 'no_such_method'"):
            worker.no_such_method()
    manager.evict()


def test_concurrent_use_from_two_threads_never_loads_two_models():
    manager = ResidencyManager()
    seen: list[str] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(5):
                with manager.use(handle(name, width=128)) as model:
                    model.forward_sum()
                    seen.append(manager.resident.checkpoint)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("T1", "T2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 10
    balance = 0
    for e in manager.log:
        balance += 1 if e["event"] == "load" else -1
        assert balance in (0, 1)


def test_comfy_memory_manager_is_asked_only_when_the_option_is_on(monkeypatch):
    calls: list[str] = []

    class FakeModelManagement:
        @staticmethod
        def unload_all_models():
            calls.append("unload_all_models")

        @staticmethod
        def soft_empty_cache():
            calls.append("soft_empty_cache")

    monkeypatch.setitem(sys.modules, "comfy.model_management", FakeModelManagement)
    manager = ResidencyManager()
    with manager.use(handle("C1", width=64, unload_comfy_models=False)):
        pass
    assert calls == []
    with manager.use(handle("C2", width=64, unload_comfy_models=True)):
        pass
    assert calls == ["unload_all_models", "soft_empty_cache"]


def test_global_manager_is_shared():
    assert RESIDENCY is sys.modules["cinereel.model_loaders.residency"].RESIDENCY


def test_switching_between_weightless_preview_backends_frees_nothing_but_a_real_model_does(monkeypatch):
    """A full garbage collection costs tens of milliseconds; around a preview backend (no weights) it frees
    nothing, so the manager skips it there and still runs it around every model that holds weights."""
    import cinereel.model_loaders.preview  # noqa: F401 - registers the preview families
    from cinereel.model_loaders import residency

    releases = []
    monkeypatch.setattr(residency, "release_freed_memory", lambda: releases.append(1))
    manager = ResidencyManager()
    for stage in ("voice", "music"):
        with manager.use(ModelHandle(f"preview-{stage}", "preview", residency="in_process")):
            pass
    manager.evict("end of the preview part")
    assert [e["event"] for e in manager.log] == ["load", "evict", "load", "evict"] and releases == []
    with manager.use(handle("A", seed=1)):
        pass
    manager.evict("end of test")
    assert len(releases) == 2  # before the real model's load and after its eviction
