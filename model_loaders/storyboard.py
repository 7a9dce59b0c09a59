"""Procedural storyboard frames: the weights-free preview backend for portraits and keyframes.

A character's look (skin, hair, one colour per wardrobe item) is derived from
the plan's words alone, so the master portrait and every keyframe that shows
the character agree by construction: both draw the same ``Look`` with the same
figure routine. The seed only moves the scenery (skyline, light, stars, neon,
staging), so a retry with a new seed gives a new frame of the same people.

Everything is drawn with Pillow and numpy; captions use the Noto fonts
of two PyPI packages (CJK and Devanagari, both with Latin), so every narration language's script is drawn
and frames render identically on a machine without system fonts.
"""

from __future__ import annotations

import colorsys
import hashlib
import textwrap
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from .vocabulary.plan import Character, Plan, Shot

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Every camera move of the Ken Burns backend keeps this centre region in view
# (the largest move crops 1 - 1/1.16 ≈ 14 % off one side), so captions placed
# inside it are never cut off by the motion.
CAMERA_SAFE_MARGIN = 0.15

# -- colour vocabulary --------------------------------------------------------

COLOUR_WORDS: dict[str, RGB] = {
    "red": (178, 34, 34), "crimson": (160, 20, 50), "scarlet": (210, 36, 30), "burgundy": (110, 20, 40),
    "maroon": (110, 25, 30), "pink": (230, 130, 170), "rose": (205, 95, 120), "magenta": (200, 30, 150),
    "orange": (230, 120, 30), "amber": (240, 165, 30), "yellow": (235, 200, 40), "gold": (212, 170, 55),
    "golden": (212, 170, 55), "mustard": (200, 160, 40), "green": (40, 130, 60), "emerald": (20, 140, 90),
    "olive": (110, 115, 50), "khaki": (170, 160, 110), "teal": (20, 120, 125), "turquoise": (50, 190, 180),
    "cyan": (40, 200, 220), "blue": (40, 70, 170), "navy": (25, 35, 80), "cobalt": (30, 70, 190),
    "indigo": (60, 40, 120), "purple": (110, 50, 140), "violet": (140, 80, 190), "lavender": (180, 160, 215),
    "brown": (105, 70, 45), "tan": (190, 150, 105), "beige": (215, 200, 170), "cream": (240, 230, 205),
    "camel": (190, 145, 95), "black": (22, 22, 26), "white": (238, 238, 235), "ivory": (245, 240, 225),
    "grey": (128, 128, 132), "gray": (128, 128, 132), "charcoal": (55, 57, 62), "silver": (190, 194, 200),
    "chrome": (200, 205, 212), "neon": (255, 40, 190),
}
# Materials have a typical colour, used only when the phrase names no colour.
MATERIAL_WORDS: dict[str, RGB] = {
    "leather": (52, 36, 28), "denim": (65, 95, 145), "jeans": (65, 95, 145), "linen": (225, 215, 190),
    "tweed": (115, 100, 78), "wool": (140, 125, 110), "silk": (225, 210, 220), "velvet": (95, 30, 70),
    "suede": (150, 110, 75), "canvas": (180, 165, 130), "camo": (90, 100, 60), "khakis": (170, 160, 110),
}
FALLBACK_PALETTE: tuple[RGB, ...] = (
    (176, 72, 64), (64, 112, 176), (88, 140, 92), (196, 150, 60), (120, 84, 150), (60, 150, 150),
    (200, 110, 140), (96, 96, 104), (150, 110, 80), (210, 190, 150), (40, 60, 100), (170, 60, 100),
)
SKIN_WORDS: dict[str, RGB] = {
    "pale": (240, 214, 196), "fair": (236, 204, 180), "freckled": (232, 196, 170), "olive": (200, 162, 120),
    "tan": (196, 150, 110), "tanned": (196, 150, 110), "brown": (150, 100, 70), "dark": (100, 66, 46),
    "ebony": (80, 52, 38),
}
SKIN_PALETTE: tuple[RGB, ...] = (
    (238, 204, 180), (224, 180, 145), (198, 152, 112), (160, 110, 78), (120, 80, 55), (92, 60, 42),
)
HAIR_WORDS: dict[str, RGB] = {
    "blonde": (220, 190, 120), "blond": (220, 190, 120), "redhead": (170, 70, 30), "ginger": (180, 80, 35),
    "auburn": (130, 50, 30), "brunette": (80, 50, 30),
}
HAIR_PALETTE: tuple[RGB, ...] = ((30, 24, 20), (70, 45, 28), (110, 75, 45), (200, 170, 110), (150, 150, 150))
MODIFIERS: dict[str, tuple[str, float]] = {
    "dark": ("shade", 0.6), "deep": ("shade", 0.7), "light": ("tint", 0.45), "pale": ("tint", 0.55),
    "pastel": ("tint", 0.5), "bright": ("saturate", 1.35), "neon": ("saturate", 1.8), "faded": ("tint", 0.3),
}


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "big")


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _shade(c: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, round(x * factor))) for x in c)  # type: ignore[return-value]


def _saturate(c: RGB, factor: float, lightness: float = 1.0) -> RGB:
    h, l, s = colorsys.rgb_to_hls(*(x / 255 for x in c))
    r, g, b = colorsys.hls_to_rgb(h, min(1.0, l * lightness), min(1.0, s * factor))
    return round(r * 255), round(g * 255), round(b * 255)


def wardrobe_colour(item: str) -> RGB:
    """The colour of one wardrobe phrase: its colour word (with modifiers), else its material, else a hash."""
    words = _words(item)
    named = [COLOUR_WORDS[w] for w in words if w in COLOUR_WORDS and w != "neon"]  # "neon green": neon modifies
    named = named or [MATERIAL_WORDS[w] for w in words if w in MATERIAL_WORDS]
    if not named and "neon" in words:
        return COLOUR_WORDS["neon"]
    if not named:
        return FALLBACK_PALETTE[_stable_hash(item.lower()) % len(FALLBACK_PALETTE)]
    colour = named[0]
    for word in words:
        kind, amount = MODIFIERS.get(word, ("", 0.0))
        if kind == "shade":
            colour = _shade(colour, amount)
        elif kind == "tint":
            colour = _mix(colour, (255, 255, 255), amount)
        elif kind == "saturate":
            colour = _saturate(colour, amount, 1.15)
    return colour


# -- characters ---------------------------------------------------------------

@dataclass(frozen=True)
class Prop:
    """Something a character carries, drawn in a hand: its kind (a PROP_PAINTERS key) and its colour."""

    kind: str
    colour: RGB


@dataclass(frozen=True)
class Look:
    """How a character is drawn, everywhere: derived from the character's words, never from a seed."""

    skin: RGB
    hair: RGB | None  # None: bald
    top: RGB  # first wardrobe item
    inner: RGB  # second item (collar, shirt), else a shade of the top
    legs: RGB  # third item, else a dark shade of the top
    hair_style: str = "short"  # a HAIR_STYLES key
    props: tuple[Prop, ...] = ()
    scarf: RGB | None = None  # drawn at the neck; it tells two of a kind apart ("deep red scarf", "navy blue scarf")
    height: float = 1.0  # of the staged figure's height: "tall" and "shorter" people differ


# Wardrobe items that start so are carried, not worn (the rule director writes "with a red kite").
CARRIED = ("with ", "carrying ", "holding ")
# Words of a description that give the hairstyle, the first style found wins ("long hair in a ponytail": ponytail).
HAIR_STYLES: dict[str, tuple[str, ...]] = {
    "ponytail": ("ponytail", "ponytails"), "bun": ("bun", "topknot", "chignon"),
    "braid": ("braid", "braids", "braided", "plait", "plaits", "pigtails"), "long": ("long", "shoulder", "flowing"),
}


SCARVES = ("scarf", "shawl", "dupatta", "muffler")
HEIGHT_WORDS = {"tall": 1.07, "towering": 1.1, "lanky": 1.06, "shorter": 0.93, "petite": 0.92, "stocky": 0.96}


def character_look(character: Character) -> Look:
    words = _words(character.description)
    skin = next((SKIN_WORDS[w] for w in words if w in SKIN_WORDS), None)
    skin = skin or SKIN_PALETTE[_stable_hash(character.id + ":skin") % len(SKIN_PALETTE)]
    worn = [item for item in character.wardrobe if not item.lower().startswith(CARRIED)] or list(character.wardrobe)
    scarves = [item for item in worn if any(w in SCARVES for w in _words(item))]
    worn = [item for item in worn if item not in scarves] or worn
    garments = [wardrobe_colour(item) for item in worn]
    top = garments[0]
    inner = garments[1] if len(garments) > 1 else _mix(top, (255, 255, 255), 0.35)
    legs = garments[2] if len(garments) > 2 else _shade(top, 0.55)
    props = tuple(prop for item in character.wardrobe if item.lower().startswith(CARRIED) and (prop := _prop(item)))
    return Look(skin=skin, hair=_hair_colour(character, words), top=top, inner=inner, legs=legs,
                hair_style=_hair_style(words), props=props, scarf=wardrobe_colour(scarves[0]) if scarves else None,
                height=next((HEIGHT_WORDS[w] for w in words if w in HEIGHT_WORDS), 1.0))


def _hair_style(words: list[str]) -> str:
    """A style word; "long" only when it describes the hair ("long brown hair", not "long tail")."""
    for style, style_words in HAIR_STYLES.items():
        if any(w in style_words and (style != "long" or "hair" in words[i + 1:i + 4]) for i, w in enumerate(words)):
            return style
    return "short"


def _prop(item: str) -> Prop | None:
    """The prop a carried item names, in the colour it names (else the prop's own)."""
    words = _words(item)
    kind = next((PROP_ALIASES.get(w, w) for w in words if PROP_ALIASES.get(w, w) in PROP_PAINTERS), None)
    if kind is None:
        return None
    named = any(w in COLOUR_WORDS or w in MATERIAL_WORDS for w in words)
    return Prop(kind, wardrobe_colour(item) if named else PROP_COLOURS[kind])


def _hair_colour(character: Character, words: list[str]) -> RGB | None:
    if "bald" in words or "shaved" in words:
        return None
    for i, word in enumerate(words):
        if word in HAIR_WORDS:
            return HAIR_WORDS[word]
        if word == "hair" and i > 0 and words[i - 1] in COLOUR_WORDS:
            return COLOUR_WORDS[words[i - 1]]
    return HAIR_PALETTE[_stable_hash(character.id + ":hair") % len(HAIR_PALETTE)]


Box = tuple[float, float, float, float]


def _draw_figure(draw: ImageDraw.ImageDraw, look: Look, cx: float, base: float, h: float) -> None:
    """A standing figure of height ``h`` whose feet are at ``(cx, base)``, with its hairstyle and what it carries;
    parts may fall outside the canvas."""

    h *= look.height

    def box(x0: float, y0: float, x1: float, y1: float) -> Box:
        return cx + x0 * h, base - y0 * h, cx + x1 * h, base - y1 * h

    radius = max(1, round(0.04 * h))
    draw.rounded_rectangle(box(-0.11, 0.46, -0.015, 0.0), radius, fill=look.legs)
    draw.rounded_rectangle(box(0.015, 0.46, 0.11, 0.0), radius, fill=look.legs)
    sleeve = _shade(look.top, 0.82)
    draw.rounded_rectangle(box(-0.215, 0.79, -0.135, 0.40), radius, fill=sleeve)
    draw.rounded_rectangle(box(0.135, 0.79, 0.215, 0.40), radius, fill=sleeve)
    draw.rectangle(box(-0.035, 0.84, 0.035, 0.78), fill=_shade(look.skin, 0.85))
    draw.rounded_rectangle(box(-0.16, 0.80, 0.16, 0.42), radius * 2, fill=look.top)
    neckline = [(cx - 0.06 * h, base - 0.80 * h), (cx + 0.06 * h, base - 0.80 * h), (cx, base - 0.63 * h)]
    draw.polygon(neckline, fill=look.inner)
    if look.scarf is not None:
        draw.rounded_rectangle(box(-0.09, 0.825, 0.09, 0.755), radius, fill=look.scarf)
        draw.rounded_rectangle(box(0.02, 0.79, 0.075, 0.58), radius, fill=_shade(look.scarf, 0.85))
    if look.hair is not None:
        _draw_hair_behind(draw, look, box, radius)
    draw.ellipse(box(-0.072, 0.98, 0.072, 0.79), fill=look.skin)
    if look.hair is not None:
        draw.chord(box(-0.08, 0.995, 0.08, 0.85), 180, 360, fill=look.hair)
        if look.hair_style == "braid":  # over the shoulder, in front
            for k in range(5):
                y = 0.86 - 0.05 * k
                draw.ellipse(box(0.058, y + 0.028, 0.108, y - 0.028), fill=look.hair, outline=_shade(look.hair, 0.7))
    if h > 240:  # eyes only where they are more than a speck
        eye = _shade(look.skin, 0.35)
        for side in (-1, 1):
            ex = side * 0.03
            draw.ellipse(box(ex - 0.009, 0.902, ex + 0.009, 0.89), fill=eye)
    for prop in look.props:
        PROP_PAINTERS[prop.kind](draw, box, h, prop.colour)


def _draw_hair_behind(draw: ImageDraw.ImageDraw, look: Look, box, radius: int) -> None:
    """The hair behind the head: its back, and a ponytail, a bun or long hair over the shoulders."""
    hair = look.hair
    draw.ellipse(box(-0.082, 1.0, 0.082, 0.83), fill=hair)
    if look.hair_style == "long":
        draw.rounded_rectangle(box(-0.1, 0.95, 0.1, 0.68), radius, fill=hair)
    elif look.hair_style == "ponytail":
        draw.ellipse(box(0.045, 0.985, 0.125, 0.905), fill=hair)  # the tie, high at the back
        draw.polygon([_at(box, 0.08, 0.96), _at(box, 0.125, 0.93),
                      _at(box, 0.17, 0.72), _at(box, 0.12, 0.70)], fill=hair)
    elif look.hair_style == "bun":
        draw.ellipse(box(-0.05, 1.06, 0.05, 0.97), fill=hair)


# -- props: drawn in the figure's hands (right hand at x 0.175, left at -0.175, both at 0.40 of its height) ---------

def _at(box, x: float, y: float) -> tuple[float, float]:
    """The canvas point at (x, y) of the figure's height (``box`` of ``_draw_figure``)."""
    return box(x, y, x, y)[:2]


def _line(draw, box, h: float, points: list[tuple[float, float]], colour: RGB, width: float) -> None:
    draw.line([_at(box, x, y) for x, y in points], fill=colour, width=max(1, round(width * h)))


def _paint_umbrella(draw, box, h, colour) -> None:
    _line(draw, box, h, [(0.19, 0.36), (0.19, 1.2)], (60, 60, 64), 0.012)
    draw.pieslice(box(-0.09, 1.22, 0.47, 0.82), 180, 360, fill=colour)  # its rim just over the head


def _paint_kite(draw, box, h, colour) -> None:
    kx, ky = 0.58, 0.98
    _line(draw, box, h, [(0.19, 0.40), (kx, ky - 0.13)], (225, 225, 225), 0.004)
    diamond = [(kx, ky + 0.13), (kx + 0.09, ky), (kx, ky - 0.13), (kx - 0.09, ky)]
    draw.polygon([_at(box, x, y) for x, y in diamond], fill=colour)
    _line(draw, box, h, [(kx, ky - 0.13), (kx + 0.03, ky - 0.25), (kx - 0.02, ky - 0.35)], _shade(colour, 0.7), 0.006)


def _paint_guitar(draw, box, h, colour) -> None:
    _line(draw, box, h, [(0.12, 0.56), (-0.2, 0.8)], (60, 40, 25), 0.03)
    draw.ellipse(box(-0.03, 0.60, 0.2, 0.40), fill=colour)
    draw.ellipse(box(0.06, 0.67, 0.2, 0.53), fill=colour)
    draw.ellipse(box(0.07, 0.56, 0.12, 0.51), fill=(30, 20, 15))


def _paint_bicycle(draw, box, h, colour) -> None:
    for wx in (-0.62, -0.3):
        draw.ellipse(box(wx - 0.14, 0.28, wx + 0.14, 0.0), outline=(35, 35, 38), width=max(1, round(0.02 * h)))
    frame = [(-0.62, 0.14), (-0.46, 0.3), (-0.3, 0.14), (-0.52, 0.14), (-0.46, 0.3), (-0.28, 0.34), (-0.3, 0.14)]
    _line(draw, box, h, frame, colour, 0.018)
    _line(draw, box, h, [(-0.28, 0.34), (-0.22, 0.40), (-0.18, 0.40)], (35, 35, 38), 0.014)


def _paint_camera(draw, box, h, colour) -> None:
    _line(draw, box, h, [(-0.06, 0.79), (-0.07, 0.7)], (30, 30, 30), 0.008)
    _line(draw, box, h, [(0.06, 0.79), (0.07, 0.7)], (30, 30, 30), 0.008)
    draw.rounded_rectangle(box(-0.08, 0.72, 0.08, 0.6), max(1, round(0.01 * h)), fill=colour)
    draw.ellipse(box(-0.035, 0.69, 0.035, 0.63), fill=(20, 20, 24), outline=(200, 200, 210))


def _paint_bag(draw, box, h, colour) -> None:
    _line(draw, box, h, [(0.12, 0.8), (-0.2, 0.5)], _shade(colour, 0.7), 0.014)
    draw.rounded_rectangle(box(-0.29, 0.52, -0.13, 0.34), max(1, round(0.015 * h)), fill=colour)


def _paint_book(draw, box, h, colour) -> None:
    draw.rectangle(box(0.12, 0.52, 0.28, 0.32), fill=colour)
    draw.rectangle(box(0.26, 0.51, 0.28, 0.33), fill=(240, 235, 220))


def _paint_flowers(draw, box, h, colour) -> None:
    for dx in (-0.04, 0.0, 0.04):
        _line(draw, box, h, [(-0.18, 0.4), (-0.2 + dx, 0.55)], (50, 120, 50), 0.008)
    blooms = (colour, _mix(colour, (255, 255, 255), 0.4), _shade(colour, 0.8))
    for k, (dx, dy) in enumerate(((-0.06, 0.58), (-0.02, 0.6), (0.02, 0.57), (-0.04, 0.63), (0.0, 0.64))):
        draw.ellipse(box(-0.2 + dx - 0.03, dy + 0.03, -0.2 + dx + 0.03, dy - 0.03), fill=blooms[k % 3])


def _paint_balloon(draw, box, h, colour) -> None:
    _line(draw, box, h, [(0.19, 0.40), (0.3, 0.62), (0.34, 0.86)], (230, 230, 230), 0.004)
    draw.ellipse(box(0.26, 1.06, 0.42, 0.86), fill=colour)


def _paint_lantern(draw, box, h, colour) -> None:
    _line(draw, box, h, [(-0.19, 0.4), (-0.19, 0.33)], (40, 40, 40), 0.006)
    draw.ellipse(box(-0.27, 0.34, -0.11, 0.16), fill=colour, outline=_mix(colour, (255, 255, 255), 0.5))


def _paint_suitcase(draw, box, h, colour) -> None:
    _line(draw, box, h, [(0.19, 0.40), (0.26, 0.30)], (40, 40, 40), 0.01)
    draw.rounded_rectangle(box(0.2, 0.3, 0.42, 0.02), max(1, round(0.015 * h)), fill=colour)


PROP_PAINTERS = {"umbrella": _paint_umbrella, "kite": _paint_kite, "guitar": _paint_guitar, "bicycle": _paint_bicycle,
                 "camera": _paint_camera, "bag": _paint_bag, "book": _paint_book, "flowers": _paint_flowers,
                 "balloon": _paint_balloon, "lantern": _paint_lantern, "suitcase": _paint_suitcase}
PROP_ALIASES = {"bike": "bicycle", "bouquet": "flowers", "flower": "flowers", "handbag": "bag", "satchel": "bag",
                "parasol": "umbrella", "violin": "guitar"}
PROP_COLOURS: dict[str, RGB] = {  # a prop's colour when its words name none
    "umbrella": (25, 25, 30), "kite": (200, 40, 40), "guitar": (175, 110, 50), "bicycle": (40, 90, 160),
    "camera": (35, 35, 38), "bag": (120, 72, 40), "book": (140, 40, 40), "flowers": (220, 70, 110),
    "balloon": (220, 40, 60), "lantern": (255, 190, 90), "suitcase": (90, 60, 40),
}


# -- text -----------------------------------------------------------------------

# Caption fonts from PyPI packages, loaded on first use: Noto Sans CJK JP (kana, Han, Hangul, Latin) and
# Noto Sans Devanagari (Devanagari, Latin). A text with Devanagari in it is drawn with the second.
FONT_PACKAGES = {"cjk": ("noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf"),
                 "devanagari": ("fontpkg_noto_sans_devanagari", "files/NotoSansDevanagari[wdth,wght].ttf")}


@lru_cache(maxsize=4)
def _font_file(script: str) -> str | None:
    import importlib
    import importlib.resources

    package, name = FONT_PACKAGES[script]
    try:
        path = importlib.resources.files(importlib.import_module(package)).joinpath(name)
    except ImportError:
        return None
    return str(path) if path.is_file() else None


def _script(text: str) -> str:
    return "devanagari" if any("\u0900" <= ch <= "\u097f" for ch in text) else "cjk"


@lru_cache(maxsize=32)
def _font(size: int, script: str = "cjk") -> Font:
    path = _font_file(script)
    if path:
        return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType: the bitmap font, one size only
        return ImageFont.load_default_imagefont()


def font_for(text: str, size: int) -> Font:
    """The caption font that draws ``text`` (its script's Noto font), at ``size`` pixels."""
    return _font(size, _script(text))


@lru_cache(maxsize=4096)
def _font_has_glyph(size: int, char: str, script: str = "cjk") -> bool:
    font = _font(size, script)
    if not isinstance(font, ImageFont.FreeTypeFont):
        return ord(char) < 256
    missing = font.getmask("\U0010fffd")
    mask = font.getmask(char)
    return (mask.size, bytes(mask)) != (missing.size, bytes(missing))


def drawable_text(text: str, size: int, script: str | None = None) -> str:
    """``text`` as the default font can draw it: accents folded (é → e) where the glyph is missing,
    control and format characters dropped, whitespace collapsed. Glyphs still missing stay (as boxes)."""
    script = script or _script(text)
    out = []
    for char in text.encode("utf-8", "replace").decode("utf-8"):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(" " if char.isspace() else "")
        elif char.isspace() or _font_has_glyph(size, char, script):
            out.append(char)
        else:
            folded = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            if folded and all(_font_has_glyph(size, c, script) for c in folded):
                out.append(folded)
            else:  # FreeType draws a box for a missing glyph; the bitmap font would raise
                out.append(char if isinstance(_font(size, script), ImageFont.FreeTypeFont) else "?")
    return " ".join("".join(out).split())


def wrap_to_width(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Wrap ``text`` into at most ``max_lines`` lines no wider than ``max_width`` pixels, ending in '...' if cut."""
    avg = font.getlength("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLM") / 40
    width = max(4, int(max_width / avg))
    while True:
        lines = textwrap.wrap(text, width=width, max_lines=max_lines, placeholder=" ...")
        if width <= 4 or all(font.getlength(line) <= max_width for line in lines):
            return lines
        width -= 1


def _draw_one_line(draw: ImageDraw.ImageDraw, text: str, centre: tuple[float, float], size: int,
                   max_width: float) -> None:
    font = _font(size, _script(text))
    line = (wrap_to_width(drawable_text(text, size), font, max_width, 1) or [""])[0]
    draw.text(centre, line, font=font, fill=(245, 245, 240), anchor="mm")


def _darken_band(img: Image.Image, top: int, bottom: int, opacity: float = 0.58) -> None:
    """Semi-opaque black band across the frame: the caption stays legible over any scene."""
    region = (0, max(0, top), img.width, min(img.height, bottom))
    img.paste(ImageEnhance.Brightness(img.crop(region)).enhance(1.0 - opacity), region[:2])


# -- portraits ------------------------------------------------------------------

def render_portrait(character: Character, plan: Plan, seed: int, size: int = 768) -> Image.Image:
    """A master portrait card: the character head-and-shoulders on a studio backdrop, name across the bottom."""
    rng = np.random.default_rng([seed % 2**64, _stable_hash(character.id)])
    style = mood_style(plan.mood)
    hue = rng.random()
    top = _grade(_hls(hue, 0.42, 0.35), style)
    bottom = _grade(_hls(hue + 0.05, 0.16, 0.30), style)
    img = Image.fromarray(_vertical_gradient(size, size, [(0.0, top), (1.0, bottom)]))
    draw = ImageDraw.Draw(img)
    # head and shoulders: a figure 2.25 frames tall, feet far below the card
    cx = size * (0.5 + rng.uniform(-0.02, 0.02))
    _draw_figure(draw, character_look(character), cx=cx, base=size * 2.5, h=size * 2.25)
    _darken_band(img, round(size * 0.84), round(size * 0.97))
    _draw_one_line(draw, character.name, (size / 2, size * 0.905), max(10, round(size * 0.06)), size * 0.9)
    return img


def _hls(h: float, l: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, l, s)
    return round(r * 255), round(g * 255), round(b * 255)


# -- mood and time of day -------------------------------------------------------

@dataclass(frozen=True)
class MoodStyle:
    tint: RGB
    strength: float  # how far scene colours move toward the tint
    saturation: float


MOODS: dict[str, MoodStyle] = {
    "melancholic": MoodStyle((70, 90, 130), 0.30, 0.6), "sad": MoodStyle((70, 90, 130), 0.30, 0.6),
    "tense": MoodStyle((30, 110, 120), 0.25, 0.9), "thriller": MoodStyle((30, 110, 120), 0.25, 0.9),
    "joyful": MoodStyle((255, 190, 90), 0.18, 1.25), "happy": MoodStyle((255, 190, 90), 0.18, 1.25),
    "upbeat": MoodStyle((255, 170, 80), 0.15, 1.3), "romantic": MoodStyle((230, 120, 150), 0.25, 1.1),
    "mysterious": MoodStyle((80, 50, 120), 0.30, 0.8), "noir": MoodStyle((40, 40, 50), 0.35, 0.25),
    "moody": MoodStyle((50, 60, 90), 0.30, 0.7), "epic": MoodStyle((230, 130, 50), 0.22, 1.2),
    "calm": MoodStyle((120, 170, 170), 0.20, 0.85), "serene": MoodStyle((120, 170, 190), 0.20, 0.85),
    "peaceful": MoodStyle((130, 180, 150), 0.20, 0.85), "energetic": MoodStyle((230, 60, 160), 0.20, 1.35),
    "nostalgic": MoodStyle((200, 160, 110), 0.35, 0.55), "dreamy": MoodStyle((200, 170, 230), 0.30, 0.8),
    "hopeful": MoodStyle((250, 210, 150), 0.18, 1.1), "dark": MoodStyle((30, 30, 45), 0.35, 0.7),
}


def mood_style(mood: str) -> MoodStyle:
    """The colour grade for a mood word; an unknown mood gets a gentle tint picked by its hash."""
    for word in _words(mood):
        if word in MOODS:
            return MOODS[word]
    tint = FALLBACK_PALETTE[_stable_hash(mood.lower()) % len(FALLBACK_PALETTE)]
    return MoodStyle(tint, 0.15, 1.0)


def _grade(colour: RGB, style: MoodStyle) -> RGB:
    return _saturate(_mix(colour, style.tint, style.strength), style.saturation)


@dataclass(frozen=True)
class Light:
    sky_top: RGB
    sky_horizon: RGB
    ground_far: RGB
    ground_near: RGB
    source: RGB  # sun or moon
    source_height: float  # centre of the disc, as a fraction of the sky (0 top, 1 horizon)
    source_size: float  # disc radius, as a fraction of min(width, height)
    night: bool  # stars, a moon, lit windows
    neon: bool  # neon signs on the buildings


TIMES_OF_DAY: dict[str, Light] = {
    "dawn": Light((60, 70, 120), (240, 160, 130), (70, 60, 70), (40, 36, 44), (255, 200, 160), 0.85, 0.07, False, False),
    "sunrise": Light((80, 110, 170), (250, 175, 110), (80, 70, 60), (45, 40, 38), (255, 210, 140), 0.80, 0.08, False, False),
    "morning": Light((100, 160, 225), (200, 225, 240), (110, 120, 100), (70, 78, 62), (255, 245, 215), 0.35, 0.05, False, False),
    "day": Light((70, 140, 220), (190, 220, 245), (110, 125, 95), (70, 82, 58), (255, 250, 230), 0.18, 0.05, False, False),
    "noon": Light((60, 130, 220), (180, 215, 245), (120, 130, 95), (75, 85, 60), (255, 252, 240), 0.10, 0.05, False, False),
    "afternoon": Light((80, 145, 215), (215, 220, 220), (120, 118, 88), (76, 72, 54), (255, 240, 200), 0.35, 0.05, False, False),
    "golden": Light((90, 120, 170), (255, 185, 95), (120, 90, 55), (70, 50, 34), (255, 200, 110), 0.72, 0.08, False, False),
    "sunset": Light((70, 60, 120), (255, 130, 70), (90, 60, 50), (45, 32, 30), (255, 150, 70), 0.82, 0.09, False, False),
    "dusk": Light((35, 40, 90), (190, 100, 110), (50, 45, 60), (25, 24, 34), (255, 170, 120), 0.95, 0.08, False, True),
    "twilight": Light((30, 35, 85), (150, 100, 150), (45, 42, 60), (22, 22, 32), (240, 200, 190), 0.95, 0.07, True, True),
    "evening": Light((30, 40, 90), (130, 90, 130), (45, 42, 55), (22, 22, 30), (240, 225, 200), 0.30, 0.04, True, True),
    "night": Light((8, 10, 28), (30, 38, 70), (24, 24, 32), (10, 10, 16), (235, 235, 220), 0.22, 0.04, True, True),
    "midnight": Light((4, 5, 18), (20, 26, 55), (18, 18, 26), (6, 6, 12), (225, 228, 215), 0.15, 0.04, True, True),
}
_TIME_ALIASES = {"blue": "twilight", "late": "night", "rain": "evening", "overcast": "afternoon"}


def time_of_day_light(time_of_day: str) -> Light:
    """The lighting for a time-of-day phrase ("golden hour", "late night"); unknown phrases get daylight."""
    words = _words(time_of_day)
    for word in words:
        if word in TIMES_OF_DAY:
            return TIMES_OF_DAY[word]
    for word in words:
        if word in _TIME_ALIASES:
            return TIMES_OF_DAY[_TIME_ALIASES[word]]
    return TIMES_OF_DAY["day"]


# -- keyframes ------------------------------------------------------------------

# Per shot type: the horizon's height (fraction of the frame) and how close the buildings are.
STAGING: dict[str, tuple[float, float]] = {"establishing": (0.62, 1.0), "hero": (0.70, 1.8), "broll": (0.58, 2.6)}


def render_keyframe(shot: Shot, plan: Plan, portraits: dict[str, Image.Image], seed: int) -> Image.Image:
    """A storyboard frame for ``shot`` at the plan's size: graded scene, staged characters, caption band.

    ``portraits`` (character id → master portrait) is accepted so this backend is interchangeable
    with the reference-editing one; figures take their colours from the same ``Look`` as the portraits.
    """
    del portraits  # the look is recomputed from the plan, which is what the portraits were drawn from
    width, height = plan.width, plan.height
    rng = np.random.default_rng([seed % 2**64, _stable_hash(shot.id)])
    style = mood_style(plan.mood)
    light = time_of_day_light(plan.time_of_day)
    horizon_frac, scale = STAGING[shot.type]
    horizon = round(height * horizon_frac)

    img = Image.fromarray(_backdrop(width, height, horizon, light, style, rng))
    draw = ImageDraw.Draw(img)
    if light.night:
        _draw_stars(draw, width, horizon, rng)
    backdrop = backdrop_of(shot, plan)
    BACKDROP_PAINTERS[backdrop](draw, width, height, horizon, scale, light, style, rng)
    looks = [character_look(plan.character(cid)) for cid in shot.characters]
    _stage_figures(draw, shot.type, looks, width, height, horizon, rng)
    if shot.type == "broll":
        _draw_bokeh(img, light, style, rng)
    weather = weather_of(shot)
    if weather:
        img = _draw_weather(img, weather, rng)
    _draw_caption(img, shot)
    return img


# -- settings and weather, read from the plan's English prompts ----------------------------------------------

# backdrop -> words of a shot's prompt that call for it; the first backdrop whose word appears wins.
BACKDROPS: dict[str, tuple[str, ...]] = {
    "night sky": ("deep space", "outer space", "starfield", "night sky"),
    "interior": ("interior", "kitchen", "workshop", "cafe", "room", "shop", "library", "studio"),
    "rooftop": ("rooftop", "roof terrace"),
    "market": ("market", "stall", "bazaar"),
    "beach": ("beach", "harbour", "harbor", "by the sea", "seaside", "coast", "ocean"),
    "river": ("river", "bridge", "canal", "lake"),
    "snow": ("snowbound", "snowfield", "glacier", "snowy"),
    "desert": ("desert", "dunes"),
    "park": ("park", "forest", "garden", "woods", "countryside", "meadow", "hills"),
    "street": ("street", "alley", "city"),
}
WEATHER_WORDS: dict[str, tuple[str, ...]] = {
    "rain": ("rain", "thunderstorm", "downpour", "drizzle"), "snow": ("snow falling", "falling snow", "snowfall"),
    "fog": ("fog", "mist", "haze"),
}


def _has(text: str, words: tuple[str, ...]) -> bool:
    lowered = f" {' '.join(_words(text))} "
    return any(f" {word} " in lowered for word in words)


def backdrop_of(shot: Shot, plan: Plan) -> str:
    """The backdrop a shot's prompt (else the opening shot's) names; a city street when none does."""
    for text in (shot.prompt, plan.shots[0].prompt):
        found = next((name for name, words in BACKDROPS.items() if _has(text, words)), None)
        if found:
            return found
    return "street"


def weather_of(shot: Shot) -> str | None:
    return next((name for name, words in WEATHER_WORDS.items() if _has(shot.prompt, words)), None)


def _draw_weather(img: Image.Image, weather: str, rng: np.random.Generator) -> Image.Image:
    """Rain streaks, snowflakes or a fog veil over the scene (under the caption)."""
    width, height = img.size
    if weather == "fog":
        veil = _vertical_gradient(width, height, [(0.0, (200, 205, 210)), (1.0, (170, 175, 182))])
        return Image.blend(img, Image.fromarray(veil), 0.45)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    unit = min(width, height)
    count = int(width * height / (2500 if weather == "rain" else 4000))
    xs, ys = rng.uniform(0, width, count), rng.uniform(0, height, count)
    for x, y in zip(xs.tolist(), ys.tolist()):
        if weather == "rain":
            draw.line((x, y, x - 0.006 * unit, y + 0.035 * unit), fill=(200, 210, 230, 120), width=1)
        else:
            r = rng.uniform(0.002, 0.006) * unit
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 255, 210))
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def _ground(draw: ImageDraw.ImageDraw, width: int, height: int, top: int, colour: RGB) -> None:
    draw.rectangle((0, top, width, height), fill=colour)


def _paint_street(draw, width, height, horizon, scale, light, style, rng) -> None:
    _draw_skyline(draw, width, height, horizon, scale, light, style, rng)
    road = _grade(_shade(light.ground_near, 0.8), style)
    draw.polygon([(width * 0.42, horizon), (width * 0.58, horizon), (width, height), (0, height)], fill=road)


def _paint_rooftop(draw, width, height, horizon, scale, light, style, rng) -> None:
    _draw_skyline(draw, width, height, round(horizon * 1.02), scale * 0.6, light, style, rng)
    ledge = _grade((120, 80, 60), style)
    draw.rectangle((0, horizon, width, height), fill=_shade(ledge, 0.7))
    for x in np.arange(0, width, width / 9):  # a tiled roof edge
        draw.rectangle((x, horizon - 0.02 * height, x + width / 12, horizon + 0.02 * height), fill=ledge)


def _paint_market(draw, width, height, horizon, scale, light, style, rng) -> None:
    _draw_skyline(draw, width, height, horizon, scale, light, style, rng)
    stripes = ((200, 40, 40), (240, 235, 220), (30, 110, 160), (235, 180, 40))
    stall_w = width / 5
    for i in range(5):
        colour = _grade(stripes[i % len(stripes)], style)
        x = i * stall_w
        draw.rectangle((x + 4, horizon - 0.12 * height, x + stall_w - 4, horizon + 0.1 * height), fill=_shade(colour, 0.5))
        draw.polygon([(x, horizon - 0.12 * height), (x + stall_w, horizon - 0.12 * height),
                      (x + stall_w * 0.9, horizon - 0.2 * height), (x + stall_w * 0.1, horizon - 0.2 * height)],
                     fill=colour)
        if light.night:
            draw.ellipse((x + stall_w * 0.45, horizon - 0.1 * height, x + stall_w * 0.55, horizon - 0.05 * height),
                         fill=(255, 190, 90))


def _paint_beach(draw, width, height, horizon, scale, light, style, rng) -> None:
    sea = _grade(_mix((30, 90, 140), light.sky_horizon, 0.3), style)
    sand = _grade(_mix((220, 200, 150), light.ground_far, 0.35), style)
    _ground(draw, width, height, horizon, sea)
    shore = horizon + (height - horizon) * 0.45
    draw.polygon([(0, shore + 0.05 * height), (width, shore - 0.03 * height), (width, height), (0, height)], fill=sand)
    foam = _mix(sea, (255, 255, 255), 0.6)
    draw.line((0, shore + 0.05 * height, width, shore - 0.03 * height), fill=foam, width=max(2, height // 150))


def _paint_river(draw, width, height, horizon, scale, light, style, rng) -> None:
    _draw_skyline(draw, width, height, horizon, scale * 0.7, light, style, rng)
    water = _grade(_mix((40, 80, 110), light.sky_horizon, 0.35), style)
    _ground(draw, width, height, horizon + 2, water)
    stone = _grade((110, 100, 90), style)
    deck = horizon - 0.08 * height
    draw.rectangle((0, deck, width, deck + 0.04 * height), fill=stone)
    for i in range(4):  # arches
        cx = width * (0.125 + i * 0.25)
        draw.rectangle((cx - 0.02 * width, deck, cx + 0.02 * width, horizon + 0.06 * height), fill=_shade(stone, 0.8))


def _paint_park(draw, width, height, horizon, scale, light, style, rng) -> None:
    grass = _grade(_mix((60, 120, 50), light.ground_far, 0.4), style)
    _ground(draw, width, height, horizon, grass)
    leaves = _grade(_mix((40, 100, 45), light.ground_near, 0.3), style)
    trunk = _grade((80, 55, 35), style)
    for _ in range(14):
        x, size = rng.uniform(0, width), rng.uniform(0.05, 0.12) * height * scale
        base = horizon + rng.uniform(-0.01, 0.05) * height
        draw.rectangle((x - size * 0.08, base - size, x + size * 0.08, base), fill=trunk)
        draw.ellipse((x - size * 0.6, base - size * 2.0, x + size * 0.6, base - size * 0.7), fill=leaves)


def _paint_snow(draw, width, height, horizon, scale, light, style, rng) -> None:
    peaks = _grade((200, 210, 225), style)
    for i in range(5):
        x = width * (i / 4) + rng.uniform(-0.05, 0.05) * width
        draw.polygon([(x - 0.25 * width, horizon), (x, horizon - rng.uniform(0.15, 0.3) * height),
                      (x + 0.25 * width, horizon)], fill=peaks)
    _ground(draw, width, height, horizon, _grade((235, 238, 245), style))


def _paint_desert(draw, width, height, horizon, scale, light, style, rng) -> None:
    sand = _grade((215, 170, 110), style)
    _ground(draw, width, height, horizon, sand)
    for i in range(4):
        x = rng.uniform(0, width)
        draw.ellipse((x - 0.3 * width, horizon - 0.06 * height, x + 0.3 * width, horizon + 0.1 * height),
                     fill=_shade(sand, 0.9 + 0.05 * i))


def _paint_interior(draw, width, height, horizon, scale, light, style, rng) -> None:
    wall = _grade((150, 120, 95), style)
    draw.rectangle((0, 0, width, horizon), fill=wall)
    _ground(draw, width, height, horizon, _grade((90, 60, 40), style))
    window = (width * 0.6, height * 0.12, width * 0.85, horizon * 0.8)
    draw.rectangle(window, fill=_grade(light.sky_horizon, style), outline=_shade(wall, 0.5), width=max(3, height // 90))
    draw.line((window[0], (window[1] + window[3]) / 2, window[2], (window[1] + window[3]) / 2), fill=_shade(wall, 0.5),
              width=max(3, height // 120))
    draw.rectangle((width * 0.1, horizon - 0.05 * height, width * 0.4, horizon + 0.02 * height), fill=_shade(wall, 0.55))


def _paint_night_sky(draw, width, height, horizon, scale, light, style, rng) -> None:
    _draw_stars(draw, width, horizon, rng)
    _draw_stars(draw, width, horizon, rng)
    _ground(draw, width, height, horizon, _grade((60, 60, 70), style))


BACKDROP_PAINTERS = {"street": _paint_street, "rooftop": _paint_rooftop, "market": _paint_market,
                     "beach": _paint_beach, "river": _paint_river, "park": _paint_park, "snow": _paint_snow,
                     "desert": _paint_desert, "interior": _paint_interior, "night sky": _paint_night_sky}


def _vertical_gradient(width: int, height: int, stops: list[tuple[float, RGB]]) -> np.ndarray:
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)
    positions = [p for p, _ in stops]
    column = np.stack([np.interp(ys, positions, [c[i] for _, c in stops]) for i in range(3)], axis=-1)
    # one column converted, then repeated across: converting every pixel took ten times as long
    return np.repeat(column.astype(np.uint8)[:, None, :], width, axis=1)


def _backdrop(width: int, height: int, horizon: int, light: Light, style: MoodStyle,
              rng: np.random.Generator) -> np.ndarray:
    """Sky gradient down to the horizon, ground gradient below it, and the sun or moon with its glow."""
    h = max(horizon, 1)
    sky_top, sky_horizon = _grade(light.sky_top, style), _grade(light.sky_horizon, style)
    ground_far, ground_near = _grade(light.ground_far, style), _grade(light.ground_near, style)
    stops = [(0.0, sky_top), (h / height, sky_horizon), (min(1.0, (h + 1) / height), ground_far), (1.0, ground_near)]
    frame = _vertical_gradient(width, height, stops)

    unit = min(width, height)
    radius = light.source_size * unit
    cx, cy = width * rng.uniform(0.2, 0.8), horizon * light.source_height
    glow_r = radius * 6
    x0, x1 = int(max(0, cx - glow_r)), int(min(width, cx + glow_r))
    y0, y1 = int(max(0, cy - glow_r)), int(min(horizon, cy + glow_r))
    if x1 > x0 and y1 > y0:
        yy, xx = np.ogrid[y0:y1, x0:x1]
        dist = np.hypot(xx - cx, yy - cy).astype(np.float32) / radius
        # a solid disc with an edge softened over an eighth of its radius, plus a wide glow
        weight = np.clip(1.15 - dist, 0.0, 1.0) * 8 + np.exp(-dist / 1.6) * (0.25 if light.night else 0.55)
        weight = np.clip(weight, 0.0, 1.0)[..., None]
        patch = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (patch + (np.array(light.source, np.float32) - patch) * weight).astype(np.uint8)
    return frame


def _draw_stars(draw: ImageDraw.ImageDraw, width: int, horizon: int, rng: np.random.Generator) -> None:
    count = int(width * horizon / 6000)
    xs, ys = rng.uniform(0, width, count), rng.uniform(0, horizon * 0.8, count)
    for x, y, b in zip(xs, ys, rng.uniform(120, 255, count)):
        draw.point((float(x), float(y)), fill=(int(b), int(b), int(b * 0.95)))


NEON_COLOURS: tuple[RGB, ...] = ((255, 40, 190), (40, 230, 255), (160, 60, 255), (255, 70, 80), (80, 255, 160))


def _draw_skyline(draw: ImageDraw.ImageDraw, width: int, height: int, horizon: int, scale: float,
                  light: Light, style: MoodStyle, rng: np.random.Generator) -> None:
    unit = min(width, height)
    base_colour = _grade(_mix(light.sky_horizon, light.ground_near, 0.75), style)
    window_lit = _grade((255, 210, 140), style) if light.night else _mix(base_colour, light.sky_top, 0.35)
    x = -rng.uniform(0, 0.05 * unit * scale)
    while x < width:
        w = rng.uniform(0.04, 0.11) * unit * scale
        h = rng.uniform(0.05, 0.24) * unit * scale
        colour = _shade(base_colour, rng.uniform(0.75, 1.15))
        draw.rectangle((x, horizon - h, x + w, horizon + 1), fill=colour)
        _draw_windows(draw, (x, horizon - h, x + w, horizon), unit * scale, window_lit, light.night, rng)
        if light.neon and rng.random() < 0.3:
            neon = NEON_COLOURS[int(rng.integers(len(NEON_COLOURS)))]
            sign_y = horizon - h * rng.uniform(0.5, 0.85)
            sign = (x + w * 0.15, sign_y, x + w * 0.85, sign_y + 0.018 * unit * scale)
            draw.rectangle(sign, fill=neon, outline=_mix(neon, (255, 255, 255), 0.6), width=max(1, round(0.003 * unit)))
        x += w + rng.uniform(-0.01, 0.02) * unit * scale


def _draw_windows(draw: ImageDraw.ImageDraw, building: tuple[float, float, float, float], size: float,
                  lit: RGB, night: bool, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = building
    step = 0.022 * size
    if step < 3:
        return
    cols = np.arange(x0 + step * 0.6, x1 - step * 0.6, step)
    rows = np.arange(y0 + step * 0.6, y1 - step, step * 1.3)
    on = rng.random((len(rows), len(cols))) < (0.45 if night else 0.8)
    for (r, c) in zip(*np.nonzero(on)):
        wx, wy = cols[c], rows[r]
        draw.rectangle((wx, wy, wx + step * 0.45, wy + step * 0.6), fill=lit)


def _stage_figures(draw: ImageDraw.ImageDraw, shot_type: str, looks: list[Look], width: int, height: int,
                   horizon: int, rng: np.random.Generator) -> None:
    """hero: one big figure on a third; establishing: small figures across the scene; broll: a cropped detail."""
    if not looks:
        return
    unit = min(width, height)
    if shot_type == "hero":
        side = 1 if rng.random() < 0.5 else -1
        for i, look in enumerate(looks[1:4], start=1):  # companions: smaller, behind, on the other side
            cx = width * (0.5 - side * (0.22 + 0.12 * i))
            _draw_figure(draw, look, cx, horizon + 0.45 * unit, 0.75 * unit)
        # a medium shot: the face (0.885 of the figure's height above its feet) a third of the way down
        _draw_figure(draw, looks[0], width * (0.5 + side * 0.14), height * 0.33 + 0.885 * 1.6 * unit, 1.6 * unit)
    elif shot_type == "establishing":
        xs = np.sort(rng.uniform(0.25, 0.75, len(looks))) * width
        for look, cx in zip(looks, xs):
            _draw_figure(draw, look, float(cx), horizon + rng.uniform(0.04, 0.12) * height, 0.16 * unit)
    else:
        # a wardrobe detail: the torso fills one side of the frame, the head just out of shot
        cx, h = width * (0.8 if rng.random() < 0.5 else 0.2), 3.0 * unit
        _draw_figure(draw, looks[0], cx, height * 0.02 + 0.80 * h, h)


def _draw_bokeh(img: Image.Image, light: Light, style: MoodStyle, rng: np.random.Generator) -> None:
    """Out-of-focus light discs: the b-roll 'detail' look."""
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    unit = min(img.size)
    colours = [*NEON_COLOURS] if light.night else [_grade(light.source, style), _grade(light.sky_horizon, style)]
    for _ in range(14):
        r = rng.uniform(0.02, 0.07) * unit
        x, y = rng.uniform(0, img.width), rng.uniform(0, img.height * 0.7)
        colour = colours[int(rng.integers(len(colours)))]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*colour, int(rng.uniform(50, 110))))
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


def _draw_caption(img: Image.Image, shot: Shot) -> None:
    """Shot id, type and camera, the narration in its own script, then the prompt, in the camera-safe region,
    on a dark band."""
    width, height = img.size
    unit = min(width, height)
    title_size, body_size = max(10, round(unit * 0.042)), max(9, round(unit * 0.033))
    title_font, body_font = _font(title_size), _font(body_size)
    left, text_width = width * CAMERA_SAFE_MARGIN, width * (1 - 2 * CAMERA_SAFE_MARGIN)
    title = f"{shot.id} · {shot.type.upper()} · {shot.camera.replace('_', ' ')} · {shot.duration_s:g} s"
    title = drawable_text(title, title_size)
    title = (wrap_to_width(title, title_font, text_width, 1) or [""])[0]
    said_font = _font(body_size, _script(shot.narration))
    said = wrap_to_width(drawable_text(shot.narration, body_size), said_font, text_width, 1) if shot.narration else []
    lines = wrap_to_width(drawable_text(shot.prompt, body_size), body_font, text_width, 3 - len(said))

    line_h = round(body_size * 1.3)
    bottom = round(height * (1 - CAMERA_SAFE_MARGIN))
    top = bottom - round(title_size * 1.5) - line_h * (len(said) + len(lines)) - round(unit * 0.03)
    _darken_band(img, top, bottom + round(unit * 0.01))
    draw = ImageDraw.Draw(img)
    y = top + round(unit * 0.015)
    draw.text((left, y), title, font=title_font, fill=(255, 236, 170))
    y += round(title_size * 1.5)
    for line, font, fill in [*((t, said_font, (255, 255, 255)) for t in said),
                             *((t, body_font, (200, 200, 196)) for t in lines)]:
        draw.text((left, y), line, font=font, fill=fill)
        y += line_h
