"""The user's own media into a REEL: a picture as a portrait or a keyframe, a sound as the music bed or a voice-over.

Each is checked where it lands: the keyframe PNG against the expected cover-crop, the portrait against what
the keyframe model was handed, the music bed against the resampled input and inside the mix, the voice-over
inside the narration track; resuming redoes nothing and a changed picture redoes exactly what depends on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from cinereel.model_loaders import preview
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.model_loaders.sampling import resample
from cinereel.model_loaders.vocabulary.plan import validate_plan
from cinereel.nodes.adapters import (
    AudioToMusicNode,
    AudioToVoiceOverNode,
    ImageToKeyframeNode,
    ImageToPortraitNode,
)
from cinereel.nodes.pipeline.backends import PREVIEW_CHOICES, make_handle
from cinereel.nodes.pipeline.keyframes import render_keyframes
from cinereel.nodes.pipeline.mix import mix_stage
from cinereel.nodes.pipeline.motion import animate
from cinereel.nodes.pipeline.music import score_music
from cinereel.nodes.pipeline.reel import Reel, RunDir
from cinereel.nodes.pipeline.user_media import UserMediaError, fit_music
from cinereel.nodes.pipeline.voice import narrate
from cinereel_testkit import sample_plan_dict
from PIL import Image

WIDTH, HEIGHT = 512, 288  # a small 16:9 frame keeps the clips quick on two cores
HANDLES = {stage: make_handle(stage, PREVIEW_CHOICES[stage]) for stage in ("keyframes", "motion", "voice", "music")}


def new_reel(tmp_path, run_id: str = "own-media") -> Reel:
    run = RunDir.create(tmp_path, run_id)
    plan = validate_plan(sample_plan_dict(width=WIDTH, height=HEIGHT))
    run.write_json("plan.json", plan.model_dump(mode="json"))
    return Reel(plan, run.root, {"plan": "plan.json"})


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A float IMAGE batch (1, H, W, 3) in [0, 1] with detail everywhere, so any shift or stretch shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    rgb = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / 7.0 + seed)], axis=-1)
    rgb += rng.uniform(-0.05, 0.05, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 1)[None]


def as_image(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32))


def as_audio(samples: np.ndarray, sample_rate: int) -> dict:
    """ComfyUI AUDIO from (samples, channels)."""
    return {"waveform": torch.from_numpy(np.ascontiguousarray(samples.T, dtype=np.float32))[None],
            "sample_rate": sample_rate}


def music(seconds: float, sample_rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(3)
    chords = [0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)]
    mono = sum(chords) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) + 0.01 * rng.standard_normal(len(t))
    return np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def tone(seconds: float, sample_rate: int, hz: float = 330.0) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * hz * t) * np.hanning(len(t))).astype(np.float32)


def expected_cover(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height, crop the overflow equally from both sides (Lanczos), as written by hand."""
    src = Image.fromarray(np.rint(pixels[0] * 255).astype(np.uint8))
    scale = max(width / src.width, height / src.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = (src.width - crop_w) / 2, (src.height - crop_h) / 2
    return np.asarray(src.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h)))


@pytest.fixture
def spy(monkeypatch):
    """What the preview keyframe and voice backends were asked to make."""
    calls: dict[str, list] = {"portraits": [], "keyframes": [], "speech": [], "music": 0}
    render_keyframe = preview.StoryboardKeyframes.render_keyframe
    render_portrait = preview.StoryboardKeyframes.render_portrait
    synthesize = preview.EspeakVoiceBackend.synthesize
    compose = preview.SynthMusic.compose

    def keyframe(self, shot, plan, portraits, seed, callback=None):
        calls["keyframes"].append((shot["id"], {c: np.asarray(p) for c, p in portraits.items()}))
        return render_keyframe(self, shot, plan, portraits, seed, callback)

    def portrait(self, character, plan, seed, callback=None):
        calls["portraits"].append(character["id"])
        return render_portrait(self, character, plan, seed, callback)

    def speak(self, text, language, voice=None, speed=1.0):
        calls["speech"].append(text)
        return synthesize(self, text, language, voice, speed)

    def score(self, *args, **kwargs):
        calls["music"] += 1
        return compose(self, *args, **kwargs)

    monkeypatch.setattr(preview.StoryboardKeyframes, "render_keyframe", keyframe)
    monkeypatch.setattr(preview.StoryboardKeyframes, "render_portrait", portrait)
    monkeypatch.setattr(preview.EspeakVoiceBackend, "synthesize", speak)
    monkeypatch.setattr(preview.SynthMusic, "compose", score)
    return calls


def music_in_mix(mix: np.ndarray, bed: np.ndarray, speech: np.ndarray, sr: int = 48000) -> float:
    """How closely the mix follows the music bed where nobody speaks (half a second clear of every line)."""
    from scipy.ndimage import maximum_filter1d

    quiet = maximum_filter1d(np.abs(speech), size=sr + 1) == 0
    assert quiet.sum() > sr, "no second of the reel without speech to compare"
    return float(np.corrcoef(mix[quiet, 0], bed[quiet, 0])[0, 1])


def report(reel: Reel) -> dict:
    return json.loads(reel.run_dir.path("report.json").read_text(encoding="utf-8"))


# -- pictures ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(400, 400), (900, 300), (333, 777)])
def test_a_users_keyframe_is_their_picture_cover_cropped_and_is_not_drawn(tmp_path, spy, size):
    pixels = picture(*size)
    (reel,) = ImageToKeyframeNode().add(new_reel(tmp_path), as_image(pixels), "shot_01")
    out = render_keyframes(reel, HANDLES["keyframes"])

    written = np.asarray(Image.open(out.artifact_path("keyframe:shot_01")))
    assert written.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(written, expected_cover(pixels, WIDTH, HEIGHT))
    assert [shot for shot, _ in spy["keyframes"]] == ["shot_02"]  # shot_01 was not drawn
    made = report(out)
    assert made["keyframe_sources"] == {"shot_01": "user image", "shot_02": "rendered"}
    assert made["keyframe_renders"]["shot_01"] is None
    item = made["user_media"]["keyframe:shot_01"]
    assert item["from"] == f"user image {size[0]}x{size[1]}"
    assert item["fit"] == f"cover-crop centred, Lanczos to {WIDTH}x{HEIGHT}"
    assert made["artifacts"]["keyframe:shot_01"] == "user/keyframe_shot_01.png"


def test_a_users_portrait_is_the_reference_the_keyframe_model_receives(tmp_path, spy):
    pixels = picture(300, 420, seed=5)
    (reel,) = ImageToPortraitNode().add(new_reel(tmp_path), as_image(pixels), "astronaut")
    out = render_keyframes(reel, HANDLES["keyframes"])

    assert spy["portraits"] == []  # no portrait drawn for the astronaut
    references = dict(spy["keyframes"])["shot_02"]
    assert set(references) == {"astronaut"}
    assert np.array_equal(references["astronaut"], np.rint(pixels[0] * 255).astype(np.uint8))
    assert report(out)["portrait_sources"] == {"astronaut": "user image"}
    assert out.artifacts["portrait:astronaut"] == "user/portrait_astronaut.png"


def test_a_blank_character_is_the_plans_first_and_a_name_works_too(tmp_path):
    reel = new_reel(tmp_path)
    (by_blank,) = ImageToPortraitNode().add(reel, as_image(picture(64, 64)), "")
    (by_name,) = ImageToPortraitNode().add(reel, as_image(picture(64, 64)), "the astronaut")
    assert "portrait:astronaut" in by_blank.artifacts and "portrait:astronaut" in by_name.artifacts


# -- sounds ------------------------------------------------------------------------------

def test_a_users_music_is_the_bed_resampled_cut_to_length_and_in_the_mix(tmp_path, spy):
    track = music(14.0, 44100)  # longer than the 10 s reel, at another rate
    (reel,) = AudioToMusicNode().add(new_reel(tmp_path), as_audio(track, 44100))
    mark = RESIDENCY.mark()
    reel = score_music(reel, HANDLES["music"])
    assert spy["music"] == 0 and RESIDENCY.loads(mark) == 0  # nothing composed, no model loaded

    bed, sr = soundfile.read(reel.artifact_path("music"), dtype="float32", always_2d=True)
    assert sr == 48000 and bed.shape == (480000, 2)
    expected = resample(track, 44100, 48000)[:480000]
    fade = round(0.05 * 48000)
    np.testing.assert_array_equal(bed[:-fade], expected[:-fade])
    assert np.abs(bed[-1]).max() < 1e-3 < np.abs(expected[-fade:]).max()  # a short fade, not a cut
    assert report(reel)["music"]["engine"] == "user audio"

    mixed = mix_stage(reel)  # music alone: the master is the user's music, gain and limiter aside
    mix, _ = soundfile.read(mixed.artifact_path("mix"), dtype="float32", always_2d=True)
    assert np.corrcoef(mix[:, 0], bed[:, 0])[0, 1] > 0.99


def test_a_short_music_is_looped_with_a_crossfade_and_any_rate_and_mono_are_accepted():
    track = music(3.0, 22050, channels=1)
    bed = fit_music(track, 22050, 10.0)
    assert bed.shape == (480000, 1)
    once = resample(track, 22050, 48000)
    period = len(once) - round(0.05 * 48000)  # each repeat overlaps the last by the crossfade
    np.testing.assert_array_equal(bed[:period], once[:period])
    np.testing.assert_allclose(bed[period + 2400: 2 * period], once[2400: period], atol=1e-6)
    seam = bed[period - 10: period + 2410, 0]
    assert np.abs(np.diff(seam)).max() < 4 * np.abs(np.diff(once[:, 0])).max()  # no click at the seam


def test_a_voice_over_replaces_synthesis_for_its_shot_and_is_placed_as_lines_are(tmp_path, spy):
    recording = np.stack([tone(1.5, 16000), tone(1.5, 16000, 440.0)], axis=1)  # stereo, 16 kHz
    (reel,) = AudioToVoiceOverNode().add(new_reel(tmp_path), as_audio(recording, 16000), "2")
    plan = reel.plan
    out = narrate(reel, HANDLES["voice"], lead_in_s=0.25)

    assert spy["speech"] == [plan.shot("shot_01").narration]  # shot_02's line was not synthesised
    track, sr = soundfile.read(out.artifact_path("narration"), dtype="float32")
    start = round((5.0 + 0.25) * sr)
    expected = resample(recording.mean(axis=1), 16000, 48000)
    np.testing.assert_array_equal(track[start: start + len(expected)], expected)
    assert np.abs(track[round(5.0 * sr): start]).max() == 0.0  # silence before it: the lead-in
    made = report(out)["narration"]
    assert made["sources"] == {"shot_01": "synthesised", "shot_02": "user audio"}
    line = next(line for line in made["lines"] if line["shot_id"] == "shot_02")
    assert line["start_s"] == pytest.approx(5.25) and line["speed"] == 1.0
    assert line["text"] == ""  # the recording's words are unknown: no subtitle claims the plan's line for it


def test_only_voice_overs_load_no_voice_model(tmp_path, spy):
    reel = new_reel(tmp_path)
    for shot in ("1", "2"):
        (reel,) = AudioToVoiceOverNode().add(reel, as_audio(tone(1.0, 24000)[:, None], 24000), shot)
    mark = RESIDENCY.mark()
    out = narrate(reel, HANDLES["voice"])
    assert spy["speech"] == [] and RESIDENCY.loads(mark) == 0
    assert set(report(out)["narration"]["sources"].values()) == {"user audio"}


# -- resuming and changing --------------------------------------------------------------

def whole_reel(tmp_path, keyframe: np.ndarray, portrait: np.ndarray, bed: np.ndarray, voice: np.ndarray) -> Reel:
    """Director's REEL -> the four adapters -> keyframes, motion, narration, music, mix (preview backends)."""
    reel = new_reel(tmp_path, "resume")
    (reel,) = ImageToPortraitNode().add(reel, as_image(portrait), "astronaut")
    (reel,) = ImageToKeyframeNode().add(reel, as_image(keyframe), "shot_01")
    (reel,) = AudioToMusicNode().add(reel, as_audio(bed, 32000))
    (reel,) = AudioToVoiceOverNode().add(reel, as_audio(voice[:, None], 22050), "shot_02")
    reel = animate(render_keyframes(reel, HANDLES["keyframes"]), HANDLES["motion"])
    return mix_stage(score_music(narrate(reel, HANDLES["voice"]), HANDLES["music"]))


def test_resuming_with_the_same_media_redoes_nothing_and_a_new_picture_redoes_what_depends_on_it(tmp_path, spy):
    media = {"keyframe": picture(640, 480), "portrait": picture(256, 256, seed=2), "bed": music(6.0, 32000),
             "voice": tone(1.2, 22050)}
    first = whole_reel(tmp_path, **media)
    run = first.run_dir
    before = run.manifest()
    mix, _ = soundfile.read(first.artifact_path("mix"), dtype="float32")
    bed, _ = soundfile.read(first.artifact_path("music"), dtype="float32")
    np.testing.assert_array_equal(bed, fit_music(media["bed"], 32000, 10.0))
    speech, _ = soundfile.read(first.artifact_path("narration"), dtype="float32")
    assert music_in_mix(mix, bed, speech) > 0.95  # between the lines, the mix is the user's music
    assert spy["portraits"] == [] and [s for s, _ in spy["keyframes"]] == ["shot_02"] and spy["music"] == 0

    spy["keyframes"].clear(), spy["speech"].clear()
    again = whole_reel(tmp_path, **media)
    assert run.manifest() == before  # not one artifact written again, the user's media included
    assert spy["keyframes"] == [] and spy["speech"] == []
    assert again.notes["keyframes_made"] == 0 and again.notes["clips_made"] == 0
    assert not (run.root / "superseded").exists()

    changed = whole_reel(tmp_path, **{**media, "keyframe": picture(640, 480, seed=9)})
    after = run.manifest()
    redone = sorted(rel for rel in after if after[rel]["key"] != before[rel]["key"])
    assert redone == ["clips/shot_01.attempt1.mp4", "user/keyframe_shot_01.png"]  # shot_02 and the sound kept
    assert spy["keyframes"] == []  # the keyframe model was not asked for shot_01 either
    assert [p.name for p in (run.root / "superseded").rglob("*.png")] == ["keyframe_shot_01.png"]
    assert changed.notes["clips_made"] == 1

    before = after
    whole_reel(tmp_path, **{**media, "keyframe": picture(640, 480, seed=9), "portrait": picture(256, 256, seed=4)})
    after = run.manifest()
    redone = sorted(rel for rel in after if after[rel]["key"] != before[rel]["key"])
    # the astronaut is in shot_02: its keyframe is redrawn with the new reference, and its clip re-animated
    assert redone == ["clips/shot_02.attempt1.mp4", "keyframes/shot_02.png", "user/portrait_astronaut.png"]
    assert [s for s, _ in spy["keyframes"]] == ["shot_02"]


def test_a_users_keyframe_is_kept_when_the_gate_asks_for_a_new_image(tmp_path):
    from cinereel.nodes.pipeline.gate import Attempt, ShotState, revise_failures

    reel = new_reel(tmp_path)
    (reel,) = ImageToKeyframeNode().add(reel, as_image(picture(64, 64)), "shot_02")
    states = []
    for shot in reel.plan.shots:
        attempt = Attempt(1, shot, f"keyframe:{shot.id}", clip=f"clip:{shot.id}",
                          critique={"scores": None, "label": "CHARACTER_DRIFT", "technical": []})
        states.append(ShotState(shot, [attempt]))
    revise_failures(reel, states)
    assert states[0].latest.keyframe == "keyframe:shot_01@2"  # drawn again with a stronger reference
    assert states[1].latest.keyframe == "keyframe:shot_02"  # the user's picture: only the clip is redone


# -- clear errors ---------------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda r: ImageToPortraitNode().add(r, as_image(picture(8, 8)), "robot"),
     "character 'robot' is not in the plan; its characters are: astronaut"),
    (lambda r: ImageToKeyframeNode().add(r, as_image(picture(8, 8)), "shot_9"),
     "shot 'shot_9' is not in the plan; its shots are shot_01, shot_02 (or their numbers 1 to 2)"),
    (lambda r: ImageToKeyframeNode().add(r, as_image(picture(8, 8)), "3"), "shot '3' is not in the plan"),
    (lambda r: ImageToKeyframeNode().add(r, torch.zeros(0, 8, 8, 3), "1"), "the IMAGE batch is empty"),
    (lambda r: ImageToKeyframeNode().add(r, torch.full((1, 8, 8, 3), float("nan")), "1"), "NaN"),
    (lambda r: ImageToKeyframeNode().add(r, torch.zeros(1, 8, 8, 2), "1"), "1 (grey), 3 (RGB) or 4 (RGBA)"),
    (lambda r: AudioToMusicNode().add(r, as_audio(np.zeros((48000, 6), np.float32), 48000)),
     "music must be mono or stereo; this audio has 6 channels"),
    (lambda r: AudioToMusicNode().add(r, {"waveform": torch.zeros(1, 2, 0), "sample_rate": 48000}),
     "the AUDIO is empty"),
    (lambda r: AudioToMusicNode().add(r, as_audio(np.zeros((100, 2), np.float32), 0)), "sample rate"),
    (lambda r: AudioToVoiceOverNode().add(r, as_audio(np.zeros((48000 * 11, 1), np.float32), 48000), "1"),
     "longer than the whole 10 s reel"),
    (lambda r: AudioToVoiceOverNode().add(r, {"waveform": torch.zeros(1, 1, 10)}, "1"), "AUDIO must be"),
])
def test_wrong_media_or_targets_fail_with_a_clear_message(tmp_path, call, message):
    with pytest.raises(ValueError) as err:
        call(new_reel(tmp_path))
    assert message in str(err.value)


def test_greyscale_rgba_and_batches_are_accepted(tmp_path):
    reel = new_reel(tmp_path)
    (grey,) = ImageToKeyframeNode().add(reel, torch.full((1, 30, 40, 1), 0.5), "1")
    assert np.asarray(Image.open(grey.artifact_path("keyframe:shot_01"))).min() == 128
    result = ImageToKeyframeNode().add(reel, torch.rand(3, 30, 40, 4), "1")
    assert result["ui"]["text"] == ["⚠ keyframe of shot_01: the IMAGE batch holds 3 images; the first was used"]


def test_media_given_after_the_stage_that_uses_it_is_refused_naming_where_to_connect(tmp_path):
    reel = render_keyframes(new_reel(tmp_path), HANDLES["keyframes"])
    with pytest.raises(ValueError, match="connect CineReel Image to Portrait before the Keyframes node"):
        ImageToPortraitNode().add(reel, as_image(picture(8, 8)), "astronaut")
    # a keyframe may still replace a drawn one before Animate
    (reel,) = ImageToKeyframeNode().add(reel, as_image(picture(8, 8)), "1")
    assert reel.artifacts["keyframe:shot_01"] == "user/keyframe_shot_01.png"
    assert report(reel)["keyframe_sources"] == {"shot_01": "user image", "shot_02": "rendered"}
    # music may still replace a scored bed before Mix
    (reel,) = AudioToMusicNode().add(score_music(reel, HANDLES["music"]), as_audio(music(2.0, 8000, 1), 8000))
    assert reel.artifacts["music"] == "user/music.wav" and report(reel)["music"]["engine"] == "user audio"
    reel = narrate(reel, HANDLES["voice"])
    with pytest.raises(UserMediaError, match="connect CineReel Audio to Voice-over before the Narrate node"):
        AudioToVoiceOverNode().add(reel, as_audio(tone(1.0, 16000)[:, None], 16000), "1")


# -- through a real ComfyUI executor ----------------------------------------------------

class SineAudio:
    """A stand-in for Load Audio, which the 2024 ComfyUI lacks: a synthetic AUDIO output."""

    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "make"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 60.0}),
                             "sample_rate": ("INT", {"default": 44100, "min": 8000, "max": 192000}),
                             "channels": ("INT", {"default": 2, "min": 1, "max": 2})}}

    def make(self, seconds, sample_rate, channels):
        return (as_audio(music(seconds, sample_rate, channels), sample_rate),)


@pytest.mark.comfy
def test_core_load_image_and_an_audio_node_feed_a_reel_through_the_comfy_executor(comfy, tmp_path, monkeypatch):
    def loader(kind: str, backend: str) -> dict:
        return {"class_type": kind, "inputs": {"backend": backend, "dtype": "bfloat16", "device": "auto",
                                               "residency": "auto", "unload_comfy_models": True}}

    inputs = tmp_path / "input"
    inputs.mkdir()
    keyframe, portrait = picture(800, 600, seed=1), picture(300, 300, seed=8)
    Image.fromarray(np.rint(keyframe[0] * 255).astype(np.uint8)).save(inputs / "my keyframe.png")
    Image.fromarray(np.rint(portrait[0] * 255).astype(np.uint8)).save(inputs / "me.png")
    before = comfy.folder_paths.get_input_directory()
    comfy.folder_paths.set_input_directory(str(inputs))
    monkeypatch.setitem(comfy.nodes.NODE_CLASS_MAPPINGS, "TestSineAudio", SineAudio)
    prompt = {
        "1": loader("CineReelLLMLoader", "preview (rules + technical critic)"),
        "2": {"class_type": "CineReelDirector", "inputs": {
            "llm": ["1", 0], "sentence": "A lone astronaut walks through a neon-lit Tokyo alley at dusk",
            "duration_s": 10.0, "shots": 2, "aspect": "16:9", "language": "auto (from the place in the sentence)",
            "seed": 7, "run_id": "executor-own-media"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "my keyframe.png"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "me.png"}},
        "5": {"class_type": "TestSineAudio", "inputs": {"seconds": 4.0, "sample_rate": 44100, "channels": 2}},
        "6": {"class_type": "TestSineAudio", "inputs": {"seconds": 1.0, "sample_rate": 22050, "channels": 1}},
        "10": {"class_type": "CineReelImageToKeyframe", "inputs": {"reel": ["2", 0], "image": ["3", 0], "shot": "1"}},
        "11": {"class_type": "CineReelImageToPortrait", "inputs": {"reel": ["10", 0], "image": ["4", 0],
                                                                  "character": ""}},
        "12": {"class_type": "CineReelAudioToMusic", "inputs": {"reel": ["11", 0], "audio": ["5", 0]}},
        "13": {"class_type": "CineReelAudioToVoiceOver", "inputs": {"reel": ["12", 0], "audio": ["6", 0],
                                                                   "shot": "2"}},
        "20": loader("CineReelKeyframeLoader", "preview (storyboard frames)"),
        "21": loader("CineReelMotionLoader", "preview (Ken Burns moves)"),
        "22": loader("CineReelVoiceLoader", "preview (eSpeak NG)"),
        "23": loader("CineReelMusicLoader", "preview (synth bed)"),
        "30": {"class_type": "CineReelKeyframes", "inputs": {"reel": ["13", 0], "keyframe_model": ["20", 0]}},
        "31": {"class_type": "CineReelAnimate", "inputs": {"reel": ["30", 0], "motion_model": ["21", 0],
                                                           "clip_preset": "ultrafast"}},
        "32": {"class_type": "CineReelNarrate", "inputs": {"reel": ["31", 0], "voice_model": ["22", 0],
                                                           "lead_in_s": 0.25}},
        "33": {"class_type": "CineReelScoreMusic", "inputs": {"reel": ["32", 0], "music_model": ["23", 0],
                                                              "tempo_bpm": 0.0}},
        "34": {"class_type": "CineReelMix", "inputs": {"reel": ["33", 0], "target_lufs": -18.0,
                                                       "true_peak_dbtp": -1.0, "music_level_db": -14.0,
                                                       "duck_db": -12.0}},
        "40": {"class_type": "CineReelToImage", "inputs": {"reel": ["30", 0], "kind": "keyframe", "shot": 1}},
        "41": {"class_type": "PreviewImage", "inputs": {"images": ["40", 0]}},
        "42": {"class_type": "CineReelUnloadModels", "inputs": {"value": ["34", 0], "also_comfy_models": False}},
    }
    try:
        executor = comfy.run(prompt)
    finally:
        comfy.folder_paths.set_input_directory(before)
    assert executor.success, [m for m in executor.status_messages if m[0] == "execution_error"]

    run = comfy.output_dir / "cinereel" / "executor-own-media"
    made = json.loads((run / "report.json").read_text(encoding="utf-8"))
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    first, second = (s["id"] for s in plan["shots"])
    written = np.asarray(Image.open(run / made["artifacts"][f"keyframe:{first}"]))
    assert np.array_equal(written, expected_cover(keyframe, plan["width"], plan["height"]))
    assert made["keyframe_sources"] == {first: "user image", second: "rendered"}
    character = plan["characters"][0]["id"]
    assert made["portrait_sources"].get(character, "user image") == "user image"
    assert np.array_equal(np.asarray(Image.open(run / made["artifacts"][f"portrait:{character}"])),
                          np.rint(portrait[0] * 255).astype(np.uint8))
    assert made["music"]["engine"] == "user audio"
    bed, _ = soundfile.read(run / made["artifacts"]["music"], dtype="float32")
    np.testing.assert_array_equal(bed, fit_music(music(4.0, 44100, 2), 44100, plan["duration_s"]))
    assert made["narration"]["sources"][second] == "user audio"
    mix, _ = soundfile.read(run / made["artifacts"]["mix"], dtype="float32")
    speech, _ = soundfile.read(run / made["artifacts"]["narration"], dtype="float32")
    assert music_in_mix(mix, bed, speech) > 0.95
