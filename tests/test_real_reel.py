"""A whole reel from the command line with every real backend on tiny checkpoints: the Qwen3.5 director
plans it, FLUX.2 klein and Wan2.2 render it, the same Qwen checkpoint critiques every clip, Kokoro
narrates, ACE-Step scores, and the sound is mastered and muxed. One load per model and phase."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import psutil
import pytest
from cinereel.nodes.pipeline.cli import main
from cinereel_testkit import check_full_real_reel, load_test_module

pytestmark = pytest.mark.reel

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
CHECKPOINTS = {  # CLI flag -> (builder module, function)
    "--llm": ("tiny_qwen", "tiny_qwen_checkpoint"),
    "--keyframes": ("tiny_flux2", "tiny_flux2_checkpoint"),
    "--motion": ("tiny_wan", "tiny_wan_checkpoint"),
    "--voice": ("tiny_kokoro", "tiny_kokoro_checkpoint"),
    "--music": ("tiny_acestep", "tiny_acestep_checkpoint"),
}
# What a CPU user changes from the GPU defaults: float32, two steps, no first-block cache.
CPU_SETTINGS = ["--dtype", "float32", "--device", "cpu", "--set", "keyframes.steps=2", "--set", "motion.steps=2",
                "--set", "keyframes.first_block_cache=0", "--set", "motion.first_block_cache=0",
                "--set", "music.steps=2"]


@pytest.fixture(scope="module")
def checkpoint_flags() -> list[str]:
    flags = []
    for flag, (module, function) in CHECKPOINTS.items():
        flags += [flag, str(getattr(load_test_module(module), function)())]
    return flags


def test_the_command_line_makes_a_reel_with_every_real_backend(tmp_path, checkpoint_flags, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Two 1.5 s shots: the narration the random director writes (as long as the decoding bound lets it)
    # fits once the voice stage compresses and spills it; Kokoro speaks English offline.
    argv = [SENTENCE, "--duration", "3", "--shots", "2", "--resolution", "480p", "--language", "en-US",
            "--out", str(tmp_path), "--run-id", "tiny-real", "--json",
            # No retry round, so each model loads once per phase (retries are tested in test_gate.py and
            # test_keyframe_gate.py); the keyframe gate is on by default with the real critic.
            "--gate", "--max-retries", "0",
            # Random tiny decoders draw nearly flat frames that the technical check rightly fails; off,
            # every clip goes to the language-model critic.
            "--no-technical-check",
            *checkpoint_flags, *CPU_SETTINGS]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    summary = json.loads(out.getvalue())
    run = Path(summary["run_dir"])
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))

    # The language model planned it (constrained decoding: a valid plan from random weights).
    assert (plan["width"], plan["height"], len(plan["shots"])) == (832, 480, 2) and plan["language"] == "en-US"
    check_full_real_reel(report, shots=2, width=832, height=480, frames=48)
    # Every Qwen load (the director's, the keyframe critic's, the clip critic's) ran in a worker process (the
    # Qwen default), gone after each eviction.
    workers = [e["worker_pid"] for e in report["residency"] if e["event"] == "load" and e["family"] == "qwen3.5"]
    assert all(workers) and len(set(workers)) == 3
    for pid in workers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert Path(summary["reel"]).stat().st_size > 0 and (run / "reel.srt").exists()
