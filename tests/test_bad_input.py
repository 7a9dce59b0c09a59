"""Bad input gets a clear error before any work starts; emoji and right-to-left text just work."""

from __future__ import annotations

import json
import sys

import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.preview import KenBurnsMotion
from cinereel.model_loaders.residency import register_family
from cinereel.nodes.pipeline.cli import main
from cinereel.nodes.pipeline.comfy import Cancelled, clear_cancel, request_cancel

TOKYO = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"


@pytest.mark.parametrize("args,message", [
    ([""], "sentence is empty"),
    (["   \n\t "], "sentence is empty"),
    (["x" * 10_000], "the limit is 2000"),
    ([TOKYO, "--duration", "0"], "duration"),
    ([TOKYO, "--duration", "-5"], "duration"),
    ([TOKYO, "--duration", "121"], "duration"),
    ([TOKYO, "--shots", "0"], "shots"),
    ([TOKYO, "--language", "klingon"], "unknown language 'klingon'"),
    ([TOKYO, "--run-id", "../elsewhere"], "not a plain folder name"),
    ([TOKYO, "--run-id", "a/b"], "not a plain folder name"),
    ([TOKYO, "--run-id", "a\\b"], "not a plain folder name"),
    ([TOKYO, "--run-id", ".."], "not a plain folder name"),
    ([TOKYO, "--set", "motion.stpes=30"], "motion has no option 'stpes'; it has: offload"),
    ([TOKYO, "--set", "voice=1"], "must look like STAGE.OPTION=VALUE"),
    ([TOKYO, "--set", "llm.residency=elsewhere"], "residency 'elsewhere' must be 'in_process' or 'subprocess'"),
    ([TOKYO, "--gate", "--max-retries", "9"], "max_retries must be a whole number from 0 to 5"),
    ([TOKYO, "--gate", "--threshold", "11"], "threshold must be a number from 1 to 10"),
    ([TOKYO, "--target-lufs", "0"], "target loudness 0 LUFS is outside -40 to -5"),
    ([TOKYO, "--target-lufs", "nan"], "target loudness nan LUFS is outside -40 to -5"),
    ([TOKYO, "--set", "motion.steps=0"], "motion.steps=0 is outside 1 to 200"),
    ([TOKYO, "--set", "motion.steps=2.5"], "motion.steps=2.5 must be a whole number from 1 to 200"),
    ([TOKYO, "--set", "keyframes.offload=cpu"], "keyframes.offload='cpu' is not one of none, model, group"),
    ([TOKYO, "--set", "keyframes.fp8_storage=1"], "keyframes.fp8_storage=1 must be true or false"),
    ([TOKYO, "--motion", "/no/such/folder"], "motion checkpoint '/no/such/folder' is neither 'preview'"),
    ([TOKYO, "--plan", "."], "--plan . is a folder; give the plan's JSON file"),
    ([TOKYO, "--plan", "/no/such/plan.json"], "--plan /no/such/plan.json cannot be read (No such file or directory)"),
])
def test_bad_input_fails_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error:") and message in err, err
    assert err.count("\n") == 1, f"one line, not {err!r}"
    assert not out.exists(), "an error in the input must not leave a run folder behind"


def test_every_problem_is_named_in_one_line_before_anything_loads(tmp_path, capsys):
    from cinereel.model_loaders.residency import RESIDENCY

    mark = RESIDENCY.mark()
    args = [TOKYO, "--duration", "0", "--target-lufs", "0", "--gate", "--threshold", "11", "--set",
            "motion.steps=0", "--set", "motion.stpes=3", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error: 5 problems: ") and err.count("\n") == 1, err
    for part in ("motion has no option 'stpes'", "duration_s must be more than 0", "threshold must be a number",
                 "target loudness 0 LUFS", "motion.steps=0 is outside 1 to 200"):
        assert part in err, (part, err)
    assert [e for e in RESIDENCY.log_since(mark) if e["event"] == "load"] == []
    assert not (tmp_path / "out").exists()


def test_a_plan_file_that_is_not_a_plan_names_the_field(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"title": "x"}), encoding="utf-8")
    assert main([TOKYO, "--plan", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "shots is required" in capsys.readouterr().err


@pytest.mark.parametrize("sentence,language", [
    ("🚀 An astronaut 👩‍🚀 wanders through Tokyo at night 🌃✨", "ja"),
    ("رائد فضاء يمشي في شوارع القاهرة ليلا", None),
    ("אסטרונאוטית הולכת ברחובות ירושלים בלילה", None),
])
def test_emoji_and_right_to_left_sentences_plan_and_speak(tmp_path, capsys, sentence, language):
    assert main([sentence, "--out", str(tmp_path), "--plan-only"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sentence"] == sentence and len(plan["shots"]) == 6
    if language:
        assert plan["language"] == language
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline.director import direct
    from cinereel.nodes.pipeline.headless import preview_handles
    from cinereel.nodes.pipeline.voice import narrate

    handles = preview_handles()
    reel = narrate(direct(handles["llm"], DirectorRequest(sentence, duration_s=6, shots=2), tmp_path / "v"),
                   handles["voice"])
    assert reel.artifact_path("narration").stat().st_size > 1000


class CancellingMotion(KenBurnsMotion):
    """Asks for cancel after 20 frames of the second clip, as the user pressing ComfyUI's cancel would."""
    camera_filter = None  # the stage draws the frames with render_clip, which this test alters or counts

    clips = 0

    def render_clip(self, keyframe, shot, plan, num_frames, seed, callback=None):
        CancellingMotion.clips += 1
        for index, frame in enumerate(super().render_clip(keyframe, shot, plan, num_frames, seed, callback)):
            if CancellingMotion.clips == 2 and index == 20:
                request_cancel()
            yield frame


register_family("test-cancelling-motion", lambda h: CancellingMotion())


def test_cancel_mid_clip_leaves_no_half_written_file_and_the_rerun_resumes(tmp_path):
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline.director import direct
    from cinereel.nodes.pipeline.headless import preview_handles
    from cinereel.nodes.pipeline.keyframes import render_keyframes
    from cinereel.nodes.pipeline.motion import animate

    handles = preview_handles()
    reel = render_keyframes(direct(handles["llm"], DirectorRequest(TOKYO, duration_s=6, shots=3), tmp_path),
                            handles["keyframes"])
    motion = ModelHandle("test-cancelling-motion", "cancel")
    CancellingMotion.clips = 0
    try:
        with pytest.raises(Cancelled):
            animate(reel, motion)
    finally:
        clear_cancel()
    clips = reel.run_dir.root / "clips"
    assert sorted(p.name for p in clips.iterdir() if p.suffix == ".mp4") == ["shot-01.attempt1.mp4"]
    assert not [p for p in reel.run_dir.root.rglob("*") if "partial" in p.name]
    CancellingMotion.clips = 10  # no more cancelling
    out = animate(reel, motion)
    assert CancellingMotion.clips == 12, "the finished first clip was made again"
    assert all(out.artifact_path(f"clip:{s.id}").exists() for s in out.plan.shots)


def test_problems_of_the_machine_and_of_services_are_one_line_too(tmp_path, capsys, monkeypatch):
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)  # a CLI process has no ComfyUI loaded
    half_made = tmp_path / "klein"
    (half_made / "vae").mkdir(parents=True)  # a download stopped early

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x", encoding="utf-8")
    deep, empty = tmp_path / "deep.json", tmp_path / "empty.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    empty.write_text("", encoding="utf-8")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    out = str(tmp_path / "out")
    cases = [
        ([TOKYO, "--out", str(a_file)], "a file stands where a folder is needed"),
        ([TOKYO, "--plan", str(deep), "--out", out], "plan is nested too deeply"),
        ([TOKYO, "--plan", str(empty), "--out", out], "is empty; give the plan's JSON"),
        ([TOKYO, "--llm", "openai", "--set", f"llm.base_url={down}", "--set", "llm.model=m", "--out", out],
         f"cannot reach the OpenAI-compatible server at {down}"),
        ([TOKYO, "--out", "/sys/cinereel-out"], "Operation not permitted; choose another --out folder"),
        ([TOKYO, "--music", "ACE-Step/acestep-v15-xl-turbo-diffusers", "--out", out],
         "music: ACE-Step/acestep-v15-xl-turbo-diffusers is not downloaded; run `hf download "
         "ACE-Step/acestep-v15-xl-turbo-diffusers`"),
        ([TOKYO, "--keyframes", str(half_made), "--out", out],
         f"keyframes: the FLUX.2 klein checkpoint in {half_made} is incomplete: missing model_index.json, "),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("cinereel: error:") and message in err and err.count("\n") == 1, err


def test_a_disk_that_fills_mid_run_is_one_line_and_keeps_what_was_made(tmp_path, capsys, monkeypatch):
    import errno

    from cinereel.nodes.pipeline import keyframes

    def full(image, tmp):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(keyframes, "_save_png", full)
    out = tmp_path / "out"
    assert main([TOKYO, "--out", str(out), "--run-id", "full-disk"]) == 2
    *progress, err = capsys.readouterr().err.splitlines()  # the stages that finished, then the one error line
    # The sound stages run beside the picture stages and finish although the keyframes failed.
    assert err.startswith("cinereel: error: the disk is full (") and [line.split()[0] for line in progress] == [
        "director", "narration", "music", "mix", "delivery_audio"], (progress, err)
    assert "free some space and run the same command again to resume" in err
    run = out / "cinereel" / "full-disk"
    assert (run / "plan.json").is_file(), "the plan made before the disk filled is kept"
    assert (run / "audio" / "mix.wav").is_file(), "and so is the sound made beside the failing keyframes"


def test_a_bug_shows_its_traceback_and_says_it_is_one(tmp_path, capsys, monkeypatch):
    from cinereel.nodes.pipeline import headless

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(headless, "make_reel", broken)
    assert main([TOKYO, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err
    assert err.rstrip().splitlines()[-1].startswith("cinereel: internal error: this is a bug in CineReel")
