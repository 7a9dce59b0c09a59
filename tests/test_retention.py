"""What a finished run keeps (``--keep``), listing runs, and removing old ones (issue #10, part 5)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from cinereel.nodes.pipeline.cli import main
from cinereel_testkit import load_test_module, sample_plan_dict

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
BOOKKEEPING = {".lock", "manifest.json", "report.json", "plan.json",  # rewritten by every invocation
               "contact_sheet.png", "kept.json"}  # (the run as pictures; what each shot last used)


@pytest.fixture
def plan_file(tmp_path) -> Path:
    """Two 3 s shots at 448x256, narrated (so the reel has subtitles): a small, quick preview reel."""
    plan = sample_plan_dict(width=448, height=256, duration_s=6.0)
    for shot in plan["shots"]:
        shot["duration_s"] = 3.0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def files(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of a run: relative path -> (inode, mtime in ns, size). A rewrite (atomic rename) changes it."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            found[path.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def spy_on_removal(monkeypatch, retention) -> dict[str, int]:
    """The size of every file retention removes, taken just before it goes."""
    sizes: dict[str, int] = {}
    real = retention.remove_files

    def spy(root, paths):
        sizes.update({p.relative_to(root).as_posix(): p.stat().st_size for p in paths})
        return real(root, paths)

    monkeypatch.setattr(retention, "remove_files", spy)
    return sizes


def report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text(encoding="utf-8"))


def reel_cli(plan_file: Path, out: Path, *extra: str) -> int:
    return main([SENTENCE, "--plan", str(plan_file), "--out", str(out), "--run-id", "run", *extra])


# -- keep=final --------------------------------------------------------------------

def test_keep_final_leaves_the_reel_its_subtitles_and_the_report_and_only_after_assembly(
        tmp_path, plan_file, monkeypatch, capsys):
    from cinereel.nodes.pipeline import video

    out, run = tmp_path / "out", tmp_path / "out" / "cinereel" / "run"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "reel.mp4")

    monkeypatch.setattr(video, "assemble_reel", disk_full)
    assert reel_cli(plan_file, out, "--keep", "final") == 2
    assert "the disk is full" in capsys.readouterr().err
    before = files(run)  # assembly failed: retention never ran, every file is there
    assert "reel.mp4" not in before and {"clips/shot_01.attempt1.mp4", "manifest.json", "plan.json"} <= set(before)
    assert "retention" not in report(run)

    monkeypatch.undo()
    from cinereel.nodes.pipeline import retention as retention_module

    sizes = spy_on_removal(monkeypatch, retention_module)
    assert reel_cli(plan_file, out, "--keep", "final", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    # .lock is the run lock's (empty once released) file: it says who works on the run, never data
    assert sorted(p.name for p in run.iterdir()) == [".lock", "reel.mp4", "reel.srt", "report.json"]
    assert Path(summary["reel"]) == run / "reel.mp4" and (run / "reel.mp4").stat().st_size > 0
    assert "-->" in (run / "reel.srt").read_text(encoding="utf-8")
    retention = report(run)["retention"]
    removed = sorted(set(before) - {"report.json", ".lock"})  # the resumed run made only the reel and subtitles
    assert retention["keep"] == "final" and retention["removed"] == removed
    assert retention["removed_files"] == len(removed) and retention["not_removed"] == []
    assert retention["removed_bytes"] == sum(sizes.values()) and set(sizes) == set(removed)
    assert all(sizes[rel] == before[rel][2] for rel in removed if rel not in BOOKKEEPING)
    assert report(run)["artifacts"] == {"reel": "reel.mp4", "subtitles": "reel.srt"}


# -- keep=best -----------------------------------------------------------------------

LOW = {"composition": 5, "motion_coherence": 5, "character_consistency": 5, "lighting_fidelity": 5}
LOWER = {"composition": 4, "motion_coherence": 4, "character_consistency": 4, "lighting_fidelity": 4}
HIGH = {"composition": 8, "motion_coherence": 8, "character_consistency": 8, "lighting_fidelity": 8}
# In the order the gate asks: round 1 shot_01, shot_02; round 2 shot_01, shot_02.
SCRIPT = [{"scores": LOW, "label": "OBJECT_MORPHING", "notes": "the sign melts"},  # motion label: a new clip
          {"scores": LOW, "label": "NEON_GLOW_LEAK", "notes": "magenta faces"},  # image label: keyframe + clip
          {"scores": HIGH, "label": None, "notes": "solid"},  # shot_01 passes with attempt 2
          {"scores": LOWER, "label": "NEON_GLOW_LEAK", "notes": "worse"}]  # shot_02 keeps attempt 1


@pytest.fixture
def scripted_critic():
    base = load_test_module("test_openai_backend").Server

    class ScriptedCritic(base):
        def answer(self, body):
            critique = SCRIPT[len(self.requests) - 1]
            return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": json.dumps(critique)}}]}

    server = ScriptedCritic()
    yield server
    server.close()


def test_keep_best_keeps_the_chosen_attempts_and_a_resume_re_renders_exactly_what_it_removed(
        tmp_path, plan_file, scripted_critic, capsys):
    out, run = tmp_path / "out", tmp_path / "out" / "cinereel" / "run"
    # the clip gate's attempts are what --keep best chooses among (the keyframe gate keeps no attempts of clips)
    gate = ["--gate", "--no-keyframe-gate", "--max-retries", "1", "--threshold", "7", "--llm", "openai",
            "--set", f"llm.base_url={scripted_critic.base_url}", "--set", "llm.model=critic"]
    assert reel_cli(plan_file, out, *gate) == 0, capsys.readouterr().err
    assert len(scripted_critic.requests) == 4
    chosen = {s["shot"]: s["chosen_attempt"] for s in report(run)["gate"]["shots"]}
    assert chosen == {"shot_01": 2, "shot_02": 1}
    superseded = run / "superseded" / "20200101-000000" / "clips" / "shot_01.attempt1.mp4"
    superseded.parent.mkdir(parents=True)
    superseded.write_bytes(b"an older render")
    everything = files(run)

    # Applied on a resume of the finished run: nothing is redone, then keep=best removes what the reel does not use.
    assert reel_cli(plan_file, out, *gate, "--keep", "best") == 0, capsys.readouterr().err
    assert len(scripted_critic.requests) == 4, "the critiques were on disk: the critic was not asked again"
    removed = ["clips/shot_01.attempt1.mp4", "clips/shot_01.attempt1.qc.json", "clips/shot_02.attempt2.mp4",
               "clips/shot_02.attempt2.qc.json", "keyframes/shot_02.attempt2.png",
               "superseded/20200101-000000/clips/shot_01.attempt1.mp4"]
    retention = report(run)["retention"]
    assert retention["removed"] == removed and retention["removed_files"] == len(removed)
    assert retention["removed_bytes"] == sum(everything[rel][2] for rel in removed)
    kept = files(run)
    assert set(kept) == set(everything) - set(removed)
    assert not (run / "superseded").exists()
    assert {rel: v for rel, v in kept.items() if rel not in BOOKKEEPING} == \
        {rel: v for rel, v in everything.items() if rel not in BOOKKEEPING and rel not in removed}
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert all((run / rel).is_file() for rel in manifest), "the manifest lists only files on disk"
    assert not set(removed) & set(manifest)
    assert {"clips/shot_01.attempt2.mp4", "clips/shot_02.attempt1.mp4", "keyframes/shot_01.png",
            "keyframes/shot_02.png", "critic/shot_01.attempt1.json", "critic/shot_02.attempt2.json"} <= set(manifest)

    # Resuming the same command: the motion stage re-makes shot_01's first clip and the gate, replaying its
    # rounds, shot_02's second keyframe and clip: exactly the removed attempts, from the same inputs (superseded/
    # is gone for good). The critiques were kept, so the critic is not asked again; the reel is not re-made.
    assert reel_cli(plan_file, out, *gate) == 0, capsys.readouterr().err
    again = files(run)
    changed = {rel for rel in set(again) | set(kept) if again.get(rel) != kept.get(rel)}
    assert changed - BOOKKEEPING == set(removed[:-1])
    assert len(scripted_critic.requests) == 4
    assert [s["chosen_attempt"] for s in report(run)["gate"]["shots"]] == [2, 1]
    assert "retention" not in report(run)  # keep=all removes nothing and says so by its absence...
    assert report(run)["history"][-1]["retention"]["removed"] == removed  # ...and earlier removals stay on record


# -- cinereel runs / clean -------------------------------------------------------------

def fake_run(out: Path, run_id: str, age_s: float, reel: bool = True, recent: str | None = None,
             lock_file: bool = False) -> Path:
    """A run folder whose every file and folder was last changed ``age_s`` ago (``recent``: one file changed now)."""
    root = out / "cinereel" / run_id
    (root / "clips").mkdir(parents=True)
    if lock_file:
        (root / ".lock").touch()
    (root / "clips" / "shot_01.attempt1.mp4").write_bytes(b"x" * 1000)
    (root / "report.json").write_text("{}", encoding="utf-8")
    if reel:
        (root / "reel.mp4").write_bytes(b"r" * 500)
    stamp = time.time() - age_s
    for path in [*root.rglob("*"), root]:
        os.utime(path, (stamp, stamp))
    if recent:
        (root / recent).write_bytes(b"new")
    return root


@pytest.fixture
def held_lock():
    """Hold ``<run>/.lock`` the way a running cinereel does (an exclusive flock on its own open file)."""
    held = []

    def hold(root: Path) -> None:
        handle = open(root / ".lock", "rb+")  # noqa: SIM115 - held until the test ends
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(handle)

    yield hold
    for handle in held:
        handle.close()


def test_clean_removes_old_runs_but_never_a_locked_or_recently_touched_one(tmp_path, capsys, held_lock):
    out = tmp_path / "out"
    old = fake_run(out, "old-reel", 8 * 86400)
    old_unfinished = fake_run(out, "old-unfinished", 30 * 86400, reel=False)
    locked = fake_run(out, "old-but-running", 9 * 86400, lock_file=True)
    unlocked = fake_run(out, "old-lock-free", 9 * 86400, lock_file=True)  # its process ended: the lock is free
    held_lock(locked)
    resumed = fake_run(out, "old-but-resumed", 9 * 86400, recent="clips/shot_02.attempt1.mp4")
    fresh = fake_run(out, "fresh", 3600)

    assert main(["clean", "--older-than", "7d", "--out", str(out), "--dry-run"]) == 0
    assert all(p.is_dir() for p in (old, old_unfinished, locked, unlocked, resumed, fresh))
    capsys.readouterr()

    assert main(["clean", "--older-than", "7d", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert not old.exists() and not old_unfinished.exists() and not unlocked.exists()
    assert locked.is_dir() and resumed.is_dir() and fresh.is_dir()
    # 1000 + 2 + 500, 1000 + 2, 1000 + 2 + 500 bytes, and the lock files the dry run took (a line each)
    assert re.search(r"removed 3 run\(s\), (3\.9|4\.[0-9]) KB", captured.out), captured.out
    assert "skipped old-but-running: a running cinereel holds it" in captured.err

    assert main(["runs", "--out", str(out), "--json"]) == 0
    runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(runs) == {"old-but-running", "old-but-resumed", "fresh"}
    assert runs["old-but-running"]["locked"] and not runs["fresh"]["locked"]
    assert runs["fresh"]["bytes"] == 1000 + 2 + 500 and runs["fresh"]["reel"]
    assert runs["old-but-resumed"]["bytes"] == 1000 + 2 + 500 + 3


def test_runs_lists_id_size_date_and_whether_there_is_a_reel(tmp_path, capsys):
    out = tmp_path / "out"
    fake_run(out, "with-reel", 2 * 86400)
    fake_run(out, "no-reel-yet", 60, reel=False)
    (out / "cinereel" / "notes.txt").write_text("not a run", encoding="utf-8")
    assert main(["runs", "--out", str(out)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "ID", "SIZE", "CHANGED", "REEL"]
    assert [row.split()[0] for row in rows] == ["no-reel-yet", "with-reel"]  # newest first
    assert rows[0].split()[-1] == "no" and rows[1].split()[-1] == "yes"
    assert "1.5 KB" in rows[1] and time.strftime("%Y-%m-%d", time.localtime(time.time() - 2 * 86400)) in rows[1]


@pytest.mark.parametrize("age", ["7", "7 days", "-1d", "d"])
def test_clean_needs_an_age_with_a_unit(tmp_path, capsys, age):
    assert main(["clean", f"--older-than={age}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error: --older-than") and err.count("\n") == 1


def test_runs_of_an_empty_output_folder(tmp_path, capsys):
    assert main(["runs", "--out", str(tmp_path / "nothing")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []
    assert main(["clean", "--older-than", "1d", "--out", str(tmp_path / "nothing")]) == 0
    assert not (tmp_path / "nothing").exists()


def test_benchmark_removes_its_temporary_folder(tmp_path, plan_file, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main([SENTENCE, "--plan", str(plan_file), "--benchmark", "--benchmark-rounds", "1",
                 "--benchmark-warmup", "0"]) == 0  # in this process (rounds in their own: test_benchmark.py)
    assert "s wall for the pipeline" in capsys.readouterr().out
    assert list(tmp_path.glob("cinereel-bench-*")) == []
