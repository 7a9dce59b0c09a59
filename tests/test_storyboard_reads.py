"""The animatic draws what the plan says: the setting's backdrop, the weather, captions in every script, and each
character's hair, clothes and props."""

from __future__ import annotations

import numpy as np
from cinereel.model_loaders.rules import DirectorRequest, RuleDirector
from cinereel.model_loaders.storyboard import (
    COLOUR_WORDS,
    PROP_PAINTERS,
    _draw_figure,
    _font,
    backdrop_of,
    character_look,
    render_keyframe,
    weather_of,
)
from cinereel.model_loaders.vocabulary.plan import Character
from PIL import Image, ImageDraw


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


# -- characters: a figure 400 px tall, feet at (250, 620), on a plain canvas ---------------------------------------
CX, BASE, H = 250, 620, 400


def figure(description: str = "Woman, short hair", wardrobe: tuple[str, ...] = ("grey coat",)) -> np.ndarray:
    img = Image.new("RGB", (600, 700), (0, 0, 0))
    look = character_look(Character(id="x", name="X", description=description, wardrobe=list(wardrobe)))
    _draw_figure(ImageDraw.Draw(img), look, CX, BASE, H)
    return np.asarray(img).astype(np.int16)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(axis=-1) > 0


def region(x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
    """Rows and columns of a box given as fractions of the figure's height: x from its centre, y up from its feet."""
    return slice(round(BASE - y0 * H), round(BASE - y1 * H)), slice(round(CX + x0 * H), round(CX + x1 * H))


def test_a_ponytail_is_drawn_beside_the_head():
    diff = changed(figure("Girl, hair in a ponytail"), figure("Girl, short hair"))
    beside_head = region(0.04, 1.0, 0.2, 0.66)
    assert diff[beside_head].sum() > 0.9 * diff.sum() > 0  # all of the change is the tail beside the head


def test_hairstyles_differ_where_they_are_worn():
    short = figure("Girl, short hair")
    bun = changed(figure("Girl, hair in a bun"), short)
    assert bun[region(-0.1, 1.08, 0.1, 0.97)].sum() > 0.9 * bun.sum() > 0  # on top of the head
    long = changed(figure("Girl, long hair"), short)
    assert long[region(-0.12, 0.96, 0.12, 0.66)].sum() > 0.9 * long.sum() > 0  # down to the shoulders
    assert not changed(figure("Cat, short fur, long tail"), figure("Cat, short fur, tail")).any()  # not hair


def test_the_stated_hair_colour_is_drawn():
    red = figure("Man, red hair in a ponytail")
    top_of_head = red[region(-0.02, 0.99, 0.02, 0.97)].reshape(-1, 3)
    assert (top_of_head == COLOUR_WORDS["red"]).all(axis=1).mean() > 0.9


def test_a_yellow_raincoat_colours_the_torso():
    torso = region(-0.12, 0.6, 0.12, 0.45)
    yellow = figure(wardrobe=("yellow raincoat",))[torso].reshape(-1, 3)
    assert (yellow == COLOUR_WORDS["yellow"]).all(axis=1).mean() > 0.9
    grey = figure(wardrobe=("grey raincoat",))[torso].reshape(-1, 3)
    assert (grey == COLOUR_WORDS["yellow"]).all(axis=1).mean() == 0


def test_a_carried_umbrella_is_drawn_above_the_head_in_its_colour():
    plain = figure(wardrobe=("grey coat",))
    umbrella = figure(wardrobe=("grey coat", "with a red umbrella"))
    diff = changed(umbrella, plain)
    above_head = region(-0.1, 1.3, 0.5, 1.0)
    assert diff[above_head].sum() > 0.6 * diff.sum() > 0
    canopy = umbrella[above_head].reshape(-1, 3)
    assert (canopy == COLOUR_WORDS["red"]).all(axis=1).sum() > 1000
    assert (figure(wardrobe=("grey coat", "with a red umbrella"))[:, :, :] == umbrella).all()  # props are not garments:
    assert (umbrella[region(-0.12, 0.6, 0.12, 0.45)] == plain[region(-0.12, 0.6, 0.12, 0.45)]).all()  # same coat


def test_every_prop_is_drawn():
    plain = figure(wardrobe=("grey coat",))
    for prop in PROP_PAINTERS:
        assert changed(figure(wardrobe=("grey coat", f"with a {prop}")), plain).sum() > 300, prop


def test_a_kite_flies_beside_the_figure_not_on_it():
    diff = changed(figure(wardrobe=("grey coat", "with a blue kite")), figure(wardrobe=("grey coat",)))
    beside = region(0.2, 1.2, 0.7, 0.3)
    assert diff[beside].sum() > 0.8 * diff.sum() > 0


def test_the_director_s_wardrobe_and_props_reach_the_keyframe():
    """A Spanish sentence: the girl's green raincoat and red umbrella are in the hero keyframe; without the
    umbrella in the plan, the frame has none of its red."""
    plan, _ = RuleDirector().plan(DirectorRequest(
        sentence="Una niña con un impermeable verde y un paraguas rojo espera en la calle a mediodía"))
    girl = plan.characters[0]
    assert girl.wardrobe[:2] == ["green raincoat", "with a red umbrella"]
    hero = next(shot for shot in plan.shots if shot.type == "hero")
    without = plan.model_copy(update={"characters": [girl.model_copy(update={"wardrobe": girl.wardrobe[:1]})]})
    frame = np.asarray(render_keyframe(hero, plan, {}, 3))
    bare = np.asarray(render_keyframe(hero, without, {}, 3))
    red = (frame == COLOUR_WORDS["red"]).all(axis=-1)
    assert red.sum() > 500 and not (bare == COLOUR_WORDS["red"]).all(axis=-1).any()
    assert (frame == COLOUR_WORDS["green"]).all(axis=-1).mean() > 0.05  # the raincoat fills the medium shot


def test_several_characters_are_drawn_and_told_apart():
    plan, _ = RuleDirector().plan(DirectorRequest(sentence="Dos amigos pasean por el parque a mediodía"))
    first, second = (character_look(c) for c in plan.characters)
    assert (first.scarf, first.height) != (second.scarf, second.height)  # the director's distinguishers, drawn
    both = next(shot for shot in plan.shots if shot.type == "hero" and len(shot.characters) == 2)
    alone = both.model_copy(update={"characters": both.characters[:1]})
    diff = changed(np.asarray(render_keyframe(both, plan, {}, 5)).astype(np.int16),
                   np.asarray(render_keyframe(alone, plan, {}, 5)).astype(np.int16))
    assert diff[: int(720 * 0.7)].mean() > 0.02  # the companion stands in the scene
    assert (np.asarray(render_keyframe(both, plan, {}, 5)) == second.scarf).all(axis=-1).any()
