"""The weights-free preview video path: storyboard frames, Ken Burns motion, encoding, the reel, the technical critic."""

from __future__ import annotations

import itertools
import re
import wave
from pathlib import Path

import numpy as np
import pytest
from cinereel.model_loaders.kenburns import (
    camera_boxes,
    camera_filter,
    frames_for_duration,
    iter_clip,
    render_clip,
    smoothstep,
    travel,
)
from cinereel.model_loaders.storyboard import (
    COLOUR_WORDS,
    FALLBACK_PALETTE,
    MATERIAL_WORDS,
    character_look,
    drawable_text,
    render_keyframe,
    render_portrait,
    wardrobe_colour,
    wrap_to_width,
)
from cinereel.model_loaders.technical import technical_check
from cinereel.model_loaders.vocabulary.critique import (
    FAILURE_LABELS,
    IMAGE_LABELS,
    MOTION_LABELS,
    mean_score,
    validate_critique,
)
from cinereel.model_loaders.vocabulary.plan import CAMERA_MOVES, Plan, validate_plan
from cinereel.nodes.pipeline.video import (
    FFmpegError,
    assemble_reel,
    can_copy,
    encode_still,
    frame_at,
    middle_frame,
    probe,
    read_audio,
    read_clip,
    sample_frames,
    split_cue,
    srt_timestamp,
    write_clip,
    write_srt,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

# -- fixtures -------------------------------------------------------------------

def make_plan(width: int = 1280, height: int = 720, time_of_day: str = "night", mood: str = "tense",
              prompt: str = "Wide shot of a rain-soaked crossing, neon reflections, the courier weaving through traffic.",
              name: str = "Aiko Tanaka") -> Plan:
    return validate_plan({
        "title": "Courier", "sentence": "A courier races through Tokyo at night.", "locale": "Tokyo",
        "language": "ja", "mood": mood, "time_of_day": time_of_day, "duration_s": 15.0,
        "width": width, "height": height,
        "characters": [
            {"id": "aiko", "name": name, "description": "young woman, short black hair",
             "wardrobe": ["red leather jacket", "white t-shirt", "blue jeans"]},
            {"id": "kenji", "name": "Kenji", "description": "older man, bald", "wardrobe": ["silver raincoat"]},
        ],
        "shots": [
            {"id": "wide", "type": "establishing", "duration_s": 5, "prompt": prompt, "camera": "pan_left",
             "characters": ["aiko", "kenji"], "seed": 11, "flow_shift": 8.0},
            {"id": "hero", "type": "hero", "duration_s": 5, "prompt": "Close on Aiko, rain on her face.",
             "camera": "push_in", "characters": ["aiko"], "seed": 12},
            {"id": "detail", "type": "broll", "duration_s": 5, "prompt": "Her gloved hand on the handlebar.",
             "camera": "static", "characters": ["aiko"], "seed": 13, "flow_shift": 8.0},
        ],
    })


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan()


@pytest.fixture(scope="module")
def texture() -> Image.Image:
    """A detailed test image: phase correlation needs texture everywhere."""
    noise = np.random.default_rng(0).integers(0, 256, (192, 320, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.5))


def shift_between(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dy, dx): how far the content of ``a`` moved to reach ``b`` (phase correlation, whole pixels)."""
    def gray(x: np.ndarray) -> np.ndarray:
        g = x.astype(np.float64).mean(axis=-1)
        return (g - g.mean()) * np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1]))

    cross = np.fft.fft2(gray(b)) * np.conj(np.fft.fft2(gray(a)))
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
    peak = np.unravel_index(np.argmax(corr), corr.shape)
    dy, dx = (p if p <= n // 2 else p - n for p, n in zip(peak, corr.shape))
    return float(dy), float(dx)


def share_of(img: Image.Image, colour: tuple[int, int, int]) -> float:
    """The share of pixels exactly this colour."""
    return float(np.all(np.asarray(img) == colour, axis=-1).mean())


def level_clip(levels: list[int], colour: tuple[float, float, float], size: tuple[int, int] = (96, 64)) -> np.ndarray:
    """Flat frames whose brightness encodes the frame: easy to identify after lossy coding."""
    w, h = size
    return np.stack([np.full((h, w, 3), np.array(colour) * level, dtype=np.uint8) for level in levels])


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    data = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())


# -- storyboard -----------------------------------------------------------------

@pytest.mark.parametrize("width,height", [(1280, 720), (720, 1280)])
def test_keyframes_and_portraits_have_the_plan_size(width: int, height: int) -> None:
    plan = make_plan(width, height)
    portraits = {c.id: render_portrait(c, plan, seed=1) for c in plan.characters}
    assert all(p.size == (768, 768) and p.mode == "RGB" for p in portraits.values())
    assert render_portrait(plan.characters[0], plan, seed=1, size=256).size == (256, 256)
    for shot in plan.shots:
        frame = render_keyframe(shot, plan, portraits, seed=shot.seed)
        assert frame.size == (width, height) and frame.mode == "RGB"


def test_storyboard_is_deterministic_and_follows_the_seed(plan: Plan) -> None:
    for shot in plan.shots:
        a, b = render_keyframe(shot, plan, {}, 5), render_keyframe(shot, plan, {}, 5)
        assert a.tobytes() == b.tobytes()
        changed = np.any(np.asarray(a) != np.asarray(render_keyframe(shot, plan, {}, 6)), axis=-1).mean()
        assert changed > 0.05, f"{shot.id}: a new seed changed only {changed:.1%} of the pixels"
    aiko = plan.characters[0]
    assert render_portrait(aiko, plan, 3).tobytes() == render_portrait(aiko, plan, 3).tobytes()
    assert render_portrait(aiko, plan, 3).tobytes() != render_portrait(aiko, plan, 4).tobytes()


def test_wardrobe_words_pick_colours() -> None:
    assert wardrobe_colour("red leather jacket") == COLOUR_WORDS["red"]
    assert wardrobe_colour("Leather jacket") == MATERIAL_WORDS["leather"]
    assert wardrobe_colour("faded denim") != MATERIAL_WORDS["denim"]
    assert sum(wardrobe_colour("dark blue coat")) < sum(COLOUR_WORDS["blue"])
    assert wardrobe_colour("houndstooth cape") == wardrobe_colour("houndstooth cape")
    assert wardrobe_colour("houndstooth cape") in FALLBACK_PALETTE


def test_characters_wear_the_same_colours_in_portrait_and_keyframes(plan: Plan) -> None:
    look = character_look(plan.character("aiko"))
    assert look.top == COLOUR_WORDS["red"] and look.inner == COLOUR_WORDS["white"]
    portrait = render_portrait(plan.character("aiko"), plan, 1)
    assert share_of(portrait, look.top) > 0.05 and share_of(portrait, look.skin) > 0.02
    for shot in plan.shots:
        frame = render_keyframe(shot, plan, {}, 1)
        assert share_of(frame, look.top) > 0.0005, shot.id
    hero = render_keyframe(plan.shot("hero"), plan, {}, 1)
    assert share_of(hero, look.top) > 0.05 and share_of(hero, look.skin) > 0.01, "hero: one big figure"


def test_time_of_day_sets_the_light() -> None:
    def brightness(time_of_day: str) -> float:
        plan = make_plan(time_of_day=time_of_day)
        return float(np.asarray(render_keyframe(plan.shots[0], plan, {}, 1)).mean())

    assert brightness("midnight") + 30 < brightness("golden hour") < brightness("noon")


def test_caption_and_name_change_only_their_band() -> None:
    a, b = make_plan(prompt="A quiet street."), make_plan(prompt="A loud street full of people.")  # same backdrop
    diff = np.any(np.asarray(render_keyframe(a.shots[0], a, {}, 1)) != np.asarray(render_keyframe(b.shots[0], b, {}, 1)), axis=-1)
    rows = np.nonzero(diff.any(axis=1))[0]
    assert rows.size, "the prompt is not drawn"
    assert rows.min() > 720 * 0.5 and rows.max() < 720 * 0.85, "caption outside its band, or cut by camera moves"
    cols = np.nonzero(diff.any(axis=0))[0]
    assert cols.min() >= 1280 * 0.15 and cols.max() <= 1280 * 0.85

    ann, bob = make_plan(name="Ann"), make_plan(name="Bob")
    diff = np.any(np.asarray(render_portrait(ann.characters[0], ann, 1)) != np.asarray(render_portrait(bob.characters[0], bob, 1)), axis=-1)
    rows = np.nonzero(diff.any(axis=1))[0]
    assert rows.size and rows.min() > 768 * 0.8, "the name is not drawn in the portrait's band"


def test_text_the_font_cannot_draw_does_not_crash() -> None:
    awkward = "東京の夜 😀 مرحبا \x00\x1b[31m tab\tnew\nline \u200b\ufeff Chloé " + "x" * 1500
    plan = make_plan(prompt=awkward, name="雪 Chloé \U0001F600")
    for shot in plan.shots:
        assert render_keyframe(shot, plan, {}, 1).size == (1280, 720)
    assert render_portrait(plan.characters[0], plan, 1).size == (768, 768)
    assert drawable_text("Chloé à Noël\x00\n", 24) == "Chloé à Noël"  # the Noto caption fonts have the accents
    assert drawable_text("lone \ud800 surrogate", 24) == "lone ? surrogate"


def test_wrapped_lines_fit_and_show_truncation() -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=24)
    lines = wrap_to_width("word " * 200, font, 400, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 400 for line in lines)
    assert wrap_to_width("short", font, 400, 3) == ["short"]


# -- Ken Burns ------------------------------------------------------------------

def test_frames_for_duration() -> None:
    assert frames_for_duration(5.0, 16) == 81
    assert frames_for_duration(2.5, 16) == 41
    assert frames_for_duration(5.0, 24) == 121


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280)])
def test_clip_has_the_keyframe_size(size: tuple[int, int]) -> None:
    plan = make_plan(*size)
    clip = render_clip(render_keyframe(plan.shots[1], plan, {}, 1), "push_in", 5.0, 9, seed=1)
    assert clip.shape == (9, size[1], size[0], 3) and clip.dtype == np.uint8


def test_clip_is_deterministic_and_streams_the_same_frames(texture: Image.Image) -> None:
    clip = render_clip(texture, "push_in", 5.0, 9, seed=3)
    assert np.array_equal(clip, render_clip(texture, "push_in", 5.0, 9, seed=3))
    assert np.array_equal(clip, np.stack(list(iter_clip(texture, "push_in", 5.0, 9, seed=3))))
    assert not np.array_equal(clip, render_clip(texture, "push_in", 5.0, 9, seed=4))


@pytest.mark.parametrize("camera,direction", [("pan_left", (0, 1)), ("pan_right", (0, -1)),
                                              ("tilt_up", (1, 0)), ("tilt_down", (-1, 0))])
def test_pans_and_tilts_move_the_scene_the_way_the_camera_turns(texture: Image.Image, camera: str,
                                                                 direction: tuple[int, int]) -> None:
    clip = render_clip(texture, camera, 5.0, 17, seed=2)
    dy, dx = shift_between(clip[0], clip[-1])
    expected = travel(5.0) * np.array(texture.size[::-1]) * np.array(direction)  # (dy, dx) in output pixels
    assert abs(dy - expected[0]) <= 1.5 and abs(dx - expected[1]) <= 1.5, (camera, dy, dx, expected)


@pytest.mark.parametrize("seed", [1, 5])
@pytest.mark.parametrize("camera", ["push_in", "pull_out"])
def test_push_in_magnifies_and_pull_out_shrinks(texture: Image.Image, camera: str, seed: int) -> None:
    """Strips at opposite edges move apart under magnification, by (zoom ratio - 1) × their distance."""
    a, b = render_clip(texture, camera, 8.0, 17, seed=seed)[[6, 10]]
    progress = [smoothstep(i / 16) if camera == "push_in" else 1 - smoothstep(i / 16) for i in (6, 10)]
    ratio = (1 + travel(8.0) * progress[1]) / (1 + travel(8.0) * progress[0])
    apart_x = shift_between(a[:, 240:], b[:, 240:])[1] - shift_between(a[:, :80], b[:, :80])[1]
    apart_y = shift_between(a[144:], b[144:])[0] - shift_between(a[:48], b[:48])[0]
    assert apart_x == pytest.approx(240 * (ratio - 1), abs=1.5)
    assert apart_y == pytest.approx(144 * (ratio - 1), abs=1.5)


def test_flow_shift_sets_the_amplitude(texture: Image.Image) -> None:
    def pan(flow_shift: float) -> float:
        clip = render_clip(texture, "pan_right", flow_shift, 9, seed=1)
        return abs(shift_between(clip[0], clip[-1])[1])

    assert pan(8.0) > pan(5.0) * 1.4
    assert travel(12.0) == travel(8.0) and travel(0.2) == travel(1.0)


def test_motion_is_eased(texture: Image.Image) -> None:
    lefts = np.array([box[0] for box in camera_boxes(texture.size, "pan_right", 5.0, 81, seed=1)])
    steps = np.diff(lefts)
    assert np.all(steps >= 0)
    assert steps[0] < 0.05 * steps.max() and steps[-1] < 0.05 * steps.max()  # starts and ends at rest


def test_static_breathes_below_a_pixel_per_frame(texture: Image.Image) -> None:
    boxes = np.array(camera_boxes(texture.size, "static", 5.0, 81, seed=1))
    assert np.abs(np.diff(boxes, axis=0)).max() < 0.5
    clip = render_clip(texture, "static", 5.0, 81, seed=1)
    consecutive = np.abs(np.diff(clip[::10].astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert consecutive.min() > 0.1, "sub-pixel steps must still change the picture"
    assert technical_check(clip)["technical"] == []


def luma_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs((a.astype(np.float64) - b.astype(np.float64)) @ np.array([0.2126, 0.7152, 0.0722])).mean())


@pytest.mark.parametrize("camera", CAMERA_MOVES)
def test_the_ffmpeg_camera_move_follows_the_boxes_python_draws(tmp_path: Path, texture: Image.Image,
                                                               camera: str) -> None:
    """The motion stage's clip (``camera_filter`` run by ffmpeg) against ``render_clip``'s frames, both encoded the
    same way: each frame is nearest the reference frame of the same index, to the whole pixel the filter keeps."""
    texture.save(tmp_path / "keyframe.png")
    frames, seed, flow_shift = 25, 5, 8.0
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, camera, flow_shift, frames, seed), frames, 16,
                 tmp_path / "ffmpeg.mp4")
    write_clip(render_clip(texture, camera, flow_shift, frames, seed), 16, tmp_path / "python.mp4")
    made, reference = read_clip(tmp_path / "ffmpeg.mp4"), read_clip(tmp_path / "python.mp4")
    assert made.shape == reference.shape == (frames, texture.height, texture.width, 3)
    # pans and tilts cut whole pixels from a once-magnified keyframe; zoompan also rounds the box's size
    tolerance = 5.0 if camera in ("static", "push_in", "pull_out") else 3.0
    for index in (0, 6, 12, 18, 24):
        assert luma_error(made[index], reference[index]) < tolerance, index
    if camera == "static":  # a slow breath: the widest frame against the frames at rest
        same = luma_error(made[12], reference[12])
        assert same < 0.75 * min(luma_error(made[12], reference[0]), luma_error(made[12], reference[24]))
        return
    for index in (6, 12, 18):
        same = luma_error(made[index], reference[index])
        assert same < 0.75 * min(luma_error(made[index], reference[index - 3]),
                                 luma_error(made[index], reference[index + 3])), index


def test_a_still_encoded_clip_is_a_clip_the_reel_can_join(tmp_path: Path, texture: Image.Image) -> None:
    texture.save(tmp_path / "keyframe.png")
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "push_in", 5.0, 21, 1), 21, 16,
                 tmp_path / "still.mp4")
    write_clip(render_clip(texture, "pan_left", 5.0, 21, 1), 16, tmp_path / "frames.mp4")
    still, frames = probe(tmp_path / "still.mp4"), probe(tmp_path / "frames.mp4")
    assert (still["width"], still["height"], still["fps"], still["frames"]) == (320, 192, 16.0, 21)
    assert {k: still[k] for k in ("video_codec", "pix_fmt", "audio_codec")} == \
        {k: frames[k] for k in ("video_codec", "pix_fmt", "audio_codec")}
    assert can_copy([tmp_path / "still.mp4", tmp_path / "frames.mp4"], [20, 20], 16)
    assert assemble_reel([tmp_path / "still.mp4", tmp_path / "frames.mp4"], [20, 20], 16, None,
                         tmp_path / "reel.mp4") == "veryfast"  # no preset given: REEL_PRESET re-encodes
    assert probe(tmp_path / "reel.mp4")["frames"] == 40


def test_probing_many_videos_in_one_process_says_what_probing_each_says(tmp_path: Path, texture: Image.Image) -> None:
    from cinereel.nodes.pipeline.video import VIDEO_FACTS, FFmpegError, encode_delivery_audio, probe_videos

    texture.save(tmp_path / "keyframe.png")
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "push_in", 5.0, 21, 1), 21, 16,
                 tmp_path / "still.mp4")
    write_clip(render_clip(texture, "pan_left", 5.0, 13, 1), 24, tmp_path / "frames.mp4")
    write_clip(np.zeros((7, 64, 96, 3), np.uint8), 16, tmp_path / "small.mp4")
    clips = [tmp_path / "still.mp4", tmp_path / "frames.mp4", tmp_path / "small.mp4", tmp_path / "still.mp4"]
    assert probe_videos(clips) == [{key: probe(clip)[key] for key in VIDEO_FACTS} for clip in clips]
    assert [info["frames"] for info in probe_videos(clips)] == [21, 13, 7, 21]
    encode_delivery_audio(None, tmp_path / "sound.m4a", 4800)
    with pytest.raises(FFmpegError):
        probe_videos([tmp_path / "still.mp4", tmp_path / "sound.m4a"])
    with pytest.raises(FileNotFoundError):
        probe_videos([tmp_path / "still.mp4", tmp_path / "gone.mp4"])


def test_videos_read_once_are_not_read_again_until_they_change(tmp_path: Path, texture: Image.Image,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from cinereel.nodes.pipeline import video

    texture.save(tmp_path / "keyframe.png")
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "push_in", 5.0, 21, 1), 21, 16,
                 tmp_path / "still.mp4")
    write_clip(render_clip(texture, "pan_left", 5.0, 13, 1), 24, tmp_path / "frames.mp4")
    clips = [tmp_path / "still.mp4", tmp_path / "frames.mp4"]
    first = video.probe_videos(clips)
    reads: list[str] = []
    real_run = video._run
    monkeypatch.setattr(video, "_run", lambda args, what: reads.append(what) or real_run(args, what))
    assert video.probe_videos(clips) == first and video.probe_videos(clips[:1]) == first[:1] and reads == []
    first[0]["frames"] = -1  # the caller's copy
    assert video.probe_videos(clips[:1])[0]["frames"] == 21
    # A clip made again in its place (written beside it, then renamed over it, as the stages do) is read again.
    write_clip(np.zeros((7, 64, 96, 3), np.uint8), 16, tmp_path / "new.mp4")
    os.replace(tmp_path / "new.mp4", tmp_path / "frames.mp4")
    again = video.probe_videos(clips)
    assert len(reads) == 1 and [info["frames"] for info in again] == [21, 7] and again[1]["width"] == 96


def test_a_still_encode_reports_each_frame_and_stops_when_cancelled(tmp_path: Path, texture: Image.Image) -> None:
    texture.save(tmp_path / "keyframe.png")
    seen: list[tuple[int, int]] = []
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "tilt_up", 5.0, 33, 1), 33, 16,
                 tmp_path / "clip.mp4", on_frame=lambda done, of: seen.append((done, of)))
    assert seen[-1] == (33, 33) and all(of == 33 for _, of in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)

    class Cancelled(Exception):
        pass

    def cancel(done: int, of: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "tilt_up", 5.0, 400, 1), 400, 16,
                     tmp_path / "cancelled.mp4", on_frame=cancel)


def test_a_still_encode_that_ffmpeg_refuses_says_why(tmp_path: Path, texture: Image.Image) -> None:
    texture.save(tmp_path / "keyframe.png")
    with pytest.raises(FFmpegError, match="nosuchfilter"):
        encode_still(tmp_path / "keyframe.png", "nosuchfilter=1", 5, 16, tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="num_frames"):
        encode_still(tmp_path / "keyframe.png", "null", 0, 16, tmp_path / "clip.mp4")
    texture.crop((0, 0, 319, 192)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="even width and height, got 319×192"):
        encode_still(tmp_path / "odd.png", "null", 5, 16, tmp_path / "clip.mp4")


def test_the_middle_frame_decodes_no_more_than_it_needs_and_agrees_with_sample_frames(tmp_path: Path) -> None:
    write_clip(level_clip(list(range(10, 230, 10)), (1.0, 1.0, 1.0)), 16, tmp_path / "levels.mp4")  # 22 frames
    middle = sample_frames(tmp_path / "levels.mp4", 3)[1]
    assert np.array_equal(middle_frame(tmp_path / "levels.mp4"), middle)
    assert np.array_equal(middle_frame(tmp_path / "levels.mp4", 22), middle)
    assert np.array_equal(middle_frame(tmp_path / "levels.mp4", 60), middle)  # the caller overstated the length
    assert frame_at(tmp_path / "levels.mp4", 22) is None
    assert abs(int(frame_at(tmp_path / "levels.mp4", 5)[10, 10, 0]) - 60) <= 3


def test_a_still_encoded_clip_s_middle_frame_comes_from_its_encoder_and_follows_the_file(
        tmp_path: Path, texture: Image.Image, monkeypatch) -> None:
    from cinereel.nodes.pipeline import video

    texture.save(tmp_path / "keyframe.png")
    partial = tmp_path / ".clip.0123456789ab.partial.mp4"  # as the motion stage writes it, then renames it
    encode_still(tmp_path / "keyframe.png", camera_filter(texture.size, "push_in", 5.0, 21, 1), 21, 16, partial)
    clip = partial.rename(tmp_path / "clip.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "keyframe.png"]  # no tap file left
    monkeypatch.setattr(video, "frame_at", lambda path, index: pytest.fail("the clip was decoded"))
    given = middle_frame(clip, 21)
    monkeypatch.undo()
    # The frame x264 was given, not its decoded copy: nearest to the decoded middle frame (a push moves, so not
    # to its neighbours), apart by the encoding's loss only.
    apart = {index: np.abs(given.astype(np.int16) - frame_at(clip, index)).mean() for index in (9, 10, 11)}
    assert given.shape == (192, 320, 3) and min(apart, key=apart.get) == 10 and apart[10] < 4, apart
    # Another count asks for another frame, and a file rewritten in place is decoded again.
    assert np.array_equal(middle_frame(clip, 41), frame_at(clip, 20) if frame_at(clip, 20) is not None
                          else sample_frames(clip, 3)[1])
    write_clip(np.full((21, 192, 320, 3), 200, dtype=np.uint8), 16, clip)
    assert abs(float(middle_frame(clip, 21).mean()) - 200) < 3


@pytest.mark.parametrize("camera", ["pan_left", "tilt_down"])
def test_one_axis_shortcut_matches_direct_resampling(texture: Image.Image, camera: str) -> None:
    clip = render_clip(texture, camera, 8.0, 5, seed=2)
    direct = [texture.resize(texture.size, Image.Resampling.BILINEAR, box=box)
              for box in camera_boxes(texture.size, camera, 8.0, 5, seed=2)]
    assert np.abs(clip.astype(np.int16) - np.stack(direct)).max() <= 1


def test_unknown_camera_is_refused(texture: Image.Image) -> None:
    with pytest.raises(ValueError, match="camera must be one of"):
        render_clip(texture, "dolly_zoom", 5.0, 9, seed=1)


# -- encoding -------------------------------------------------------------------

def test_clip_round_trip(tmp_path: Path, texture: Image.Image) -> None:
    frames = render_clip(texture.resize((160, 96)), "pan_left", 5.0, 21, seed=1)
    path = tmp_path / "clip.mp4"
    write_clip(frames, 16, path)
    info = probe(path)
    assert (info["width"], info["height"], info["fps"], info["frames"]) == (160, 96, 16.0, 21)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", None)
    back = read_clip(path)
    assert back.shape == frames.shape and back.flags.writeable
    luma = np.array([0.2126, 0.7152, 0.0722])
    assert np.abs((back - frames.astype(np.float64)) @ luma).mean() < 2.5  # chroma is subsampled; luma survives

    write_clip((f.astype(np.float32) / 255 for f in frames), 16, tmp_path / "float.mp4")  # a generator of floats
    assert probe(tmp_path / "float.mp4")["frames"] == 21


def test_colours_survive_encoding(tmp_path: Path) -> None:
    """Written and read with the same (BT.709) matrix: saturated colours come back where they were."""
    patches = [(230, 30, 30), (30, 200, 40), (40, 60, 220), (240, 200, 40), (128, 128, 128)]
    frame = np.concatenate([np.full((64, 32, 3), c, np.uint8) for c in patches], axis=1)
    write_clip(np.stack([frame] * 3), 16, tmp_path / "colours.mp4")
    back = read_clip(tmp_path / "colours.mp4")[1]
    for i, colour in enumerate(patches):
        assert np.abs(back[32, 32 * i + 16].astype(int) - colour).max() <= 4, colour


def test_cancelled_render_stops_the_encoder(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def frames():
        yield from level_clip([50, 60, 70], (1.0, 1.0, 1.0))
        raise Cancelled

    with pytest.raises(Cancelled):
        write_clip(frames(), 16, tmp_path / "cancelled.mp4")


def test_vertical_clip_round_trip(tmp_path: Path) -> None:
    frames = level_clip(list(range(10, 60, 10)), (1.0, 0.5, 0.25), size=(96, 160))
    write_clip(frames, 16, tmp_path / "v.mp4")
    assert read_clip(tmp_path / "v.mp4").shape == (5, 160, 96, 3)


def test_read_clip_subsets_and_sample_frames(tmp_path: Path) -> None:
    levels = [10 + 3 * i for i in range(81)]
    write_clip(level_clip(levels, (1.0, 1.0, 1.0)), 16, tmp_path / "levels.mp4")

    def levels_of(frames: np.ndarray) -> list[int]:
        return [round((float(f.mean()) - 10) / 3) for f in frames]

    assert levels_of(read_clip(tmp_path / "levels.mp4", max_frames=5)) == [0, 1, 2, 3, 4]
    assert levels_of(read_clip(tmp_path / "levels.mp4", every=20)) == [0, 20, 40, 60, 80]
    assert levels_of(sample_frames(tmp_path / "levels.mp4", 8)) == [0, 11, 23, 34, 46, 57, 69, 80]


def test_encoding_errors_are_clear(tmp_path: Path) -> None:
    frames = level_clip([50, 60], (1.0, 1.0, 1.0))
    with pytest.raises(FFmpegError, match=r"(?s)could not encode.*preset"):
        write_clip(frames, 16, tmp_path / "bad.mp4", preset="warp-speed")
    with pytest.raises(ValueError, match="even"):
        write_clip(np.zeros((2, 63, 96, 3), np.uint8), 16, tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match="frame 1 has shape"):
        write_clip([frames[0], frames[0][:32]], 16, tmp_path / "mixed.mp4")


# -- the reel -------------------------------------------------------------------

SHOT_COLOURS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0)]


def test_reel_takes_exactly_the_planned_frames(tmp_path: Path) -> None:
    clips = []
    for i, colour in enumerate(SHOT_COLOURS):
        clips.append(tmp_path / f"shot{i}.mp4")
        write_clip(level_clip([60 + 10 * j for j in range(17)], colour), 16, clips[-1])  # 16 shown + 1 spare
    rate = 44_100
    t = np.arange(int(rate * 2.5)) / rate  # shorter than the reel
    write_wav(tmp_path / "mix.wav", np.stack([0.25 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t)], 1), rate)
    reel = tmp_path / "reel.mp4"
    assemble_reel(clips, [16, 16, 20], 16, tmp_path / "mix.wav", reel)

    info = probe(reel)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
    assert (info["sample_rate"], info["channels"], info["fps"], info["frames"]) == (48_000, 2, 16.0, 52)
    assert abs(info["duration"] - 52 / 16) <= 1 / 16

    frames = read_clip(reel).astype(np.float32)
    shot = frames.mean(axis=(1, 2)).argmax(axis=-1)  # the dominant channel names the shot
    assert shot.tolist() == [0] * 16 + [1] * 16 + [2] * 20
    level = frames.max(axis=(1, 2, 3))
    assert abs(level[15] - 210) < 6 and abs(level[16] - 60) < 6, "shot 1 must drop its spare frame"
    assert abs(level[48] - 220) < 6 and np.allclose(level[49:], level[48], atol=2), "a short clip holds its last frame"

    audio, sr = read_audio(reel)
    assert sr == 48_000 and audio.shape[1] == 2
    assert abs(len(audio) / sr - 52 / 16) <= 1 / 16

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x ** 2)))

    assert rms(audio[sr // 2: 2 * sr, 0]) == pytest.approx(0.25 / np.sqrt(2), rel=0.03)  # level and channel order kept
    assert rms(audio[sr // 2: 2 * sr, 1]) == pytest.approx(0.10 / np.sqrt(2), rel=0.03)
    assert rms(audio[int(2.7 * sr):]) < 1e-3, "audio past the wav is silence"


@pytest.mark.parametrize("channels", [2, 1])
def test_reel_keeps_the_mastered_loudness(tmp_path: Path, channels: int) -> None:
    """A -18 LUFS mix is still -18 LUFS in the delivered AAC track; a mono mix is spread at -3 dB a side,
    which keeps its BS.1770 loudness."""
    pyloudnorm = pytest.importorskip("pyloudnorm")
    from scipy.signal import butter, sosfilt

    rate = 48_000
    # noise shaped like programme material (little above 8 kHz), which AAC at 192k keeps whole
    noise = sosfilt(butter(4, 8000, fs=rate, output="sos"), np.random.default_rng(1).normal(0, 1, (rate * 3, channels)), axis=0)
    meter = pyloudnorm.Meter(rate)
    mix = noise * 10 ** ((-18.0 - meter.integrated_loudness(noise)) / 20)
    write_wav(tmp_path / "mix.wav", mix, rate)
    write_clip(level_clip([100] * 49, (1.0, 1.0, 1.0)), 16, tmp_path / "a.mp4")
    assemble_reel([tmp_path / "a.mp4"], [48], 16, tmp_path / "mix.wav", tmp_path / "reel.mp4", preset="ultrafast")
    audio, sr = read_audio(tmp_path / "reel.mp4")
    assert pyloudnorm.Meter(sr).integrated_loudness(audio) == pytest.approx(-18.0, abs=0.3)


@pytest.mark.parametrize("preset", ["copy", "ultrafast"])
@pytest.mark.parametrize("mixed", [True, False])
def test_a_sound_track_encoded_beforehand_is_copied_as_the_reel_would_have_encoded_it(tmp_path: Path, preset: str,
                                                                                       mixed: bool) -> None:
    """``encode_delivery_audio`` makes the AAC track the assembly would make (padded or cut to the reel's
    samples; silence without a mix); the assembly copies it: the same samples as encoding it there."""
    from cinereel.nodes.pipeline.video import encode_delivery_audio

    rate, frames = 48_000, 40  # 2.5 s of reel at 16 fps; the mix is 3 s, so it is cut
    mix = tmp_path / "mix.wav" if mixed else None
    if mix is not None:
        write_wav(mix, np.random.default_rng(2).normal(0, 0.1, (rate * 3, 2)), rate)
    write_clip(level_clip([100] * (frames + 1), (1.0, 1.0, 1.0)), 16, tmp_path / "a.mp4")
    samples = frames * rate // 16
    encode_delivery_audio(mix, tmp_path / "sound.m4a", samples)
    assemble_reel([tmp_path / "a.mp4"], [frames], 16, mix, tmp_path / "here.mp4", preset=preset)
    assemble_reel([tmp_path / "a.mp4"], [frames], 16, None, tmp_path / "copied.mp4", preset=preset,
                  encoded_audio=tmp_path / "sound.m4a")
    here, copied = read_audio(tmp_path / "here.mp4")[0], read_audio(tmp_path / "copied.mp4")[0]
    assert copied.shape == here.shape == (samples, 2) and np.array_equal(copied, here)
    assert probe(tmp_path / "copied.mp4")["frames"] == frames
    assert (np.abs(copied).max() > 0.01) == mixed


def test_reel_without_audio_gets_a_silent_track(tmp_path: Path) -> None:
    write_clip(level_clip([100] * 9, (1.0, 1.0, 1.0)), 16, tmp_path / "a.mp4")
    assemble_reel([tmp_path / "a.mp4"], [8], 16, None, tmp_path / "reel.mp4", preset="ultrafast")
    info = probe(tmp_path / "reel.mp4")
    assert (info["audio_codec"], info["sample_rate"], info["channels"], info["frames"]) == ("aac", 48_000, 2, 8)
    assert np.abs(read_audio(tmp_path / "reel.mp4")[0]).max() < 1e-4


def test_assemble_checks_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one frame count per clip"):
        assemble_reel([tmp_path / "a.mp4"], [8, 8], 16, None, tmp_path / "r.mp4")
    with pytest.raises(FileNotFoundError):
        assemble_reel([tmp_path / "missing.mp4"], [8], 16, None, tmp_path / "r.mp4")


def test_preview_reel_end_to_end(tmp_path: Path) -> None:
    """Storyboard → Ken Burns → clips → reel at 1280×720, shots one second long to keep the test quick."""
    plan = make_plan()
    clips = []
    for shot in plan.shots:
        keyframe = render_keyframe(shot, plan, {}, shot.seed)
        clips.append(tmp_path / f"{shot.id}.mp4")
        write_clip(iter_clip(keyframe, shot.camera, shot.flow_shift, frames_for_duration(1.0, plan.fps), shot.seed),
                   plan.fps, clips[-1])
        assert technical_check(sample_frames(clips[-1], 8))["technical"] == []
    assemble_reel(clips, [16] * len(clips), plan.fps, None, tmp_path / "reel.mp4")
    info = probe(tmp_path / "reel.mp4")
    assert (info["width"], info["height"], info["frames"]) == (1280, 720, 48)
    assert abs(info["duration"] - 3.0) <= 1 / 16


# -- subtitles ------------------------------------------------------------------

SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n((?:.+\n?){1,2})$")


def parse_srt(text: str) -> list[tuple[int, str, str, list[str]]]:
    blocks = []
    for block in text.strip("\n").split("\n\n"):
        match = SRT_BLOCK.match(block)
        assert match, f"malformed block: {block!r}"
        blocks.append((int(match.group(1)), match.group(2), match.group(3), match.group(4).splitlines()))
    return blocks


def test_srt_format(tmp_path: Path) -> None:
    long = "The courier slips between taxis as the lights change, rain hammering the neon signs above the crossing."
    write_srt([(0.0, 2.5, "Tokyo, midnight."), (2.5, 9.0, long), (3661.5, 3662.0, "東京の夜")], tmp_path / "reel.srt")
    raw = (tmp_path / "reel.srt").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    blocks = parse_srt(raw.decode("utf-8"))
    assert [b[0] for b in blocks] == list(range(1, len(blocks) + 1))
    assert blocks[0][1:] == ("00:00:00,000", "00:00:02,500", ["Tokyo, midnight."])
    assert blocks[-1][1:] == ("01:01:01,500", "01:01:02,000", ["東京の夜"])
    long_parts = blocks[1:-1]
    assert len(long_parts) == 2 and long_parts[0][1] == "00:00:02,500" and long_parts[-1][2] == "00:00:09,000"
    assert long_parts[0][2] == long_parts[1][1], "split cues butt together"
    assert all(len(line) <= 42 for block in blocks for line in block[3])
    assert " ".join(line for block in long_parts for line in block[3]) == long


def test_srt_refuses_backwards_cues(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cue 2"):
        write_srt([(0, 1, "a"), (3, 2, "b")], tmp_path / "x.srt")


def test_srt_timestamp() -> None:
    assert srt_timestamp(0) == "00:00:00,000"
    assert srt_timestamp(59.9996) == "00:01:00,000"
    assert srt_timestamp(3723.004) == "01:02:03,004"


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=60), min_size=1, max_size=60),
       start=st.floats(0, 100), length=st.floats(0.5, 20))
def test_split_cue_keeps_words_and_time(words: list[str], start: float, length: float) -> None:
    parts = split_cue(start, start + length, " ".join(words))
    assert all(1 <= len(lines) <= 2 and all(len(line) <= 42 for line in lines) for _, _, lines in parts)
    assert "".join("".join(lines) for _, _, lines in parts).replace(" ", "") == "".join(words)
    assert parts[0][0] == start and parts[-1][1] == pytest.approx(start + length)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))


# -- technical critic -----------------------------------------------------------

@pytest.fixture(scope="module")
def clean_clip(plan: Plan) -> np.ndarray:
    keyframe = render_keyframe(plan.shots[0], plan, {}, 1).resize((320, 180))
    return render_clip(keyframe, "push_in", 5.0, 33, seed=1)


@pytest.mark.parametrize("time_of_day", ["midnight", "noon"])
@pytest.mark.parametrize("camera", CAMERA_MOVES)
def test_clean_clips_pass(time_of_day: str, camera: str) -> None:
    plan = make_plan(time_of_day=time_of_day)
    keyframe = render_keyframe(plan.shots[1], plan, {}, 1).resize((320, 180))
    critique = technical_check(render_clip(keyframe, camera, 5.0, 33, seed=1))
    assert critique["technical"] == [] and critique["label"] is None
    assert min(critique["scores"].values()) >= 7
    assert validate_critique(critique) == critique


def test_float_frames_are_read_as_zero_to_one(clean_clip: np.ndarray) -> None:
    assert technical_check(clean_clip.astype(np.float32) / 255)["technical"] == []


def assert_fails(critique: dict, problem: str, low_axes: list[str]) -> None:
    assert problem in critique["technical"], critique
    assert all(critique["scores"][axis] <= 3 for axis in low_axes), critique["scores"]
    assert mean_score(critique) < 7.0
    validate_critique(critique)


def test_black_frames_fail(clean_clip: np.ndarray) -> None:
    assert_fails(technical_check(np.zeros_like(clean_clip)), "black_frames", ["lighting_fidelity", "composition"])
    one_black = clean_clip.copy()
    one_black[16] = 2
    assert_fails(technical_check(one_black), "black_frames", ["lighting_fidelity"])


def test_blank_frames_fail(clean_clip: np.ndarray) -> None:
    assert_fails(technical_check(np.full_like(clean_clip, 128)), "blank_frames", ["composition"])


def test_frozen_clip_fails(clean_clip: np.ndarray) -> None:
    critique = technical_check(np.repeat(clean_clip[:1], len(clean_clip), axis=0))
    assert_fails(critique, "frozen", ["motion_coherence"])
    assert critique["label"] == "CAMERA_IGNORED" and critique["label"] in MOTION_LABELS


def test_flicker_fails(clean_clip: np.ndarray) -> None:
    flicker = clean_clip.astype(np.float32)
    flicker[::2] *= 0.75
    critique = technical_check(flicker.astype(np.uint8))
    assert_fails(critique, "flicker", ["lighting_fidelity", "motion_coherence"])
    fade = clean_clip.astype(np.float32) * np.linspace(1.0, 0.5, len(clean_clip))[:, None, None, None]
    assert "flicker" not in technical_check(fade.astype(np.uint8))["technical"], "a fade is not flicker"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_frames_fail(clean_clip: np.ndarray, bad: float) -> None:
    frames = clean_clip.astype(np.float32) / 255
    frames[7, 3, 4, 1] = bad
    assert_fails(technical_check(frames), "nan_or_inf", ["composition", "motion_coherence",
                                                         "character_consistency", "lighting_fidelity"])


def test_failure_labels_follow_the_design() -> None:
    assert FAILURE_LABELS == ("CHARACTER_DRIFT", "EXTRAS_INVADE_FRAME", "CAMERA_IGNORED", "WALKING_BACKWARDS",
                              "OBJECT_MORPHING", "HAND_FINGER_ARTIFACT", "WARDROBE_DRIFT", "NEON_GLOW_LEAK",
                              "STYLIZED_AI_LOOK", "RANDOM_INTIMACY")
    assert MOTION_LABELS == {"OBJECT_MORPHING", "CAMERA_IGNORED", "WALKING_BACKWARDS"}
    assert IMAGE_LABELS | MOTION_LABELS == set(FAILURE_LABELS) and not IMAGE_LABELS & MOTION_LABELS


GOOD = {"scores": {"composition": 8, "motion_coherence": 7, "character_consistency": 9, "lighting_fidelity": 6},
        "label": "wardrobe_drift", "notes": "jacket turned blue", "reasoning": "dropped"}


def test_validate_critique_normalises() -> None:
    out = validate_critique({**GOOD, "scores": {**GOOD["scores"], "composition": 8.0}})
    assert out == {"scores": GOOD["scores"], "label": "WARDROBE_DRIFT", "technical": [], "notes": "jacket turned blue"}
    assert isinstance(out["scores"]["composition"], int)


@pytest.mark.parametrize("change,field", [
    ({"scores": {"composition": 8, "motion_coherence": 7, "character_consistency": 9}}, "scores.lighting_fidelity"),
    ({"scores": {**GOOD["scores"], "composition": 11}}, "scores.composition"),
    ({"scores": {**GOOD["scores"], "composition": 0}}, "scores.composition"),
    ({"scores": {**GOOD["scores"], "motion_coherence": 7.5}}, "scores.motion_coherence"),
    ({"scores": {**GOOD["scores"], "motion_coherence": "7"}}, "scores.motion_coherence"),
    ({"scores": {**GOOD["scores"], "lighting_fidelity": True}}, "scores.lighting_fidelity"),
    ({"scores": {**GOOD["scores"], "lighting_fidelity": float("nan")}}, "scores.lighting_fidelity"),
    ({"scores": {**GOOD["scores"], "vibes": 9}}, "scores.vibes"),
    ({"scores": [8, 7, 9, 6]}, "scores"),
    ({"label": "BLURRY"}, "label"),
    ({"label": 3}, "label"),
    ({"technical": "frozen"}, "technical"),
    ({"notes": 5}, "notes"),
])
def test_validate_critique_names_the_bad_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        validate_critique({**GOOD, **change})
    with pytest.raises(ValueError, match="JSON object"):
        validate_critique(["not", "a", "dict"])
