"""The embedded default, end to end: the headless preview reel checked as a person receives it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cinereel.nodes.pipeline.audio import integrated_lufs, true_peak_dbtp
from cinereel.nodes.pipeline.video import probe, read_audio

pytestmark = pytest.mark.reel

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def cinereel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cinereel", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tokyo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("tokyo")
    done = cinereel_cli(SENTENCE, "--out", str(out), "--json", cwd=out)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    return {"summary": summary, "run": run, "reel": Path(summary["reel"]),
            "report": json.loads((run / "report.json").read_text(encoding="utf-8")),
            "plan": json.loads((run / "plan.json").read_text(encoding="utf-8"))}


def test_the_reel_is_a_720p_h264_aac_file_of_exactly_30_seconds(tokyo):
    info = probe(tokyo["reel"])
    assert (info["width"], info["height"]) == (1280, 720)
    assert info["video_codec"] == "h264" and info["pix_fmt"].startswith("yuv420p")
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 48000 and info["channels"] == 2
    assert info["frames"] == 480 and info["fps"] == 16
    assert abs(info["video_duration"] - 30.0) <= 1 / 16
    assert abs(info["duration"] - 30.0) <= 1 / 16
    head = tokyo["reel"].read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096), "not +faststart"


def test_the_delivered_sound_is_mastered(tokyo):
    audio, sr = read_audio(tokyo["reel"])
    assert sr == 48000 and audio.shape[1] == 2
    assert abs(audio.shape[0] / sr - 30.0) < 0.05
    assert integrated_lufs(audio, sr) == pytest.approx(-18.0, abs=0.5)
    assert true_peak_dbtp(audio, sr) <= -1.0


def test_japanese_narration_starts_with_every_shot(tokyo):
    plan, report = tokyo["plan"], tokyo["report"]
    assert plan["language"] == "ja" and plan["locale"] == "Tokyo"
    assert report["narration"]["language"] == "ja" and report["narration"]["engine"] == "espeak-ng"
    import soundfile

    speech, sr = soundfile.read(tokyo["run"] / "audio" / "narration.wav", dtype="float32")
    start = 0.0
    for shot in plan["shots"]:
        assert JAPANESE.search(shot["narration"]), shot["narration"]
        first = speech[round(start * sr): round((start + 0.5) * sr)]
        assert np.sqrt(np.mean(first ** 2)) > 0.01, f"no speech in the first 0.5 s of {shot['id']}"
        start += shot["duration_s"]
    # the delivered mix carries that narration: its centre follows the speech track
    audio, _ = read_audio(tokyo["reel"])
    mid = audio.mean(axis=1)
    n = min(len(mid), len(speech))
    env = lambda x: np.sqrt(np.convolve(x[:n] ** 2, np.ones(2400) / 2400, mode="same"))  # noqa: E731
    assert np.corrcoef(env(mid), env(speech))[0, 1] > 0.5


def test_music_is_present_through_the_whole_reel(tokyo):
    audio, sr = read_audio(tokyo["reel"])
    side = (audio[:, 0] - audio[:, 1]) / 2  # the narration is centred; what is left is the music bed
    windows = side[: 30 * sr].reshape(60, sr // 2)
    levels = 20 * np.log10(np.sqrt(np.mean(windows ** 2, axis=1)) + 1e-12)
    assert levels.min() > -75, levels.round(1)  # never silent, fades included
    assert np.median(levels) > -55, levels.round(1)
    import soundfile

    music, sr = soundfile.read(tokyo["run"] / "audio" / "music.wav", dtype="float32")
    assert music.shape == (30 * sr, 2)
    bed = 20 * np.log10(np.sqrt(np.mean(music.reshape(60, sr // 2, 2) ** 2, axis=(1, 2))) + 1e-12)
    assert bed[2:-2].min() > -40, bed.round(1)  # full level between the fade-in and the fade-out


def _parse_srt(text: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].isdigit()
        start, end = lines[1].split(" --> ")
        cues.append((seconds(start), seconds(end), " ".join(lines[2:])))
    return cues


def test_subtitles_match_the_narration(tokyo):
    cues = _parse_srt((tokyo["run"] / "reel.srt").read_text(encoding="utf-8"))
    lines = tokyo["report"]["narration"]["lines"]
    spoken = [line for line in lines if line["text"].strip()]
    assert "".join(c[2].replace(" ", "") for c in cues) == "".join(l["text"].replace(" ", "") for l in spoken)
    starts = [c[0] for c in cues]
    for line in spoken:
        assert any(abs(s - line["start_s"]) <= 0.001 for s in starts), line
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(cues, cues[1:])), "cues overlap"
    assert cues[-1][1] <= 30.0


def test_the_report_records_stages_loads_and_delivery(tokyo):
    report = tokyo["report"]
    assert set(report["timings"]) >= {"director", "keyframes", "motion", "narration", "music", "mix", "assemble"}
    assert report["delivery"]["frames"] == 480
    assert report["mix"]["integrated_lufs"] == pytest.approx(-18.0, abs=0.5)
    loads = [e for e in report["residency"] if e["event"] == "load"]
    assert len({(e["family"], e["checkpoint"]) for e in loads}) == len(loads), "a model loaded twice"


def test_rerunning_the_same_command_resumes_without_redoing_anything(tokyo):
    run, before = tokyo["run"], tokyo["run"].joinpath("manifest.json").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in run.rglob("*.mp4")}
    done = cinereel_cli(SENTENCE, "--out", str(run.parent.parent), "--json", cwd=run.parent.parent)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["run_dir"] == str(run)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.mp4")} == mtimes
    assert run.joinpath("manifest.json").read_text() == before


@pytest.mark.parametrize("city,language,script", [
    ("Paris", "fr", r"[a-zàâçéèêëîïôûùüÿœ]"),
    ("Mumbai", "hi", r"[\u0900-\u097f]"),
    ("São Paulo", "pt-BR", r"[a-zãõáéíóúâêôç]"),
    ("Berlin", "de", r"[a-zäöüß]"),
    ("Seoul", "ko", r"[\uac00-\ud7af]"),
])
def test_the_place_sets_the_narration_language_and_the_report_says_who_spoke(tmp_path, city, language, script):
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.pipeline.director import direct
    from cinereel.nodes.pipeline.headless import preview_handles
    from cinereel.nodes.pipeline.voice import narrate

    handles = preview_handles()
    reel = direct(handles["llm"], DirectorRequest(f"A street musician plays at night in {city}", duration_s=10,
                                                  shots=2), tmp_path)
    reel = narrate(reel, handles["voice"])
    report = json.loads((reel.run_dir.root / "report.json").read_text(encoding="utf-8"))
    assert report["language"] == language
    assert report["narration"] == {**report["narration"], "language": language, "engine": "espeak-ng"}
    assert all(re.search(script, s.narration.lower()) for s in reel.plan.shots)
    import soundfile

    speech, _ = soundfile.read(reel.artifact_path("narration"), dtype="float32")
    assert np.abs(speech).max() > 0.05


def test_adapters_hand_core_nodes_comfy_types(tokyo):
    from cinereel.nodes.adapters import ReelToAudioNode, ReelToImageNode
    from cinereel.nodes.pipeline.reel import Reel

    report = tokyo["report"]
    reel = Reel.from_json({"cinereel_reel": 1, "run_dir": str(tokyo["run"]), "plan": tokyo["plan"],
                           "artifacts": report["artifacts"], "notes": {}})
    (audio,) = ReelToAudioNode().to_audio(reel, "mix")
    assert audio["sample_rate"] == 48000 and tuple(audio["waveform"].shape) == (1, 2, 30 * 48000)
    (music,) = ReelToAudioNode().to_audio(reel, "music")
    assert music["waveform"].abs().max() > 0.01
    (keyframe,) = ReelToImageNode().to_image(reel, "keyframe", 2)
    assert tuple(keyframe.shape) == (1, 720, 1280, 3) and 0.0 <= float(keyframe.min()) <= float(keyframe.max()) <= 1.0
    (frames,) = ReelToImageNode().to_image(reel, "clip frames", 1)
    assert tuple(frames.shape) == (81, 720, 1280, 3)
    (portrait,) = ReelToImageNode().to_image(reel, "portrait", 2)
    assert portrait.shape[-1] == 3
    with pytest.raises(ValueError, match="shot 7 does not exist: this plan has shots 1 to 6"):
        ReelToImageNode().to_image(reel, "keyframe", 7)
