"""Narration fits before rendering: plans are sized to the voice that speaks them, a given plan that cannot be
spoken in time is refused before anything loads, and speech that still runs long is trimmed, never fatal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.model_loaders.rules import DirectorRequest, RuleDirector, narration_length
from cinereel.nodes.pipeline.cli import main

RATES = json.loads((Path(__file__).resolve().parents[1] / "model_loaders" / "rules_data" / "speaking_rates.json")
                   .read_text(encoding="utf-8"))
SENTENCE = "A lone astronaut walks through a neon-lit alley at dusk"
# Ten words eSpeak NG needs far longer to say than ten everyday words: the estimate lets them in, the voice cannot.
LONG_WORDS = ("Incomprehensibilities notwithstanding, internationalization institutionalizes electroencephalographic "
              "counterrevolutionaries, uncharacteristically, disproportionately, indistinguishably, "
              "incontrovertibly.")


def plan_file(tmp_path: Path, narration: dict[int, str], duration_s: float = 10.0, shots: int = 2) -> Path:
    plan, _ = RuleDirector().plan(DirectorRequest(SENTENCE, duration_s=duration_s, shots=shots, language="en-US"))
    data = plan.model_dump(mode="json")
    for index, text in narration.items():
        data["shots"][index]["narration"] = text
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def espeak_rate(language: str) -> float:
    return RATES["engines"]["espeak-ng"]["languages"][language]["per_second"]


def test_a_given_plan_its_voice_cannot_speak_in_time_is_refused_before_anything_loads(tmp_path, capsys):
    long_line = " ".join(["Every shadow in this alley keeps a secret of its own."] * 4)  # 44 words, a 5 s shot
    path = plan_file(tmp_path, {1: long_line})
    out = tmp_path / "out"
    mark = RESIDENCY.mark()
    assert main([SENTENCE, "--plan", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error: the plan's narration cannot be spoken in its shots") and err.count("\n") == 1
    over_s = len(long_line.split()) / espeak_rate("en-US") / 1.25 - (5.0 - 0.5)  # the preview voice, 1.25x faster
    assert f"shot-02 is {over_s:.1f} s over" in err, err
    assert "shot-01" not in err  # the director's own line fits
    assert [e for e in RESIDENCY.log_since(mark) if e["event"] == "load"] == []
    assert not out.exists(), "nothing may be rendered for a plan that is refused"


def test_the_director_node_refuses_the_same_plan_override(tmp_path, monkeypatch):
    from cinereel.nodes.director import DirectorNode
    from cinereel.nodes.pipeline.headless import preview_handles

    monkeypatch.setenv("CINEREEL_OUTPUT", str(tmp_path / "out"))
    handles = preview_handles()
    plan_text = plan_file(tmp_path, {0: " ".join(["A quiet street remembers every footstep."] * 5)}).read_text()
    with pytest.raises(ValueError, match=r"cannot be spoken in its shots: shot-01 is \d+\.\d s over"):
        DirectorNode().plan(handles["llm"], SENTENCE, 10.0, 2, "16:9", "en-US", 0, plan_override=plan_text,
                            voice_model=handles["voice"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("voice", ["preview", "hexgrad/Kokoro-82M"])
def test_the_director_node_sizes_narration_to_the_connected_voice(tmp_path, monkeypatch, voice):
    from cinereel.nodes.director import DirectorNode
    from cinereel.nodes.pipeline.backends import backend_for_checkpoint, make_handle
    from cinereel.nodes.pipeline.headless import preview_handles

    monkeypatch.setenv("CINEREEL_OUTPUT", str(tmp_path / "out"))
    handle = make_handle("voice", backend_for_checkpoint("voice", voice), device="cpu")
    engine = {"preview-voice": "espeak-ng", "kokoro": "kokoro"}[handle.family]
    result = DirectorNode().plan(preview_handles()["llm"], "A lone astronaut walks through Tokyo at dusk", 30.0, 6,
                                 "16:9", "ja", 0, voice_model=handle)
    (reel,) = result["result"]
    rate = RATES["engines"][engine]["languages"]["ja"]["per_second"]
    for shot in reel.plan.shots:
        assert narration_length(shot.narration, "ja") <= math.floor((shot.duration_s - 0.5) * rate + 1e-9)


def test_speech_that_still_runs_long_is_trimmed_with_a_warning_and_the_reel_finishes(tmp_path, capsys):
    path = plan_file(tmp_path, {0: LONG_WORDS}, duration_s=4.0, shots=1)
    words = len(LONG_WORDS.split())
    assert words <= math.floor(3.5 * espeak_rate("en-US")), "the estimate lets the line in"
    out = tmp_path / "out"
    assert main([SENTENCE, "--plan", str(path), "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert Path(summary["reel"]).stat().st_size > 0
    run = Path(summary["run_dir"])
    (line,) = json.loads((run / "audio" / "narration.json").read_text(encoding="utf-8"))
    assert line["action"] == "trimmed" and line["speed"] == 1.25 and line["text"]
    assert f"{line['text']} {line['left_out']}".strip() == LONG_WORDS  # whole words kept, whole words left out
    assert line["end_s"] <= 4.0 - 0.15 + 1e-9
    warning = next(w for w in json.loads((run / "report.json").read_text(encoding="utf-8"))["warnings"]
                   if "cut at a word boundary" in w)
    assert "shot-01" in warning and f"cinereel: warning: {warning}" in captured.err
