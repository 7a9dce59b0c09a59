"""The run folder under kill -9, SIGTERM and a second process: nothing lost, nothing half-written left,
no child process outliving its parent, never two processes working on one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from cinereel.nodes.pipeline.rundir import PARTIAL, RunDir, RunInUse, run_lock
from cinereel_testkit import PACK_ROOT

pytestmark = pytest.mark.reel

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
SHORT = ["--duration", "4", "--shots", "2", "--resolution", "480p"]
IMPORT_PACK = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('cinereel', "
               f"{str(PACK_ROOT / '__init__.py')!r}, submodule_search_locations=[{str(PACK_ROOT)!r}]); "
               "m = importlib.util.module_from_spec(spec); sys.modules['cinereel'] = m; spec.loader.exec_module(m); ")
RUNNER = IMPORT_PACK + "from cinereel.nodes.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def start_cli(out: Path, run_id: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, SENTENCE, *SHORT, "--out", str(out), "--run-id", run_id,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(process: subprocess.Popen, starts: str, limit_s: float = 300) -> list[str]:
    """Stderr lines up to the first that starts with ``starts`` (a stage that just finished)."""
    seen, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"the CLI ended (code {process.wait()}) before {starts!r}: {seen}")
        seen.append(line.rstrip("\n"))
        if line.strip().startswith(starts):
            return seen
    raise AssertionError(f"no {starts!r} within {limit_s} s: {seen}")


def children_of_dead(run_root: Path) -> list[str]:
    """Processes still working on files of ``run_root`` (an orphaned ffmpeg would be one)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "pid"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(run_root) in cmdline and "pytest" not in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


def children_now(process: subprocess.Popen) -> list[psutil.Process]:
    """The CLI's child processes at this moment (its sound process among them while that runs)."""
    return psutil.Process(process.pid).children(recursive=True)


def still_running(children: list[psutil.Process]) -> list[str]:
    alive = []
    for child in children:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{child.pid}: {' '.join(child.cmdline())[:200]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def partials(run_root: Path) -> list[Path]:
    return [p for p in run_root.rglob(".*") if PARTIAL.match(p.name)]


@pytest.mark.parametrize("after, during", [("director", "keyframes"), ("keyframes", "motion"), ("music", "mix"),
                                           ("mix", "assembly")])
def test_kill_9_mid_stage_then_the_same_command_finishes_without_redoing_or_leaking(tmp_path, after, during):
    out, run_id = tmp_path / "out", f"kill-{during}"
    root = out / "cinereel" / run_id
    process = start_cli(out, run_id)
    wait_for_line(process, after)
    time.sleep(0.2)  # into the next stage
    children = children_now(process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.5)
    assert children_of_dead(root) == [], "a child process outlived its killed parent"
    assert still_running(children) == [], "a child process (the sound branch's?) outlived its killed parent"
    before = {rel: entry["time"] for rel, entry in RunDir(root).manifest().items()}

    resumed = start_cli(out, run_id)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert Path(stdout.strip()) == root / "reel.mp4" and (root / "reel.mp4").stat().st_size > 0
    after_resume = RunDir(root).manifest()
    assert {rel: after_resume[rel]["time"] for rel in before} == before, "a finished artifact was made again"
    assert partials(root) == [], partials(root)
    assert not (root / "superseded").exists(), "nothing changed, so nothing was superseded"
    assert children_of_dead(root) == []


def test_sigterm_stops_like_ctrl_c_and_leaves_nothing_half_written(tmp_path):
    out, run_id = tmp_path / "out", "terminated"
    process = start_cli(out, run_id)
    wait_for_line(process, "director")
    children = children_now(process)
    # The sound branch's process (started before the director) is working: SIGTERM reaches the CLI alone.
    assert any("child_main.py" in " ".join(child.cmdline()) for child in children), children
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert still_running(children) == [], "the CLI returned before its children ended"
    assert stderr.strip().splitlines()[-1] == ("cinereel: cancelled; run the same command again to resume where it "
                                               "stopped")
    assert partials(out / "cinereel" / run_id) == []


def test_a_second_process_on_the_same_run_refuses_or_waits_and_nothing_is_done_twice(tmp_path):
    out, run_id = tmp_path / "out", "shared"
    root = out / "cinereel" / run_id
    first = start_cli(out, run_id)
    wait_for_line(first, "director")
    refused = start_cli(out, run_id)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2, err
    assert err.startswith(f"cinereel: error: run {run_id} is in use by process {first.pid} (cinereel CLI) since "), err
    assert err.count("\n") == 1 and "--wait" in err

    waiting = start_cli(out, run_id, "--wait")
    assert first.wait(timeout=600) == 0, first.stderr.read()
    made = RunDir(root).manifest()
    stdout, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, stderr
    assert f"cinereel: run {run_id} is in use by process {first.pid}" in stderr and "waiting" in stderr
    assert RunDir(root).manifest() == made, "the waiting process found the run finished and redid nothing"
    assert not (root / "superseded").exists() and partials(root) == []


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    root = tmp_path / "cinereel" / "stale"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               f"f = open({str(root / '.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "f.write('process %d (test) since now' % os.getpid()); f.flush(); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    root.mkdir(parents=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"run stale is in use by process {holder.pid} \\(test\\)"):
            with run_lock(root):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(root):  # the OS released the dead holder's lock
        assert (root / ".lock").read_text(encoding="utf-8").startswith(f"process {os.getpid()} ")


def test_a_thread_joining_the_hold_while_the_first_clears_partial_files_keeps_the_one_it_writes(tmp_path, monkeypatch):
    """The first hold clears what a dead process left half-written; a second thread of this process that joins
    the hold meanwhile (two renders side by side) must not lose the partial file it is writing (seen in CI:
    "writing a2.txt produced an empty file")."""
    import threading

    from cinereel.nodes.pipeline import rundir

    root = tmp_path / "cinereel" / "joined"
    root.mkdir(parents=True)
    clearing, written, cleared = threading.Event(), threading.Event(), threading.Event()
    real_remove = rundir.remove_partials

    def slow_remove(path):
        clearing.set()
        written.wait(timeout=1.0)  # the joining thread writes now, if it can get in
        removed = real_remove(path)
        cleared.set()
        return removed

    monkeypatch.setattr(rundir, "remove_partials", slow_remove)
    survived = []

    def second_writer():
        clearing.wait(timeout=10)
        with run_lock(root):
            partial = root / ".clip.0123456789ab.partial.mp4"
            partial.write_bytes(b"frames")
            written.set()
            cleared.wait(timeout=10)
            survived.append(partial.exists())

    writer = threading.Thread(target=second_writer)
    writer.start()
    with run_lock(root):
        pass
    writer.join(timeout=30)
    assert survived == [True]


# A process that makes one artifact and is killed (SIGKILL, nothing after it runs) as that artifact's finished
# file is renamed into place: just before the rename, or just after it.
KILLED_AT_THE_RENAME = IMPORT_PACK + (
    "import os, signal; from pathlib import Path; import cinereel.nodes.pipeline.rundir as rundir; "
    "root, when = sys.argv[1], sys.argv[2]; real = os.replace\n"
    "def replace(src, dst):\n"
    "    if Path(dst).name == 'shot_01.png' and when == 'before': os.kill(os.getpid(), signal.SIGKILL)\n"
    "    real(src, dst)\n"
    "    if Path(dst).name == 'shot_01.png' and when == 'after': os.kill(os.getpid(), signal.SIGKILL)\n"
    "rundir.os.replace = replace\n"
    "rundir.RunDir(root).produce('keyframes/shot_01.png', {'v': 1}, lambda tmp: tmp.write_text('made'))")


@pytest.mark.parametrize("killed", ["before", "after"])
def test_an_artifact_killed_at_its_rename_is_either_made_again_or_kept_never_moved_aside(tmp_path, killed):
    """After the rename the file is finished and the next run keeps it; before it, the next run makes it. In CI a
    keyframe finished just before a kill -9 was moved to superseded/ and drawn again: its key came after it."""
    root = tmp_path / "run"
    died = subprocess.run([sys.executable, "-c", KILLED_AT_THE_RENAME, str(root), killed], capture_output=True,
                          text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert (root / "keyframes" / "shot_01.png").is_file() == (killed == "after")
    run = RunDir(root)
    path, made = run.produce("keyframes/shot_01.png", {"v": 1}, lambda tmp: tmp.write_text("again"))
    assert made == (killed == "before")
    assert path.read_text() == ("again" if killed == "before" else "made")
    assert run.superseded() == [] and not (root / "superseded").exists()
    assert partials(root) == []  # the killed process's temporary file, removed as the run resumed


def test_three_edits_within_one_second_keep_three_versions(tmp_path):
    run = RunDir.create(tmp_path, "edits")
    for version in range(4):
        run.produce("keyframes/shot_01.png", {"version": version},
                    lambda tmp, version=version: tmp.write_text(f"v{version}", encoding="utf-8"))
    log = run.superseded()
    assert [entry["reason"] for entry in log] == ["its inputs changed"] * 3
    kept = sorted((run.root / entry["moved_to"]).read_text(encoding="utf-8") for entry in log)
    assert kept == ["v0", "v1", "v2"] and len({entry["moved_to"] for entry in log}) == 3
    assert run.path("keyframes/shot_01.png").read_text(encoding="utf-8") == "v3"


def test_a_resumed_run_removes_only_its_own_stale_partial_files(tmp_path):
    run = RunDir.create(tmp_path, "stale-partials")
    stale = run.path("clips/.shot_01.attempt1.0123456789ab.partial.mp4")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    finished = run.path("clips/shot_01.attempt1.mp4")
    finished.write_bytes(b"kept")
    elsewhere = tmp_path / ".other.0123456789ab.partial.mp4"  # outside the run folder: not ours
    elsewhere.write_bytes(b"")
    with run.locked():
        pass
    assert not stale.exists() and finished.read_bytes() == b"kept" and elsewhere.exists()


def test_espeak_scratch_copies_of_dead_processes_are_removed(tmp_path):
    from cinereel.model_loaders import espeak

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = Path(tempfile.mkdtemp(prefix=f"{espeak.SCRATCH_PREFIX}{dead_pid}-"))
    mine = Path(tempfile.mkdtemp(prefix=f"{espeak.SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        espeak._remove_folders_of_dead_processes()
        assert not orphan.exists() and mine.exists()
    finally:
        for folder in (orphan, mine):
            if folder.exists():
                folder.rmdir()


def test_ffmpeg_dies_with_its_parent():
    """The parent-death signal, at the library call: a Python parent that starts ffmpeg through the pack's
    video module and is killed leaves no ffmpeg behind."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    code = (RUNNER.split("from cinereel.nodes.pipeline.cli")[0] +
            "import subprocess; from cinereel.nodes.pipeline.video import ffmpeg_exe; "
            "from cinereel.model_loaders.children import die_with_parent; "
            "p = subprocess.Popen([ffmpeg_exe(), '-nostdin', '-f', 'lavfi', '-i', 'anullsrc', '-f', 'null', '-'], "
            "stderr=subprocess.DEVNULL, **die_with_parent()); print(p.pid, flush=True); p.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "ffmpeg outlived its killed parent"
        time.sleep(0.1)


def test_report_lists_what_was_superseded(tmp_path):
    from cinereel.nodes.pipeline.cli import main

    out = tmp_path / "out"
    assert main([SENTENCE, *SHORT, "--out", str(out), "--run-id", "edited"]) == 0
    assert main([SENTENCE, *SHORT, "--out", str(out), "--run-id", "edited", "--target-lufs", "-16"]) == 0
    report = json.loads((out / "cinereel" / "edited" / "report.json").read_text(encoding="utf-8"))
    moved = {entry["artifact"] for entry in report["superseded"]}
    assert "audio/mix.wav" in moved and all(e["reason"] == "its inputs changed" for e in report["superseded"])


WRITE_SITES = ("director.json", "plan.json", "report.json", "manifest.json", "portraits/", "keyframes/", "clips/",
               "audio/narration_", "audio/narration.wav", "audio/music", "audio/mix.wav", "audio/delivery.m4a",
               "reel.mp4")


def test_a_full_disk_at_every_write_site_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """Fault injection: the disk fills at each place the pipeline writes, one after the other, on one run
    folder. Every failure is one line (exit 2) and leaves a folder the next command resumes; the last one
    finishes the reel with nothing half-written left."""
    import errno

    from cinereel.nodes.pipeline import audio, headless, reel, rundir
    from cinereel.nodes.pipeline.cli import main

    # The faults are injected in this process, so the sound stages run here too (in a thread beside the
    # picture's, as for a family only this process knows); test_sound_branch.py sends an OSError back from
    # the sound process.
    monkeypatch.setattr(headless, "start_sound_process", lambda options: None)
    out, run_id = tmp_path / "out", "disk-full-everywhere"
    root = out / "cinereel" / run_id
    real_write = rundir.atomic_write
    for site in WRITE_SITES:
        # The sound stages run beside the picture stages, and a failing branch lets the other finish: the
        # rounds that fill the disk at a picture site made the sound files. Remove them, so each sound
        # round writes its file again (the resume then remakes what depends on it).
        if site.startswith("audio/"):
            for path in (root / "audio").glob("*"):
                if path.relative_to(root).as_posix().startswith(site):
                    path.unlink()

        def full_at_site(path, write, site=site, **options):
            if path.resolve().relative_to(root.resolve()).as_posix().startswith(site):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_write(path, write, **options)

        for module in (rundir, audio, reel):
            monkeypatch.setattr(module, "atomic_write", full_at_site)
        code = main([SENTENCE, *SHORT, "--out", str(out), "--run-id", run_id])
        err = capsys.readouterr().err.splitlines()[-1]
        assert (code, err.split(" (")[0]) == (2, "cinereel: error: the disk is full"), (site, code, err)
        assert "run the same command again to resume" in err and partials(root) == [], site
    monkeypatch.undo()
    assert main([SENTENCE, *SHORT, "--out", str(out), "--run-id", run_id]) == 0
    assert (root / "reel.mp4").stat().st_size > 0 and partials(root) == []
