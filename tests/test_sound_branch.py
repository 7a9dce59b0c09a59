"""The headless runner's sound stages beside its picture stages: when the voice and music backends hold no
weights, narration, music, mix and the reel's AAC track run in a process of their own (a thread for a family
only the test's process knows) while keyframes and motion render. Same artifacts as one after the other; a
failing branch lets the other finish; weightless models only; the run's manifest loses nothing to two
processes writing it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.preview import EspeakVoiceBackend, KenBurnsMotion
from cinereel.model_loaders.residency import (
    RESIDENCY,
    current_branch,
    load_worker_plugins,
    register_family,
    side_branch,
)
from cinereel.model_loaders.rules import DirectorRequest
from cinereel.nodes.pipeline import headless, video
from cinereel.nodes.pipeline.headless import PipelineOptions, make_reel, merge_branches, preview_handles
from cinereel.nodes.pipeline.reel import Reel
from cinereel.nodes.pipeline.rundir import RunDir
from cinereel_testkit import sample_plan_dict

REQUEST = DirectorRequest("A lone astronaut walks through a neon-lit Tokyo alley at dusk", duration_s=4.0, shots=2,
                          resolution="480p")
# The files a reel delivers and the sound it is made from: compared byte for byte, the WAVs by their samples
# (a float WAV's PEAK chunk carries the time libsndfile wrote it).
SAME_BYTES = ("audio/delivery.m4a", "reel.mp4", "reel.srt")
SAME_SAMPLES = ("audio/narration.wav", "audio/music.wav", "audio/mix.wav")
PLUGIN = Path(__file__).with_name("sound_branch_plugin.py")


@pytest.fixture(autouse=True)
def nothing_resident():
    RESIDENCY.evict("test isolation")
    yield
    RESIDENCY.evict("test isolation")


def manifest_keys(run: Path) -> dict[str, str]:
    return {rel: entry["key"] for rel, entry in json.loads((run / "manifest.json").read_text()).items()}


def report_of(reel: Reel) -> dict:
    return json.loads(reel.run_dir.path("report.json").read_text(encoding="utf-8"))


# -- the residency manager's side branch ---------------------------------------------------------------------

def test_a_side_branch_loads_its_own_weightless_model_while_the_main_line_holds_the_resident_one():
    handles = preview_handles()
    mark = RESIDENCY.mark()
    with RESIDENCY.use(handles["motion"]) as motion:  # the main line holds the manager's lock for the block

        def narrate_beside() -> tuple[str, list[dict]]:
            with side_branch("sound"):
                assert current_branch() == "sound"
                with RESIDENCY.use(handles["voice"]) as voice:
                    engine = voice.engine
                return engine, RESIDENCY.log_since(mark)

        with ThreadPoolExecutor(1) as pool:  # the timeout only guards against a hang: blocked on the lock
            engine, side_log = pool.submit(narrate_beside).result(timeout=120)
        assert isinstance(motion, KenBurnsMotion) and RESIDENCY.resident == handles["motion"]
    assert engine == EspeakVoiceBackend.engine
    assert [(e["event"], e["family"], e["branch"]) for e in side_log] == [
        ("load", "preview-voice", "sound"), ("evict", "preview-voice", "sound")]
    # Each line sees its own entries: the main line, the motion load only.
    assert [(e["event"], e["family"]) for e in RESIDENCY.log_since(mark)] == [("load", "preview-motion")]
    assert {e["family"] for e in RESIDENCY.log[mark:]} == {"preview-motion", "preview-voice"}
    assert current_branch() is None


def test_a_model_with_weights_never_runs_beside_the_resident_one():
    loads = []
    register_family("test-heavy-beside", lambda handle: loads.append(handle) or object())
    heavy = ModelHandle("test-heavy-beside", "tiny")
    with side_branch("sound"), pytest.raises(RuntimeError, match="holds weights: only weightless models run beside"):
        with RESIDENCY.use(heavy):
            pass
    # A weightless family in a worker process is not weightless here either: ending the worker frees memory.
    in_worker = ModelHandle("preview-voice", "preview", residency="subprocess")
    with side_branch("sound"), pytest.raises(RuntimeError, match="side branch 'sound'"):
        with RESIDENCY.use(in_worker):
            pass
    assert loads == [] and RESIDENCY.resident is None


# -- merging the branches' REELs -----------------------------------------------------------------------------

def test_merging_keeps_what_each_branch_added(tmp_path):
    plan = sample_plan_dict()
    base = Reel(plan, tmp_path / "run", {"plan": "plan.json"},
                {"timings": {"director": 1.0}, "residency": [{"event": "load", "family": "llm"}],
                 "warnings": ["from the director"], "settings": {"crf": 18}})
    picture = base.evolve(artifacts={"clip:shot_01": "clips/a.mp4"},
                          notes={"timings": {"director": 1.0, "motion": 2.0},
                                 "residency": [*base.notes["residency"], {"event": "load", "family": "motion"}],
                                 "clip_renders": {"shot_01": {}}})
    sound = base.evolve(artifacts={"mix": "audio/mix.wav"},
                        notes={"timings": {"director": 1.0, "mix": 0.5},
                               "residency": [*base.notes["residency"], {"event": "load", "family": "voice",
                                                                        "branch": "sound"}],
                               "warnings": ["from the director", "a line is long"], "mix": {"lufs": -18}})
    merged = merge_branches(base, picture, sound)
    assert dict(merged.artifacts) == {"plan": "plan.json", "clip:shot_01": "clips/a.mp4", "mix": "audio/mix.wav"}
    assert merged.notes["timings"] == {"director": 1.0, "motion": 2.0, "mix": 0.5}
    assert [e["family"] for e in merged.notes["residency"]] == ["llm", "motion", "voice"]
    assert merged.notes["warnings"] == ["from the director", "a line is long"]
    assert merged.notes["mix"] == {"lufs": -18} and merged.notes["clip_renders"] == {"shot_01": {}}
    assert merged.notes["settings"] == {"crf": 18}


# -- the whole reel -----------------------------------------------------------------------------------------

def test_the_reel_made_with_branches_is_the_reel_made_in_order(tmp_path, monkeypatch):
    beside = make_reel(REQUEST, tmp_path / "beside", "same")
    monkeypatch.setattr(headless, "sound_beside", lambda options: False)
    in_order = make_reel(REQUEST, tmp_path / "in-order", "same")

    runs = beside.run_dir.root, in_order.run_dir.root
    assert manifest_keys(runs[0]) == manifest_keys(runs[1])
    for rel in SAME_BYTES:
        assert (runs[0] / rel).read_bytes() == (runs[1] / rel).read_bytes(), rel
    for rel in SAME_SAMPLES:
        (ours, rate), (theirs, their_rate) = (soundfile.read(run / rel) for run in runs)
        assert rate == their_rate and ours.size > 0 and np.array_equal(ours, theirs), rel
    report, report_in_order = report_of(beside), report_of(in_order)
    assert report["beside"] == {"branch": "sound", "in": "process",
                                "stages": ["narration", "music", "mix", "delivery_audio"],
                                "seconds": pytest.approx(report["beside"]["seconds"]),
                                "picture_stages": ["keyframes", "motion"]}
    assert "beside" not in report_in_order
    assert set(report["timings"]) == set(report_in_order["timings"]) | {"delivery_audio"}
    assert report["warnings"] == report_in_order["warnings"] and report["warnings"]  # Tokyo: narrated in Japanese
    assert report["narration"] == report_in_order["narration"] and report["mix"] == report_in_order["mix"]
    sound_loads = [(e["stage"], e["family"]) for e in report["residency"] if e.get("branch") == "sound"]
    assert [load for load in sound_loads] == [("narration", "preview-voice"), ("narration", "preview-voice"),
                                               ("music", "preview-music"), ("music", "preview-music")]


def test_the_assembly_copies_the_sound_the_branch_encoded(tmp_path, monkeypatch):
    def not_here(audio_wav, out_path, total_samples):
        raise AssertionError("the AAC track was encoded in the main process")

    monkeypatch.setattr(video, "encode_delivery_audio", not_here)
    reel = make_reel(REQUEST, tmp_path, "copied")
    # Encoded once, by the sound process (this process would have failed); the reel carries exactly its samples.
    assert report_of(reel)["beside"]["in"] == "process"
    delivered, _ = video.read_audio(reel.artifact_path("reel"))
    sound, _ = video.read_audio(reel.artifact_path("delivery_audio"))
    assert delivered.shape == (4 * 48_000, 2) and np.array_equal(delivered, sound)


def test_the_assembly_s_clips_are_read_while_the_sound_branch_finishes(tmp_path, monkeypatch):
    from cinereel.nodes.pipeline.branch_process import BranchProcess

    events = []
    real_run, real_result = video._run, BranchProcess.result
    monkeypatch.setattr(video, "_run", lambda args, what: events.append(what.split(" of ")[0]) or real_run(args, what))
    monkeypatch.setattr(BranchProcess, "result", lambda self: events.append("joined") or real_result(self))
    reel = make_reel(REQUEST, tmp_path, "read-ahead")
    # One ffmpeg process read the clips, before the parent waited for the sound; the assembly found them read
    # and joined them as they are.
    assert events.count("read the video") == 1 and events.index("read the video") < events.index("joined"), events
    assert any(event.startswith("join the clips into") for event in events) and reel.artifact_path("reel").is_file()


class FailingMotion(KenBurnsMotion):
    def camera_filter(self, size, shot, plan, num_frames, seed):
        raise ValueError("the motion broke on purpose")


with pytest.MonkeyPatch.context() as plugins:  # this process knows the failing voice; the sound process, with the env
    plugins.setenv("CINEREEL_WORKER_PLUGINS", str(PLUGIN))
    load_worker_plugins()
register_family("test-failing-motion", lambda handle: FailingMotion(), weightless=True)


@pytest.mark.parametrize("where", ["process", "thread"])
def test_a_failing_sound_branch_lets_the_picture_finish(tmp_path, monkeypatch, where):
    if where == "process":  # the sound process loads the plugin; without it, only this process knows the voice
        monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(PLUGIN))
    else:
        monkeypatch.delenv("CINEREEL_WORKER_PLUGINS", raising=False)
    options = PipelineOptions(handles={**preview_handles(), "voice": ModelHandle("test-failing-voice", "preview")})
    with pytest.raises(ValueError, match="the voice broke on purpose") as raised:
        make_reel(REQUEST, tmp_path, "sound-fails", options=options)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert ("raised in the sound process" in notes) == (where == "process"), notes
    if where == "process":  # where it went wrong, in the sound process's own words
        assert "synthesize" in notes and "the voice broke on purpose" in notes
    run = tmp_path / "cinereel" / "sound-fails"
    made = manifest_keys(run)
    assert len([rel for rel in made if rel.startswith("clips/") and rel.endswith(".attempt1.mp4")]) == 2
    assert not any(rel.startswith("audio/") for rel in made) and not (run / "reel.mp4").exists()


def test_an_os_error_in_the_sound_process_comes_back_as_itself(tmp_path, monkeypatch):
    """What the CLI turns into its one line ("the disk is full") is the OSError the sound stage raised."""
    import errno

    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(PLUGIN))
    options = PipelineOptions(handles={**preview_handles(), "voice": ModelHandle("test-full-disk-voice", "preview")})
    with pytest.raises(OSError) as raised:
        make_reel(REQUEST, tmp_path, "full-disk", options=options)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "audio/narration_shot-01.wav"
    assert "raised in the sound process" in "\n".join(raised.value.__notes__)


def test_a_failing_picture_branch_lets_the_sound_finish(tmp_path):
    options = PipelineOptions(handles={**preview_handles(), "motion": ModelHandle("test-failing-motion", "preview")})
    with pytest.raises(ValueError, match="the motion broke on purpose"):
        make_reel(REQUEST, tmp_path, "picture-fails", options=options)
    run = tmp_path / "cinereel" / "picture-fails"
    assert {"audio/mix.wav", "audio/delivery.m4a"} <= set(manifest_keys(run))
    assert not (run / "clips").exists() or not any((run / "clips").glob("*.mp4"))
    assert not (run / "reel.mp4").exists()


def test_a_real_voice_keeps_the_stages_in_order(tmp_path):
    """Kokoro holds weights: the sound stages wait for the picture (one model at a time)."""
    options = PipelineOptions(handles={**preview_handles(), "voice": ModelHandle("kokoro", "hexgrad/Kokoro-82M")})
    assert not headless.sound_beside(options)
    assert headless.sound_beside(PipelineOptions())


def test_when_both_branches_fail_the_picture_error_is_raised_and_the_sound_error_logged(tmp_path, caplog,
                                                                                       monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(PLUGIN))
    options = PipelineOptions(handles={**preview_handles(), "motion": ModelHandle("test-failing-motion", "preview"),
                                       "voice": ModelHandle("test-failing-voice", "preview")})
    with caplog.at_level("ERROR", logger="cinereel.headless"), \
            pytest.raises(ValueError, match="the motion broke on purpose"):
        make_reel(REQUEST, tmp_path, "both-fail", options=options)
    assert "the sound stages failed too: the voice broke on purpose" in caplog.text


def test_an_interrupt_while_the_sound_thread_starts_is_raised_once_the_pool_knows_it():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live on the main thread")

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped()

    submitted = []

    class Pool:  # a SIGTERM lands inside submit, as while ThreadPoolExecutor waits for its thread to start
        def submit(self, fn, *args):
            signal.raise_signal(signal.SIGTERM)
            submitted.append(fn)
            return "pending"

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            headless._submit_uninterrupted(Pool(), print)
        assert submitted == [print]  # submit finished before the interrupt was raised
        assert signal.getsignal(signal.SIGTERM) is stop  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- two processes on one run folder ---------------------------------------------------------------------------

RECORDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location('cinereel', sys.argv[1] + '/__init__.py',
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec); sys.modules['cinereel'] = pack; spec.loader.exec_module(pack)
from pathlib import Path
from cinereel.nodes.pipeline.rundir import RunDir, parents_run_lock
run = RunDir(sys.argv[2])
print('ready', flush=True); sys.stdin.readline()
with parents_run_lock(run.root):  # the test holds the run's lock, as the CLI does for its sound process
    for n in range(int(sys.argv[4])):
        run._record(f'{sys.argv[3]}/{n}', 'key')
"""


def test_two_processes_recording_artifacts_at_once_lose_no_manifest_entry(tmp_path):
    from cinereel_testkit import PACK_ROOT

    run, each = RunDir(tmp_path / "cinereel" / "shared"), 150
    with run.locked():
        writers = [subprocess.Popen([sys.executable, "-c", RECORDER, str(PACK_ROOT), str(run.root), name, str(each)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for name in ("picture", "sound")]
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:  # both start together: each read-modify-write races the other's
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            assert writer.wait(timeout=300) == 0
    recorded = set(run.manifest())
    assert recorded == {f"{name}/{n}" for name in ("picture", "sound") for n in range(each)}


def test_the_sound_process_ends_when_it_is_not_needed_and_knows_only_the_pack_s_and_the_plugins_families(
        monkeypatch):
    monkeypatch.setenv("CINEREEL_WORKER_PLUGINS", str(PLUGIN))
    side = headless.start_sound_process(PipelineOptions())
    try:
        assert side.knows({"preview-voice", "preview-music", "test-failing-voice"})
        assert not side.knows({"test-failing-motion"})  # registered in this process only
    finally:
        side.close()
    assert side._process.returncode == 0
    assert headless.start_sound_process(PipelineOptions(handles={
        **preview_handles(), "voice": ModelHandle("kokoro", "hexgrad/Kokoro-82M")})) is None


def test_the_sound_process_warms_up_before_the_parent_first_asks_it_anything(tmp_path, monkeypatch):
    """Its connection is accepted from the start: the child's handshake waits for the accept, and a parent that
    accepted only when it first needed the child (after the director) left the child idle until then."""
    from cinereel.nodes.pipeline.branch_process import BranchProcess

    marker = tmp_path / "warmed"
    (tmp_path / "warm_up_marker.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['CINEREEL_TEST_WARM_MARKER']).write_text('imported')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("CINEREEL_TEST_WARM_MARKER", str(marker))
    side = BranchProcess("sound", ("warm_up_marker",))
    try:
        for _ in range(300):  # the parent asks nothing meanwhile (a director at work)
            if marker.exists():
                break
            time.sleep(0.1)
        assert marker.read_text() == "imported"
        assert side.knows({"preview-voice"})
    finally:
        side.close()
    assert side._process.returncode == 0
