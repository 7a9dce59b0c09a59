"""The animatic draws what the plan says: the setting's backdrop, the weather, and captions in every script."""

from __future__ import annotations

import numpy as np
from cinereel.model_loaders.rules import DirectorRequest, RuleDirector
from cinereel.model_loaders.storyboard import _font, backdrop_of, render_keyframe, weather_of
from PIL import ImageDraw


def keyframe(sentence: str, shot: int = 0):
    plan, _ = RuleDirector().plan(DirectorRequest(sentence=sentence))
    return plan, np.asarray(render_keyframe(plan.shots[shot], plan, {}, 7)).astype(np.float32)


def scene_rows(frame: np.ndarray) -> np.ndarray:
    return frame[: int(frame.shape[0] * 0.55)]  # above the caption band


def test_different_settings_draw_different_backdrops():
    beach_plan, beach = keyframe("A man flies a kite on the beach in Sydney at noon")
    park_plan, park = keyframe("A man reads on a bench in the park in Sydney at noon")
    assert (backdrop_of(beach_plan.shots[0], beach_plan), backdrop_of(park_plan.shots[0], park_plan)) == ("beach", "park")
    # a simple image statistic: the mean colour of the scene (same light, same mood, same seed)
    lower = slice(int(beach.shape[0] * 0.45), int(beach.shape[0] * 0.8))
    assert np.abs(beach[lower].mean(axis=(0, 1)) - park[lower].mean(axis=(0, 1))).max() > 15


def test_every_backdrop_differs_from_the_street():
    sentences = {"rooftop": "A man sits on a rooftop at noon", "market": "A man walks through a market at noon",
                 "interior": "A man sits in a kitchen at noon", "river": "A man walks by the river at noon",
                 "snow": "A man crosses a glacier at noon", "night sky": "A man floats in outer space at noon"}
    _, street = keyframe("A man walks down the street at noon")
    for name, sentence in sentences.items():
        plan, frame = keyframe(sentence)
        assert backdrop_of(plan.shots[0], plan) == name, sentence
        assert np.abs(scene_rows(frame) - scene_rows(street)).mean() > 8, name


def test_rain_and_fog_are_drawn():
    plan, rain = keyframe("A man walks down the street in the rain at noon")
    _, dry = keyframe("A man walks down the street at noon")
    assert weather_of(plan.shots[0]) == "rain"
    assert np.abs(scene_rows(rain) - scene_rows(dry)).mean() > 3
    plan, fog = keyframe("A man walks down the street in thick fog at noon")
    assert weather_of(plan.shots[0]) == "fog"
    assert scene_rows(fog).std() < scene_rows(dry).std()  # a veil flattens the contrast


def test_a_japanese_caption_draws_glyphs_not_boxes():
    from PIL import Image

    font = _font(40, "cjk")

    def drawn(text: str) -> np.ndarray:
        img = Image.new("L", (400, 60), 0)
        ImageDraw.Draw(img).text((5, 5), text, font=font, fill=255)
        return np.asarray(img)

    missing = drawn("\U0010fffd\U0010fffd\U0010fffd")  # the font's missing-glyph box, three times
    for text in ("雨の夜", "東京", "猫が"):
        glyphs = drawn(text)
        assert glyphs.any() and not np.array_equal(glyphs, missing[:, :]), text
        assert bytes(font.getmask(text[0])) != bytes(font.getmask("\U0010fffd"))
    # and the keyframe of a Japanese plan draws its narration line with that font
    plan, frame = keyframe("雨の夜、小さな猫が屋台の下で眠っている")
    assert plan.language == "ja" and frame.shape == (720, 1280, 3)


def test_devanagari_has_its_font():
    font = _font(40, "devanagari")
    assert bytes(font.getmask("बारिश")) != bytes(font.getmask("\U0010fffd" * 5))
