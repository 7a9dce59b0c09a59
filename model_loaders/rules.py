"""Rule-based director: the weights-free preview backend of the director stage.

It reads the sentence with tables instead of a model, and writes the same
validated ``Plan`` the language-model director writes:

- a gazetteer (``rules_data/gazetteer.json``) gives the locale and the
  narration language (Tokyo: Japanese; the language override wins);
- keyword tables give the mood and the time of day;
- a table of archetypes (``rules_data/characters.json``) turns the sentence's
  subjects into characters with a face and a wardrobe;
- per-language templates (``rules_data/narration/<lang>.json``) give narration
  sized to each shot, telling a small arc from the opening to the close.

Same request, same plan, in a few milliseconds. Places, characters and
narration languages are data: add them without touching this code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .reading import (
    Attribute,
    Subject,
    english_values,
    find_attributes,
    find_first,
    find_setting_name,
    grammar,
    matcher,
    settings_data,
    tables_for,
)
from .reading import find_subjects as find_lexicon_subjects
from .speaking_rates import ENGINES as VOICE_ENGINES
from .speaking_rates import narration_budget, narration_length
from .textlang import detect_language
from .vocabulary.frames import ASPECTS, RESOLUTIONS, frame_size
from .vocabulary.languages import LANGUAGES, normalize_language
from .vocabulary.plan import (
    DEFAULT_FLOW_SHIFT,
    MAX_FLOW_SHIFT,
    MAX_REEL_SECONDS,
    MAX_SHOTS,
    MIN_FLOW_SHIFT,
    Plan,
    validate_plan,
)

__all__ = [
    "DirectorRequest",
    "Place",
    "RuleDirector",
    "find_place",
    "narration_budget",
    "narration_languages",
    "narration_length",
    "shot_seed",
    "split_durations",
]

DATA_DIR = Path(__file__).with_name("rules_data")
T = TypeVar("T")

# -- limits -------------------------------------------------------------------
MAX_SENTENCE_CHARS = 2000
MIN_SHOT_S = 1.0
MAX_SHOT_S = 30.0  # the plan schema's limit on one shot
MIN_FPS, MAX_FPS = 8, 60  # the plan schema's limits
AUTO_LANGUAGE = ("", "auto")  # language values that mean "no override"
MAX_CHARACTERS = 4  # more recurring characters than this do not stay consistent across keyframes

NO_PLACE = "an unnamed city"
DEFAULT_LANGUAGE = "en-US"
REF_WEIGHT = 0.75

# -- narration pacing (the speaking rates and voice window: speaking_rates.py) ----------
NARRATION_FILL = 0.8  # a line this full of its budget is full; below it, more mood lines and a filler join
NARRATION_THIN = 0.6  # below this, the line also borrows the rest of the story, then repeats what was said
COMBINE_LINES = 3  # templates combined in search of the best fit (fresh ones, the first from the arc)


# =============================================================================
# The request
# =============================================================================

@dataclass(frozen=True)
class DirectorRequest:
    """What the director is asked for. ``validate()`` names every problem before any work is done."""

    sentence: str
    duration_s: float = 30.0
    shots: int = 6
    aspect: str = "16:9"  # or "9:16"
    language: str | None = None  # narration language override; None, "" or "auto": from the place
    seed: int = 0
    fps: int = 16
    resolution: str = "720p"  # or "480p"
    # The engine that will speak the narration ("espeak-ng" or "kokoro"; Kokoro hands the languages it lacks
    # to eSpeak NG): each shot's narration is sized to its speaking rate. None: not known, the slower engine's.
    voice_engine: str | None = None
    # What every planned shot starts with (the critic's retries change them per shot afterwards): the flow
    # shift of hero shots, of b-roll and establishing shots (never above MAX_FLOW_SHIFT), and the strength of
    # the character references. A plan given as a whole (--plan) keeps its own values.
    flow_shift_hero: float = DEFAULT_FLOW_SHIFT["hero"]
    flow_shift_broll: float = DEFAULT_FLOW_SHIFT["broll"]
    ref_weight: float = REF_WEIGHT

    def validate(self) -> None:
        """Raise ``ValueError`` listing every problem with the request; return None when it is valid."""
        problems = [problem for check in _REQUEST_CHECKS if (problem := check(self))]
        if problems:
            raise ValueError("; ".join(problems))

    def flow_shift_for(self, kind: str) -> float:
        """The flow shift a new shot of type ``kind`` starts with."""
        return float(self.flow_shift_hero if kind == "hero" else self.flow_shift_broll)

    def identity(self) -> dict[str, Any]:
        """The request as the inputs that key its run folder and plan: the shot defaults are left out while
        they are the defaults, so run ids and plans made before they were settings stay the same."""
        fields = dataclasses.asdict(self)
        for name in PLAN_DEFAULT_FIELDS:
            if fields[name] == _REQUEST_DEFAULTS[name]:
                del fields[name]
        return fields

    @property
    def text(self) -> str:
        """The sentence without surrounding whitespace."""
        return self.sentence.strip()

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the reel's frames."""
        return frame_size(self.aspect, self.resolution)

    @property
    def language_override(self) -> str | None:
        """The canonical override language code, or None when the place decides."""
        if self.language is None or self.language.strip().lower() in AUTO_LANGUAGE:
            return None
        return normalize_language(self.language)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_sentence(r: DirectorRequest) -> str | None:
    if not isinstance(r.sentence, str):
        return f"sentence must be text, got {type(r.sentence).__name__}"
    if not r.text:
        return "sentence is empty: describe the reel in one sentence"
    if len(r.text) > MAX_SENTENCE_CHARS:
        return (f"sentence is {len(r.text)} characters; the limit is {MAX_SENTENCE_CHARS} — "
                "shorten it or put details in the plan override")
    return None


def _check_duration(r: DirectorRequest) -> str | None:
    if not _is_number(r.duration_s) or not 0 < r.duration_s <= MAX_REEL_SECONDS:
        return (f"duration_s must be more than 0 and at most {MAX_REEL_SECONDS:g} seconds "
                f"(the allowed range is 0 < duration_s <= {MAX_REEL_SECONDS:g}), got {r.duration_s!r}")
    return None


def _check_shots(r: DirectorRequest) -> str | None:
    if not _is_int(r.shots) or not 1 <= r.shots <= MAX_SHOTS:
        return f"shots must be a whole number from 1 to {MAX_SHOTS}, got {r.shots!r}"
    return None


def _check_fps(r: DirectorRequest) -> str | None:
    if not _is_int(r.fps) or not MIN_FPS <= r.fps <= MAX_FPS:
        return f"fps must be a whole number from {MIN_FPS} to {MAX_FPS}, got {r.fps!r}"
    return None


def _check_shots_fit_duration(r: DirectorRequest) -> str | None:
    if any(check(r) for check in (_check_duration, _check_shots, _check_fps)):
        return None  # reported on their own
    if r.shots * r.fps > _whole_frames(r.duration_s, r.fps):
        return (f"too many shots for the duration: each shot must last at least {MIN_SHOT_S:g} s, so "
                f"{r.shots} shots need {r.shots * MIN_SHOT_S:g} s but duration_s is {r.duration_s:g} s "
                f"(use at most {int(r.duration_s // MIN_SHOT_S)} shots or a longer duration)")
    if r.duration_s > r.shots * MAX_SHOT_S:
        return (f"too few shots for the duration: a shot lasts at most {MAX_SHOT_S:g} s, so "
                f"{r.duration_s:g} s needs at least {math.ceil(r.duration_s / MAX_SHOT_S)} shots, got {r.shots}")
    return None


def _check_aspect(r: DirectorRequest) -> str | None:
    if not isinstance(r.aspect, str) or r.aspect not in ASPECTS:
        return f"aspect must be one of {', '.join(map(repr, ASPECTS))}, got {r.aspect!r}"
    return None


def _check_resolution(r: DirectorRequest) -> str | None:
    if not isinstance(r.resolution, str) or r.resolution not in RESOLUTIONS:
        return f"resolution must be one of {', '.join(map(repr, RESOLUTIONS))}, got {r.resolution!r}"
    return None


def _check_language(r: DirectorRequest) -> str | None:
    if r.language is not None and not isinstance(r.language, str):
        return f"language must be a language code such as 'ja' or None, got {type(r.language).__name__}"
    try:
        _ = r.language_override
    except ValueError as exc:
        return str(exc)
    return None


def _check_voice_engine(r: DirectorRequest) -> str | None:
    if r.voice_engine is None or r.voice_engine in VOICE_ENGINES:
        return None
    return f"voice_engine must be one of {', '.join(VOICE_ENGINES)} (or None when not known), got {r.voice_engine!r}"


def _check_seed(r: DirectorRequest) -> str | None:
    return None if _is_int(r.seed) else f"seed must be a whole number, got {r.seed!r}"


def _check_flow_shifts(r: DirectorRequest) -> str | None:
    bad = [f"{name} must be a number from {MIN_FLOW_SHIFT:g} to {MAX_FLOW_SHIFT:g} (the cap: higher gave plastic "
           f"skin), got {value!r}" for name in ("flow_shift_hero", "flow_shift_broll")
           if not (_is_number(value := getattr(r, name)) and MIN_FLOW_SHIFT <= value <= MAX_FLOW_SHIFT)]
    return "; ".join(bad) or None


def _check_ref_weight(r: DirectorRequest) -> str | None:
    if _is_number(r.ref_weight) and 0.0 <= r.ref_weight <= 1.0:
        return None
    return f"ref_weight must be a number from 0 to 1, got {r.ref_weight!r}"


_REQUEST_CHECKS = (_check_sentence, _check_duration, _check_shots, _check_fps, _check_shots_fit_duration,
                   _check_aspect, _check_resolution, _check_language, _check_voice_engine, _check_seed,
                   _check_flow_shifts, _check_ref_weight)
# The request fields that only set what each planned shot starts with (DirectorRequest.identity()).
PLAN_DEFAULT_FIELDS = ("flow_shift_hero", "flow_shift_broll", "ref_weight")
_REQUEST_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DirectorRequest)}


# =============================================================================
# Matching words: case-, accent- and script-aware
# =============================================================================

_UNDECOMPOSABLE = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ı": "i"})
_WORD = re.compile(r"\w+(?:['’-]\w+)*")


def fold(text: str) -> str:
    """``text`` for matching: case-folded, accents dropped from Latin letters, whitespace collapsed.

    Other scripts keep their marks (Japanese dakuten, Devanagari vowel signs).
    """
    decomposed = unicodedata.normalize("NFD", text.casefold().translate(_UNDECOMPOSABLE))
    kept: list[str] = []
    for ch in decomposed:
        if unicodedata.combining(ch) and kept and kept[-1].isascii():
            continue
        kept.append(ch)
    return " ".join(unicodedata.normalize("NFC", "".join(kept)).split())


_TOKEN = re.compile(r"\w+")


class KeywordIndex(Generic[T]):
    """Finds keywords in folded text by whole words, each keyword standing for a value.

    Latin keywords match whole words and phrases ("neon" not "neonate", "New
    York" as two words); a trailing ``*`` matches any ending of one word
    ("chas*": chase, chasing); at each position the longest keyword wins
    ("New York" before "York"). Keywords in other scripts match anywhere
    (東京 in 東京の夜), since those scripts join words or attach particles.
    """

    def __init__(self, entries: Iterable[tuple[str, T]]):
        self._phrases: dict[tuple[str, ...], T] = {}
        self._prefixes: list[tuple[str, T]] = []
        self._anywhere: list[tuple[str, T]] = []
        for keyword, value in entries:
            folded = fold(keyword)
            if not folded.isascii():
                self._anywhere.append((folded, value))
            elif folded.endswith("*"):
                self._prefixes.append((folded[:-1], value))
            else:
                self._phrases.setdefault(tuple(_TOKEN.findall(folded)), value)
        self._longest = max(map(len, self._phrases), default=1)

    def find(self, folded_text: str) -> list[tuple[int, T]]:
        """(position, value) of each keyword in ``folded_text`` (see ``fold``), in order of position."""
        words = list(_TOKEN.finditer(folded_text))
        tokens = [word.group() for word in words]
        hits: list[tuple[int, T]] = []
        i = 0
        while i < len(tokens):
            width, value = self._match_at(tokens, i)
            if width:
                hits.append((words[i].start(), value))
            i += width or 1
        for keyword, value in self._anywhere:
            hits += [(m.start(), value) for m in re.finditer(re.escape(keyword), folded_text)]
        return sorted(hits, key=lambda hit: hit[0])

    def _match_at(self, tokens: Sequence[str], i: int) -> tuple[int, Any]:
        for width in range(min(self._longest, len(tokens) - i), 0, -1):
            phrase = tuple(tokens[i:i + width])
            if phrase in self._phrases:
                return width, self._phrases[phrase]
        for stem, value in self._prefixes:
            if tokens[i].startswith(stem):
                return 1, value
        return 0, None


def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def slug(text: str) -> str:
    """A plan id (``^[a-z0-9][a-z0-9_-]{0,39}$``) from ``text``; empty when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", fold(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-_")[:40].strip("-_")


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from ``parts`` that is the same on every machine and Python run."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(_stable_int("cinereel-rules", purpose, seed))


def _rotated(items: Sequence[str], rng: random.Random) -> list[str]:
    start = rng.randrange(len(items)) if items else 0
    return [*items[start:], *items[:start]]


# =============================================================================
# Places
# =============================================================================

@dataclass(frozen=True)
class Place:
    name: str  # as the reel's locale: "Tokyo", "São Paulo"
    language: str  # canonical language code
    kind: str  # city | region | country
    local_name: str  # as the place's own language writes it: "東京"
    english: str  # as English prose writes it: "the Scottish Highlands"


# Cities say more than regions, regions more than countries, countries more than adjectives ("Japanese").
_PLACE_RANK = {"city": 0, "region": 1, "country": 2, "demonym": 3}


@functools.cache
def _gazetteer() -> KeywordIndex[tuple[Place, int]]:
    """Every name, alias and demonym of every place, standing for (place, rank)."""
    entries: list[tuple[str, tuple[Place, int]]] = []
    for entry in json.loads((DATA_DIR / "gazetteer.json").read_text(encoding="utf-8")):
        english = entry.get("english", entry["name"])
        place = Place(entry["name"], normalize_language(entry["language"]), entry["kind"],
                      entry.get("local", english), english)
        names = [entry["name"]] if entry.get("match_name", True) else []  # "Florence" is a name too
        entries += [(alias, (place, _PLACE_RANK[entry["kind"]])) for alias in [*names, *entry.get("aliases", [])]]
        entries += [(demonym, (place, _PLACE_RANK["demonym"])) for demonym in entry.get("demonyms", [])]
    return KeywordIndex(entries)


def find_place(sentence: str) -> Place | None:
    """The place the sentence is set in, or None.

    Matching ignores case and accents ("Sao Paulo" is São Paulo) and takes the
    longest name at each position ("New York" before "York"). When several
    places are named, the most specific wins (a city over a country), then the
    first mentioned.
    """
    hits = _gazetteer().find(fold(sentence))
    if not hits:
        return None
    _, (place, _) = min(hits, key=lambda hit: (hit[1][1], hit[0]))
    return place


# =============================================================================
# Mood, time of day, setting
# =============================================================================

# Moods, and how mood, weather and time of day default from each other, are data (rules_data/settings.json); the
# words of each are in each language's table (reading/<lang>.json "mood", "time", "hints"). Order breaks mood ties.
MOODS: tuple[str, ...] = tuple(settings_data()["moods"])
MOOD_BY_WEATHER: dict[str, str] = settings_data()["mood_by_weather"]
WEATHER_VOTE = 0.5
MOOD_BY_TIME: dict[str, str] = settings_data()["mood_by_time"]
TIME_BY_MOOD: dict[str, str] = settings_data()["time_by_mood"]
DEFAULT_MOOD, DEFAULT_TIME = settings_data()["default_mood"], settings_data()["default_time"]


@dataclass(frozen=True)
class Setting:
    name: str
    keywords: tuple[str, ...]
    where: str  # in a prompt, when no place is named: "on a city street"
    noun: str  # the same as a noun phrase: "a city street"
    details: tuple[str, ...]  # b-roll subjects
    built: bool  # a town ("an unnamed city") or open land ("a place with no name")
    backdrop: str = "street"  # what the storyboard draws behind the scene


# Settings are data (rules_data/settings.json, most specific first); other languages' keywords: reading/<lang>.json.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=e["name"], keywords=tuple(e["keywords"]), where=e["where"], noun=e["noun"], details=tuple(e["details"]),
            built=e["built"], backdrop=e["backdrop"])
    for e in settings_data()["settings"])
SETTING_BY_NAME = {setting.name: setting for setting in SETTINGS}
URBAN = SETTING_BY_NAME[settings_data()["urban"]]
LANDSCAPE = SETTING_BY_NAME[settings_data()["landscape"]]
WEATHER_PROMPT: dict[str, str] = settings_data()["weather"]
SEASON_PROMPT: dict[str, str] = settings_data()["season"]


def _most_voted(votes: Counter[str]) -> str | None:
    """The mood with the most votes; the first in MOODS wins a tie."""
    return max(MOODS, key=lambda mood: votes[mood]) if votes else None


def mood_and_time(sentence: str, language: str | None = None) -> tuple[str, str]:
    """The reel's mood and time of day from the words of ``sentence`` (its language's and English), each
    defaulting from the other.

    Mood words vote for a mood and the weather casts half a vote (fog: mysterious); the time of day is the first one
    named, else the first hinted at ("neon"), else the mood's, but only a mood read from mood words: the weather
    alone never sets the time (fog is not night, rain not dusk, snow not dawn).
    """
    folded, tables = fold(sentence), tables_for(language)
    words = Counter(hit.value for hit in matcher("mood", tables, fold).find(folded))
    weather = find_weather(sentence, language)
    votes = Counter(words)
    if weather in MOOD_BY_WEATHER:  # half a vote: it decides alone or between tied mood words, never against one
        votes[MOOD_BY_WEATHER[weather]] += WEATHER_VOTE
    named = find_first("time", folded, tables, fold) or find_first("hints", folded, tables, fold)
    worded = _most_voted(words)
    time_of_day = named or (TIME_BY_MOOD[worded] if worded else DEFAULT_TIME)
    return _most_voted(votes) or (MOOD_BY_TIME[named] if named else DEFAULT_MOOD), time_of_day


def find_setting(sentence: str, place: Place | None, language: str | None = None) -> Setting:
    """Where the reel happens: the first of SETTINGS whose keywords (English, or the sentence's language) it uses.

    Without any, a city (or no place at all) is a city street and a region or country open land.
    """
    name = find_setting_name(fold(sentence), tables_for(language), fold)
    if name:
        return SETTING_BY_NAME[name]
    return URBAN if place is None or place.kind == "city" else LANDSCAPE


def find_weather(sentence: str, language: str | None = None) -> str:
    """The first weather the sentence names (rain, snow, fog, storm, wind), else "clear"."""
    return find_first("weather", fold(sentence), tables_for(language), fold) or "clear"


def find_season(sentence: str, language: str | None = None) -> str:
    """The season the sentence names, else ""."""
    return find_first("season", fold(sentence), tables_for(language), fold) or ""


# =============================================================================
# Characters
# =============================================================================

@dataclass(frozen=True)
class Archetype:
    id: str
    kind: str  # person | animal | machine | creature
    name: str
    age: str
    look: str
    wardrobe: tuple[str, ...]


@dataclass(frozen=True)
class Word:
    text: str
    key: str  # folded, possessive "'s" dropped
    start: int
    end: int


@dataclass(frozen=True)
class Mention:
    """A subject of the sentence: one archetype, how many of them, and the words that name them."""

    archetype: Archetype
    noun: str  # the noun as written, singular or plural ("lovers")
    singular: str  # one of them ("lover")
    count: int
    adjectives: tuple[str, ...]  # "lone" in "a lone astronaut"
    proper_name: str | None  # "Maria" in "Maria dances..."
    end: int  # where the noun ends in the sentence


# The English reader's word lists are data (reading/en.json "grammar").
_GRAMMAR = grammar("en")
DETERMINERS = frozenset(_GRAMMAR["determiners"])
NUMBER_WORDS: dict[str, int] = _GRAMMAR["number_words"]
PHRASE_STOPS = DETERMINERS | frozenset(NUMBER_WORDS) | frozenset(_GRAMMAR["phrase_stops"])
POSSESSIVES = frozenset(_GRAMMAR["possessives"])
GROUP_NOUNS: dict[str, str] = _GRAMMAR["group_nouns"]  # a singular noun that means two characters
HUMAN_VERBS = frozenset(_GRAMMAR["human_verbs"])  # verbs that say the subject is someone: "A barista pours"
NOT_CHARACTERS = frozenset(_GRAMMAR["not_characters"])  # nouns that take a human verb: "The city sleeps"

# Words next to a person's noun that set their age ("an old fisherman"): settings.json "ages", keywords per language.
AGE_DESCRIPTIONS: dict[str, str] = settings_data()["ages"]
AGE_WORDS: dict[str, str] = {fold(word): AGE_DESCRIPTIONS[age] for word, age in english_values("ages").items()}
AGE_WORDS.update({age: description for age, description in AGE_DESCRIPTIONS.items()})

# What tells several characters of the same archetype apart: (look, wardrobe item).
DISTINGUISHERS: dict[str, tuple[tuple[str, str], ...]] = {
    "person": (("tall, angular face", "deep red scarf"),
               ("shorter, round face with freckles", "navy blue scarf"),
               ("wiry build, strong jaw", "mustard yellow scarf"),
               ("soft features, dimpled smile", "forest green scarf")),
    "other": (("darker markings", "red tag"), ("lighter markings", "blue tag"),
              ("a notched left ear", "green tag"), ("a white patch on the chest", "yellow tag")),
}
ORDINALS = ("First", "Second", "Third", "Fourth")  # one per character, up to MAX_CHARACTERS

GARMENTS = tuple(english_values("garments"))  # English garment words (reading/en.json), kept as written
_CLOTHING = re.compile(
    r"\b(?:" + "|".join(_GRAMMAR["clothing_words"]) + r")\s+(?:(?:" + "|".join(DETERMINERS) + r") )?"
    r"((?:[\w'-]+\s+){0,3}?(?:" + "|".join(sorted(map(re.escape, GARMENTS), key=len, reverse=True)) + r"))s?\b",
    re.IGNORECASE)


@functools.cache
def _archetypes() -> tuple[dict[str, tuple[Archetype, bool]], Archetype]:
    """Noun (folded) -> (archetype, is plural); and the plain person used for subjects no table knows."""
    index: dict[str, tuple[Archetype, bool]] = {}
    by_id: dict[str, Archetype] = {}
    for entry in json.loads((DATA_DIR / "characters.json").read_text(encoding="utf-8")):
        archetype = Archetype(entry["id"], entry["kind"], entry["name"], entry["age"], entry["look"],
                              tuple(entry["wardrobe"]))
        by_id[archetype.id] = archetype
        for noun in entry["nouns"]:
            index[fold(noun)] = (archetype, False)
        for noun in entry["plurals"]:
            index[fold(noun)] = (archetype, True)
    for noun, archetype_id in GROUP_NOUNS.items():
        index[noun] = (by_id[archetype_id], True)
    return index, by_id["person"]


def _words(sentence: str) -> list[Word]:
    words = []
    for m in _WORD.finditer(sentence):
        key = re.sub(r"['’]s$", "", fold(m.group()))
        words.append(Word(m.group(), key, m.start(), m.end()))
    return words


# Inflections of a verb: suffix -> endings the stem may have lost ("hurries" -> "hurry", "dancing" -> "dance").
_INFLECTIONS = tuple((suffix, tuple(endings)) for suffix, endings in _GRAMMAR["inflections"])


def _verb_form_of(key: str) -> bool:
    """Whether ``key`` is a form of a human verb: walk, walks, walked, walking, hurries, running..."""
    if key in HUMAN_VERBS:
        return True
    for suffix, endings in _INFLECTIONS:
        if not key.endswith(suffix) or len(key) <= len(suffix) + 1:
            continue
        stem = key[: -len(suffix)]
        candidates = [stem + ending for ending in endings]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            candidates.append(stem[:-1])  # running -> run
        if any(candidate in HUMAN_VERBS for candidate in candidates):
            return True
    return False


def _first_verb(words: Sequence[Word]) -> int:
    """Index of the first human verb (not right after an article); len(words) when there is none."""
    for i, word in enumerate(words[1:], start=1):
        if _verb_form_of(word.key) and words[i - 1].key not in DETERMINERS:
            return i
    return len(words)


def _adjectives_before(words: Sequence[Word], sentence: str, i: int) -> tuple[str, ...]:
    """Up to three describing words right before ``words[i]`` ("lone" in "a lone astronaut")."""
    found: list[str] = []
    j = i - 1
    while j >= 0 and len(found) < 3:
        gap = sentence[words[j].end:words[j + 1].start]
        if gap.strip() or words[j].key in PHRASE_STOPS or not words[j].text.replace("-", "").isalpha():
            break
        found.insert(0, words[j].text)
        j -= 1
    return tuple(found)


def _count_before(words: Sequence[Word], i: int, adjectives: int) -> int:
    """How many a plural noun stands for: "two lovers" 2, "a couple of cats" 2, bare plural 2."""
    before = i - adjectives - 1
    if before >= 0 and words[before].key in NUMBER_WORDS:
        return NUMBER_WORDS[words[before].key]
    if before >= 1 and words[before].key == "of" and words[before - 1].key in NUMBER_WORDS:
        return NUMBER_WORDS[words[before - 1].key]
    return 2


def _is_companion(words: Sequence[Word], i: int, adjectives: int) -> bool:
    """An animal that goes with the subject: "her dog", "with a cat"."""
    before = i - adjectives - 1
    if before < 0:
        return False
    if words[before].key in POSSESSIVES or words[before].key == "with":
        return True
    return before >= 1 and words[before].key in DETERMINERS and words[before - 1].key == "with"


def _archetype_mentions(sentence: str, words: Sequence[Word]) -> list[Mention]:
    index, _ = _archetypes()
    subject_end = _first_verb(words)
    mentions: list[Mention] = []
    for i, word in enumerate(words):
        if word.key not in index or (word.key == "couple" and i + 1 < len(words) and words[i + 1].key == "of"):
            continue
        archetype, plural = index[word.key]
        adjectives = _adjectives_before(words, sentence, i)
        in_subject = i < subject_end
        if not in_subject and not (archetype.kind == "animal" and _is_companion(words, i, len(adjectives))):
            continue
        count = _count_before(words, i, len(adjectives)) if plural else 1
        singular = archetype.name.removeprefix("The ").lower() if plural else word.key
        mentions.append(Mention(archetype, word.key, singular, count, adjectives, None, word.end))
    unique: dict[str, Mention] = {}
    for mention in mentions:
        unique.setdefault(mention.archetype.id, mention)
    return list(unique.values())


def _could_be_someone(word: Word) -> bool:
    return word.text.isalpha() and bool(slug(word.text)) and word.key not in NOT_CHARACTERS \
        and word.key not in PHRASE_STOPS and find_place(word.text) is None


def _fallback_mention(words: Sequence[Word]) -> Mention | None:
    """A subject no table knows: a name ("Maria dances") or a noun before a human verb ("A barista pours")."""
    _, person = _archetypes()
    verb = _first_verb(words)
    if verb >= len(words) or verb > 4:
        return None
    first, noun = words[0], words[verb - 1]
    if verb == 1 and first.text[:1].isupper() and _could_be_someone(first):
        return Mention(person, first.key, first.key, 1, (), first.text, first.end)
    if verb >= 2 and first.key in DETERMINERS | NUMBER_WORDS.keys() and _could_be_someone(noun):
        count = NUMBER_WORDS.get(first.key, 1) if noun.key.endswith("s") else 1
        singular = noun.key[:-1] if count > 1 else noun.key
        adjectives = tuple(w.text for w in words[1:verb - 1])
        return Mention(person, noun.key, singular, count, adjectives, None, noun.end)
    return None


def find_subjects(sentence: str) -> list[Mention]:
    """The sentence's characters in order of mention: subjects before the verb, and animals that go with them."""
    words = _words(sentence)
    mentions = _archetype_mentions(sentence, words)
    if not mentions:
        fallback = _fallback_mention(words)
        mentions = [fallback] if fallback else []
    return mentions


def _clothing(sentence: str, mentions: Sequence[Mention]) -> dict[int, list[str]]:
    """Garments the sentence puts on someone ("a woman in a red coat"), by mention index."""
    worn: dict[int, list[str]] = {}
    for match in _CLOTHING.finditer(sentence):
        owners = [k for k, mention in enumerate(mentions) if mention.end <= match.start()]
        if owners:
            worn.setdefault(owners[-1], []).append(" ".join(match.group(1).split()))
    return worn


@dataclass(frozen=True)
class Outfit:
    """What the sentence gives one subject, in English: garments worn, props carried, hair."""

    worn: tuple[str, ...] = ()  # "yellow raincoat"
    carried: tuple[str, ...] = ()  # "red kite"
    hair: tuple[str, ...] = ()  # "long hair", "black hair in a ponytail"


GARMENT_LAYERS = tuple(frozenset(layer) for layer in settings_data()["garment_layers"])
CARRYING = "with "  # a wardrobe item that starts so is carried, not worn (the storyboard draws it in a hand)
_HAIR_PARTS = ("hair", "topknot", "bald", "shaved")  # parts of a look that a stated hairstyle replaces


def outfits(sentence: str, mentions: Sequence[Mention], language: str | None) -> dict[int, Outfit]:
    """What the sentence puts on, in the hands of, or on the head of each subject, by mention index.

    Each garment, prop or hair word belongs to the last person named before it, else to the first one
    ("黄色いレインコートの少女": the raincoat is the girl's; "a woman walks her dog with a yellow bag": hers). English garments keep the sentence's own words
    ("a red wool coat"); the tables give everything else, in English.
    """
    if not mentions:
        return {}
    english = (language or "en").startswith("en")
    found: dict[int, dict[str, list[str]]] = {}
    for k, garments in (_clothing(sentence, mentions) if english else {}).items():
        found.setdefault(k, {}).setdefault("garments", []).extend(garments)
    for attribute in find_attributes(fold(sentence), tables_for(language), fold):
        if english and attribute.kind == "garments":
            continue
        found.setdefault(_owner(attribute, mentions), {}).setdefault(attribute.kind, []).append(attribute.english)
    return {k: Outfit(tuple(dict.fromkeys(kinds.get("garments", []))), tuple(dict.fromkeys(kinds.get("props", []))),
                      tuple(dict.fromkeys(kinds.get("hair", []))))
            for k, kinds in found.items()}


def _owner(attribute: Attribute, mentions: Sequence[Mention]) -> int:
    """The last person named before the attribute, else the first person (else the same among animals)."""
    people = [k for k, mention in enumerate(mentions) if mention.archetype.kind == "person"]
    candidates = people or list(range(len(mentions)))
    before = [k for k in candidates if mentions[k].end <= attribute.start]
    return before[-1] if before else candidates[0]


def hair_phrase(hair: Sequence[str]) -> str:
    """The hair words as one phrase: "long hair", "black hair", "hair in a ponytail": "long black hair in a ponytail"."""
    if not hair:
        return ""
    described, styles = [], []
    for phrase in hair:
        before, _, after = phrase.partition("hair")
        described += before.split()
        styles += [after.strip()] if after.strip() else []
    return " ".join([*dict.fromkeys(described), "hair", " and ".join(dict.fromkeys(styles))]).strip()


def _without_hair(text: str) -> list[str]:
    return [part for part in text.split(", ") if not any(word in part for word in _HAIR_PARTS)]


def _describe(mention: Mention, instance: int, hair: Sequence[str] = ()) -> str:
    archetype = mention.archetype
    ages = [AGE_WORDS[fold(word)] for word in mention.adjectives
            if fold(word) in AGE_WORDS and archetype.kind == "person"]
    named = mention.proper_name or " ".join([*mention.adjectives, mention.singular])
    age, look = ages[0] if ages else archetype.age, archetype.look
    said_hair = hair_phrase(hair)
    if said_hair:  # the sentence's hair replaces the archetype's and the age's
        age, look = ", ".join(_without_hair(age)), ", ".join([*_without_hair(look), said_hair])
    elif ages and "hair" in age:  # an old fisherman's hair is the age's silver, not the archetype's dark
        look = ", ".join(_without_hair(look))
    parts = [_capitalize(named), age, look]
    if mention.count > 1:
        parts.append(_distinguisher(archetype, instance)[0])
    return _clip(", ".join(p for p in parts if p), 600)


def _distinguisher(archetype: Archetype, instance: int) -> tuple[str, str]:
    table = DISTINGUISHERS["person" if archetype.kind == "person" else "other"]
    return table[instance % len(table)]


def _words_of(item: str) -> list[str]:
    return re.findall(r"[a-z]+", fold(item))


def _with_article(noun: str) -> str:
    """ "a red kite", "an umbrella", "flowers" """
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _wardrobe(mention: Mention, instance: int, outfit: Outfit) -> list[str]:
    """The sentence's garments first, its props ("with a red kite"), then the archetype's garments that do
    not clash with them."""
    replaced = {fold(w).split()[-1] for w in outfit.worn}
    replaced |= {word for layer in GARMENT_LAYERS if replaced & layer for word in layer}
    kept = [item for item in mention.archetype.wardrobe if not replaced & set(_words_of(item))]
    carried = [CARRYING + _with_article(prop) for prop in outfit.carried]
    extra = [_distinguisher(mention.archetype, instance)[1]] if mention.count > 1 else []
    return [_clip(item, 120) for item in [*outfit.worn, *carried, *kept, *extra][:12]]


def build_characters(sentence: str, mentions: Sequence[Mention], warnings: list[str],
                     language: str | None = None) -> list[dict[str, Any]]:
    """Plan characters for ``mentions``: one per person or animal, at most MAX_CHARACTERS, wearing and carrying
    what the sentence (written in ``language``) says."""
    said = outfits(sentence, mentions, language)
    characters: list[dict[str, Any]] = []
    wanted = sum(m.count for m in mentions)
    for k, mention in enumerate(mentions):
        base_id = slug(mention.proper_name or mention.singular) or mention.archetype.id
        several = mention.count > 1
        outfit = said.get(k, Outfit())
        for instance in range(min(mention.count, MAX_CHARACTERS - len(characters))):
            char_id = f"{base_id[:37]}-{instance + 1}" if several else base_id
            if any(c["id"] == char_id for c in characters):
                char_id = f"{char_id[:36]}-{len(characters) + 1}"
            name = (f"The {ORDINALS[instance]} {mention.singular.title()}" if several
                    else mention.proper_name or f"The {mention.singular.title()}")
            characters.append({"id": char_id, "name": _clip(name, 80),
                               "description": _describe(mention, instance, outfit.hair),
                               "wardrobe": _wardrobe(mention, instance, outfit)})
    if wanted > MAX_CHARACTERS:
        warnings.append(f"the sentence names {wanted} characters; the plan keeps the first {MAX_CHARACTERS} "
                        "so that each stays recognisable")
    if not characters:
        warnings.append("no character found in the sentence; the reel has no recurring character "
                        "(edit the plan to add one)")
    return characters


def english_subject(mentions: Sequence[Mention]) -> str:
    """How the English narration names the subjects: "the lone astronaut", "the detective and the cat"."""
    names = [mention.proper_name or "the " + " ".join([*mention.adjectives, mention.noun]).lower()
             for mention in mentions]
    if len(names) <= 1:
        return names[0] if names else ""
    return ", ".join(names[:-1]) + " and " + names[-1]


# =============================================================================
# Timing
# =============================================================================

def _whole_frames(duration_s: float, fps: int) -> int:
    return math.floor(duration_s * fps + 1e-9)


def split_durations(duration_s: float, shots: int, fps: int) -> list[float]:
    """Shot lengths in whole frames at ``fps``, a frame apart at most, whose sum is exactly ``duration_s``.

    30 s in 6 shots is 5 s each; 30 s in 7 shots is four 69-frame shots and
    three 68-frame ones. When ``duration_s`` is not a whole number of frames,
    the last shot, one of the shorter ones, carries the part-frame left over
    (so no shot passes MAX_SHOT_S when the request fits).
    """
    base, extra = divmod(_whole_frames(duration_s, fps), shots)
    durations = [(base + 1 if i < extra else base) / fps for i in range(shots)]
    durations[-1] = _exact_remainder(duration_s, durations[:-1])
    return durations


def _exact_remainder(total: float, head: Sequence[float]) -> float:
    """The last value that makes ``sum([*head, last]) == total`` in floating point."""
    partial = sum(head)
    last = total - partial
    for _ in range(16):
        summed = partial + last
        if summed == total:
            break
        last = math.nextafter(last, math.inf if summed < total else -math.inf)
    return last


def shot_seed(seed: int, index: int) -> int:
    """The render seed of shot ``index``: a stable hash of the reel seed and the index, in 0..2**63-1."""
    return _stable_int("shot", seed, index) & (2**63 - 1)


# =============================================================================
# Shots
# =============================================================================

CAMERA_BY_TYPE: dict[str, tuple[str, ...]] = {
    "establishing": ("push_in", "pan_right", "pan_left"),
    "hero": ("push_in", "static"),
    "broll": ("pan_left", "tilt_up", "pan_right", "tilt_down"),
}
CLOSING_WIDE_CAMERA = "pull_out"
CAMERA_DETAIL = {
    "static": "locked-off tripod shot, no camera movement; only the subject moves",
    "push_in": "slow, steady dolly push-in toward the subject",
    "pull_out": "slow dolly pull-out that reveals the wider scene",
    "pan_left": "smooth, slow pan from right to left",
    "pan_right": "smooth, slow pan from left to right",
    "tilt_up": "slow tilt upward, revealing what is above",
    "tilt_down": "slow tilt downward, settling on the detail",
}
FRAMING_NOTE = {
    "establishing": "wide framing, unhurried, horizon level",
    "hero": "subject framed at eye level, background softly out of focus",
    "broll": "close detail framing, shallow focus",
}
LENSES = {
    "establishing": ("24mm wide-angle lens, deep focus", "18mm ultra-wide lens, deep focus"),
    "hero": ("50mm lens at f/1.8, shallow depth of field", "85mm portrait lens at f/1.4, soft bokeh"),
    "broll": ("35mm lens, shallow depth of field", "100mm macro lens, razor-thin focus"),
}
HERO_FRAMINGS = ("Medium shot", "Medium close-up", "Close-up", "Medium wide shot")
LIGHTING = {
    "dawn": "soft pre-dawn light, pale pink and blue sky, low mist",
    "morning": "fresh morning light, long soft shadows, clear air",
    "day": "bright natural daylight, crisp contrast",
    "golden hour": "warm low golden-hour sunlight, long shadows, glowing rim light",
    "dusk": "dusk, deep blue twilight sky with a last warm glow on the horizon, first lights coming on",
    "night": "night, pools of practical light, deep shadows, glowing reflections",
}
GRADE = {
    "mysterious": "low-key lighting, drifting haze, teal and magenta accents",
    "tense": "hard contrast, tight shadows, desaturated teal grade",
    "romantic": "warm soft glow, gentle bokeh, pastel tones",
    "epic": "grand scale, dramatic sky, volumetric light",
    "melancholic": "muted palette, soft diffused light, cool tones",
    "joyful": "bright vibrant colours, airy, warm highlights",
    "energetic": "punchy saturated colours, dynamic energy, crisp detail",
    "calm": "gentle light, soft natural palette, still air",
}
STYLE = "photorealistic cinematic film still, natural film grain, high dynamic range"
NEGATIVE_BASE = ("blurry, low resolution, jpeg artifacts, watermark, text, logo, subtitles, oversaturated, cartoon, "
                 "3d render, CGI look, plastic skin, distorted face, deformed hands, extra fingers, extra limbs, "
                 "morphing, flicker")
NEGATIVE_BY_TYPE = {
    "establishing": "people in the foreground, close-up",
    "hero": "crowd, extra people, duplicate subject, walking backwards",
    "broll": "faces, people in focus",
}
ACTION_LIMIT, SCENE_LIMIT = 240, 320
LOCATION_PREPOSITIONS = tuple(_GRAMMAR["location_prepositions"])
_LOCATION = re.compile(r"\b(?:" + "|".join(LOCATION_PREPOSITIONS) + r")\s+(.+)$", re.IGNORECASE | re.DOTALL)


def shot_types(shots: int, has_characters: bool) -> list[str]:
    """Open wide, alternate hero and b-roll, close on a hero (or on a wide when there is no one to follow)."""
    last = "hero" if has_characters else "establishing"
    if shots == 1:
        return [last]
    types = ["hero" if (shots - 1 - i) % 2 == 0 else "broll" for i in range(shots)]
    types[0], types[-1] = "establishing", last
    return types


def camera_moves(types: Sequence[str], rng: random.Random) -> list[str]:
    """One move per shot, suited to its type, never the same move twice in a row."""
    offsets = {kind: rng.randrange(len(moves)) for kind, moves in CAMERA_BY_TYPE.items()}
    seen = {kind: 0 for kind in CAMERA_BY_TYPE}
    moves: list[str] = []
    for i, kind in enumerate(types):
        if kind == "establishing" and i == len(types) - 1 and i > 0:
            moves.append(CLOSING_WIDE_CAMERA)
            continue
        options = CAMERA_BY_TYPE[kind]
        choice = options[(offsets[kind] + seen[kind]) % len(options)]
        if moves and choice == moves[-1]:
            seen[kind] += 1
            choice = options[(offsets[kind] + seen[kind]) % len(options)]
        seen[kind] += 1
        moves.append(choice)
    return moves


@dataclass(frozen=True)
class Scene:
    """Everything the shots and the narration are written from."""

    sentence: str
    place: Place | None
    locale: str
    mood: str
    time_of_day: str
    setting: Setting
    mentions: tuple[Mention, ...]  # everyone with a part: "a girl", "her dog"
    subjects: tuple[Mention, ...]  # those who do what the sentence says: "a girl"
    characters: tuple[dict[str, Any], ...]
    action: str  # what the subject does, from the sentence ("walks through a neon-lit Tokyo alley at dusk")
    location: str  # where, from the sentence ("a neon-lit Tokyo alley at dusk")
    weather: str = "clear"  # clear | rain | snow | fog | storm | wind
    season: str = ""  # spring | summer | autumn | winter, or "" when not said

    @property
    def where(self) -> str:
        return f"{self.setting.where} in {self.place.english}" if self.place else self.setting.where


def _action_start(sentence: str, mentions: Sequence[Mention]) -> int:
    """Where what the subject does begins: its verb ("walks her dog..."), else the end of the last subject."""
    words = _words(sentence)
    verb = _first_verb(words)
    last_subject_end = max(m.end for m in mentions)
    if verb < len(words) and mentions[0].end <= words[verb].start < last_subject_end:
        return words[verb].start  # a companion follows the verb: "A girl walks her dog"
    return last_subject_end


def _action_and_location(sentence: str, action_start: int | None, place: Place | None,
                         setting: Setting) -> tuple[str, str]:
    """What the subject does and where, from the sentence; the whole sentence is the scene when no one is in it."""
    if action_start is None:
        return "", _clip(sentence, SCENE_LIMIT)
    after = sentence[action_start:].strip(" \t\n,;:.!?…")
    action = _clip(after, ACTION_LIMIT)
    found = _LOCATION.search(after)
    location = _clip(found.group(1).strip(" ,;:.!?…"), ACTION_LIMIT) if found else ""
    if place and fold(place.name) not in fold(location):
        location = f"{location}, {place.name}" if location else place.name
    return action, location or setting.noun


def _cast_description(characters: Sequence[dict[str, Any]]) -> str:
    """Each character's description, four garments and everything they carry."""
    def dressed(character: dict[str, Any]) -> str:
        carried = [item for item in character["wardrobe"] if item.startswith(CARRYING)]
        worn = [item for item in character["wardrobe"] if not item.startswith(CARRYING)][:4]
        return ", ".join([character["description"], *(["wearing " + ", ".join(worn)] if worn else []), *carried])
    return ". ".join(map(dressed, characters))


def _names_in_text(characters: Sequence[dict[str, Any]]) -> str:
    """ "the astronaut", "the detective and the cat", "Maria" """
    names = [f"the {c['name'][4:].lower()}" if c["name"].startswith("The ") else c["name"] for c in characters]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _prompt(kind: str, k: int, scene: Scene, in_frame: Sequence[dict[str, Any]], closing: bool) -> str:
    """The English keyframe prompt for the k-th shot of type ``kind``."""
    framing = HERO_FRAMINGS[k % len(HERO_FRAMINGS)]
    if kind == "establishing":
        subject = f"{'Final wide shot, pulling back' if closing else 'Establishing wide shot'}: {scene_description(scene)}"
    elif kind == "hero" and in_frame:
        whole_cast = len(in_frame) == len(scene.characters)
        who = _capitalize(english_subject(scene.subjects) if whole_cast else _names_in_text(in_frame))
        subject = f"{framing}: {who} {scene.action or scene.where}. {_cast_description(in_frame)}"
    elif kind == "hero":
        subject = f"{framing}, closer on the heart of the scene: {scene.location}"
    else:
        details = scene.setting.details
        subject = f"Cinematic b-roll detail shot: {details[k % len(details)]}, {scene.where}"
    lens = LENSES[kind][k % len(LENSES[kind])]
    parts = [subject, LIGHTING[scene.time_of_day], *_weather_and_season(scene), GRADE[scene.mood], lens, STYLE]
    return _clip(". ".join(_capitalize(p.rstrip(". ")) for p in parts) + ".", 2000)


def scene_description(scene: Scene) -> str:
    """The scene in a well-formed English phrase, from what was read, never a cut of the sentence:
    "a rooftop above the city in Paris, at night, in steady rain"."""
    where = f"{scene.setting.noun} in {scene.place.english}" if scene.place else scene.setting.noun
    when = TIME_PHRASE[scene.time_of_day]
    weather = {"clear": "", "rain": "in the rain", "snow": "in falling snow", "fog": "in thick fog",
               "storm": "in a storm", "wind": "in a strong wind"}[scene.weather]
    season = f"in {scene.season}" if scene.season else ""
    return ", ".join(part for part in (where, when, weather, season) if part)


TIME_PHRASE = {"dawn": "at dawn", "morning": "in the morning", "day": "in daylight", "golden hour": "at golden hour",
               "dusk": "at dusk", "night": "at night"}


def _weather_and_season(scene: Scene) -> list[str]:
    return [p for p in (WEATHER_PROMPT[scene.weather], SEASON_PROMPT[scene.season]) if p]


def _negative_prompt(kind: str, scene: Scene, in_frame: Sequence[dict[str, Any]]) -> str:
    extra = NEGATIVE_BY_TYPE[kind]
    if kind == "hero" and len(in_frame) == 1 and len(scene.characters) > 1:
        extra += ", second person"
    return f"{NEGATIVE_BASE}, {extra}"


def _in_frame(kind: str, k: int, characters: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hero shots always show the main character; every other hero shot shows the whole cast."""
    if kind != "hero" or not characters:
        return []
    return list(characters) if k % 2 == 0 else [characters[0]]


# =============================================================================
# Narration
# =============================================================================

def _template_key(language: str) -> str:
    return language.split("-")[0]


@functools.cache
def narration_languages() -> frozenset[str]:
    """Template keys that have narration templates ("en" covers en-US and en-GB, "pt" pt-BR and pt-PT)."""
    return frozenset(path.stem for path in (DATA_DIR / "narration").glob("*.json"))


@functools.cache
def _templates(key: str) -> dict[str, Any]:
    return json.loads((DATA_DIR / "narration" / f"{key}.json").read_text(encoding="utf-8"))


ARC = ("open", "meet", "journey", "turn", "close")


def _phase(index: int, count: int) -> str:
    """Where shot ``index`` of ``count`` sits in the story: open, meet, journey, turn or close."""
    if index == 0:
        return "open"
    if index == count - 1:
        return "close"
    position = index / (count - 1)
    return "meet" if position < 0.4 else "journey" if position < 0.7 else "turn"


@functools.cache
def _slot_names(template: str) -> frozenset[str]:
    return frozenset(name.lower() for _, name, _, _ in string.Formatter().parse(template) if name)


def _cast_size(mentions: Sequence[Mention]) -> str:
    total = sum(m.count for m in mentions)
    return "none" if total == 0 else "one" if total == 1 else "many"


def _narration_place(scene: Scene, key: str, templates: dict[str, Any]) -> str:
    if scene.place is None:
        return templates["nowhere"]["city" if scene.setting.built else "land"]
    if _template_key(scene.place.language) == key:
        return scene.place.local_name
    return scene.place.english if key == "en" else scene.place.name


def _slots(scene: Scene, key: str, templates: dict[str, Any]) -> dict[str, str]:
    values = {"place": _narration_place(scene, key, templates),
              "when": templates["when"][scene.time_of_day],
              "who": english_subject(scene.subjects)}
    return {**values, **{name.capitalize(): _capitalize(value) for name, value in values.items()}}


@dataclass(frozen=True)
class LinePools:
    """The templates one shot's line may use, best first, and where each sits in the spoken order."""

    lead: list[str]  # the shot's own part of the story
    mood: list[str]  # lines that carry the reel's mood
    more: list[str]  # the rest of the story, for shots long enough to tell more of it
    fillers: list[str]  # one- and two-word lines
    rank: dict[str, float]  # spoken order: story order, the mood right after the shot's own lines


def _line_pools(templates: dict[str, Any], index: int, count: int, cast: str, mood: str,
                rng: random.Random) -> LinePools:
    own = _phase(index, count)
    others = [p for p in ARC if p != own and (p != "open" or index == 0) and (p != "close" or index == count - 1)]
    lines_of = {}
    for phase in ARC:
        by_cast = templates["phases"][phase]
        lines_of[phase] = _rotated([*by_cast.get(cast, []), *by_cast.get("any", [])], rng)
    mood_lines = _rotated(templates["moods"][mood], rng)
    fillers = _rotated(templates["short"], rng)
    support_rank = ARC.index(own) + (-0.5 if own == "close" else 0.5)
    rank = {**{t: support_rank for t in [*mood_lines, *fillers]},
            **{t: float(ARC.index(phase)) for phase in ARC for t in lines_of[phase]}}
    return LinePools(lines_of[own], mood_lines, [t for p in others for t in lines_of[p]], fillers, rank)


def _fits(templates: Sequence[str], slots: dict[str, str], joiner: str, language: str) -> int | None:
    """The narration length of ``templates`` said together, or None when two of them use the same slot."""
    names = [_slot_names(t) for t in templates]
    if sum(map(len, names)) != len(frozenset().union(*names)):
        return None  # "Tokyo, at dusk. At dusk, Tokyo..."
    return narration_length(joiner.join(t.format(**slots) for t in templates), language)


def _choose(pools: LinePools, budget: int, said: dict[str, int], slots: dict[str, str], joiner: str,
            language: str) -> list[str]:
    """Templates for one shot's line, as close to ``budget`` as they come without passing it.

    The best combination of up to COMBINE_LINES templates that starts with the
    shot's part of the story, from lines not yet said when there are any
    (``said``: template -> the last shot that said it). Then, below
    NARRATION_FILL, more mood lines; below NARRATION_THIN (long shots, long
    reels), the rest of the story and the lines said longest ago; and last, a
    short filler (two when nothing else fits).
    """
    def unsaid(templates: Sequence[str]) -> list[str]:
        return [t for t in templates if t not in said]

    def longest_ago(templates: Sequence[str]) -> list[str]:
        return sorted(templates, key=lambda t: said.get(t, -1))

    lead = unsaid(pools.lead) or longest_ago(pools.lead)
    chosen = list(_best_combination(lead, [*unsaid(pools.mood), *lead], budget, slots, joiner, language))
    _extend(chosen, unsaid(pools.mood), NARRATION_FILL, budget, slots, joiner, language)
    _extend(chosen, unsaid(pools.more), NARRATION_THIN, budget, slots, joiner, language)
    _extend(chosen, longest_ago([*pools.lead, *pools.mood, *pools.more]), NARRATION_THIN, budget, slots, joiner,
            language)
    _extend(chosen, pools.fillers, NARRATION_FILL, budget, slots, joiner, language, at_most=1 if chosen else 2)
    return sorted(chosen, key=lambda template: pools.rank[template])


def _best_combination(firsts: Sequence[str], others: Sequence[str], budget: int, slots: dict[str, str],
                      joiner: str, language: str) -> tuple[str, ...]:
    """The longest fit of one of ``firsts`` followed by up to COMBINE_LINES - 1 of ``others``; earlier wins ties."""
    best: tuple[str, ...] = ()
    best_length = 0
    for first in firsts:
        rest = [t for t in others if t != first]
        for size in range(COMBINE_LINES):
            for tail in itertools.combinations(rest, size):
                length = _fits((first, *tail), slots, joiner, language)
                if length is not None and best_length < length <= budget:
                    best, best_length = (first, *tail), length
    return best


def _extend(chosen: list[str], pool: Sequence[str], below: float, budget: int, slots: dict[str, str],
            joiner: str, language: str, at_most: int | None = None) -> None:
    """Add templates from ``pool`` in order, while the line is under ``below`` of ``budget``, that fit it."""
    added = 0
    for template in pool:
        if _fits(chosen, slots, joiner, language) >= below * budget or added == at_most:
            return
        length = _fits([*chosen, template], slots, joiner, language)
        if template not in chosen and length is not None and length <= budget:
            chosen.append(template)
            added += 1


def write_narration(scene: Scene, durations: Sequence[float], language: str, seed: int,
                    voice_engine: str | None = None) -> list[str]:
    """One line per shot in ``language`` (which must have templates), each sized to its shot as
    ``voice_engine`` speaks it (``narration_budget``).

    The lines tell a small story across the reel: the place and the hour, the
    subject, the journey, a turn, and a close.
    """
    key = _template_key(language)
    templates = _templates(key)
    slots = _slots(scene, key, templates)
    cast = _cast_size(scene.subjects)
    rng = _rng(seed, "narration")
    said: dict[str, int] = {}
    lines = []
    for index, duration in enumerate(durations):
        pools = _line_pools(templates, index, len(durations), cast, scene.mood, rng)
        chosen = _choose(pools, narration_budget(duration, language, voice_engine), said, slots, templates["joiner"], language)
        said.update(dict.fromkeys(chosen, index))
        lines.append(templates["joiner"].join(template.format(**slots) for template in chosen))
    return lines


def narration_language(request: DirectorRequest, place: Place | None, warnings: list[str],
                       written_in: str | None = None) -> str:
    """The override, else the place's language, else the language the sentence is written in (``written_in``),
    else English; English with a warning when there is no template.

    When the place and the text disagree ("A fisherman at dawn in Lisbon", written in English), the place
    decides and a warning says why and how to choose the other.
    """
    language = request.language_override or (place.language if place else written_in or DEFAULT_LANGUAGE)
    if place and written_in and not request.language_override and _base(written_in) != _base(place.language):
        warnings.append(f"the sentence is written in {LANGUAGES[written_in].name} but set in {place.name}: "
                        f"the narration is in {LANGUAGES[place.language].name} (the place decides; set the "
                        f"language to {written_in} to narrate in {LANGUAGES[written_in].name})")
    if _template_key(language) in narration_languages():
        return language
    warnings.append(f"no narration template for {language} ({LANGUAGES[language].name}); narration is in English "
                    f"({DEFAULT_LANGUAGE}), and the plan's language is {DEFAULT_LANGUAGE} so that the voice "
                    "matches the words")
    return DEFAULT_LANGUAGE


def _base(language: str) -> str:
    return language.split("-")[0]


# =============================================================================
# The director
# =============================================================================

def _title(sentence: str) -> str:
    return _capitalize(_clip(sentence.rstrip(" .!?…。！？"), 80)) or "Untitled reel"


def read_scene(sentence: str, warnings: list[str], language: str | None = None) -> Scene:
    """The facts of the sentence, written in ``language`` (None: not known): place, mood, time of day, setting,
    weather, season, characters, action."""
    place = find_place(sentence)
    mood, time_of_day = mood_and_time(sentence, language)
    setting = find_setting(sentence, place, language)
    english = (language or "en").startswith("en")
    mentions = tuple(find_subjects(sentence)) if english else ()
    mentions = mentions or tuple(_lexicon_mentions(sentence, language))
    characters = tuple(build_characters(sentence, mentions, warnings, language))
    action_start = _action_start(sentence, mentions) if mentions and english else None
    subjects = tuple(m for m in mentions if action_start is None or m.end <= action_start)
    action, location = _action_and_location(sentence, action_start, place, setting) if english else ("", "")
    return Scene(sentence=sentence, place=place, locale=place.name if place else NO_PLACE, mood=mood,
                 time_of_day=time_of_day, setting=setting, mentions=mentions, subjects=subjects,
                 characters=characters, action=action, location=location or setting.noun,
                 weather=find_weather(sentence, language), season=find_season(sentence, language))


def _lexicon_mentions(sentence: str, language: str | None) -> list[Mention]:
    """Subjects from the reading tables ("dos viejos amigos", "二人の老人"), as mentions of the archetypes."""
    index, person = _archetypes()
    mentions = []
    for subject in find_lexicon_subjects(fold(sentence), tables_for(language), fold):
        archetype, _ = index.get(subject.singular, (person, False))
        mentions.append(_mention(subject, archetype))
    return mentions


def _mention(subject: Subject, archetype: Archetype) -> Mention:
    noun = subject.plural.split()[-1] if subject.count > 1 else subject.singular
    return Mention(archetype, noun, subject.singular, subject.count, subject.adjectives, None, subject.end)


def _shots(scene: Scene, request: DirectorRequest, durations: Sequence[float], narration: Sequence[str]
           ) -> list[dict[str, Any]]:
    types = shot_types(request.shots, bool(scene.characters))
    moves = camera_moves(types, _rng(request.seed, "camera"))
    counts = {kind: 0 for kind in CAMERA_BY_TYPE}
    shots = []
    for i, (kind, move) in enumerate(zip(types, moves, strict=True)):
        k = counts[kind]
        counts[kind] += 1
        in_frame = _in_frame(kind, k, scene.characters)
        shots.append({
            "id": f"shot-{i + 1:02d}",
            "type": kind,
            "duration_s": durations[i],
            "prompt": _prompt(kind, k, scene, in_frame, closing=i == len(types) - 1 and i > 0),
            "negative_prompt": _negative_prompt(kind, scene, in_frame),
            "camera": move,
            "camera_detail": f"{CAMERA_DETAIL[move]}; {FRAMING_NOTE[kind]}",
            "characters": [c["id"] for c in in_frame],
            "narration": narration[i],
            "seed": shot_seed(request.seed, i),
            "flow_shift": request.flow_shift_for(kind),
            "ref_weight": request.ref_weight,
        })
    return shots


def _part_frame_warning(request: DirectorRequest) -> str | None:
    leftover_frames = request.duration_s * request.fps - _whole_frames(request.duration_s, request.fps)
    if leftover_frames <= 1e-6:
        return None
    return (f"duration_s {request.duration_s:g} s is not a whole number of frames at {request.fps} fps; "
            f"the last shot carries the extra {leftover_frames / request.fps:.4f} s")


class RuleDirector:
    """The preview director: a plan from one sentence by rules and tables, without weights.

    ``plan(request)`` validates the request, then returns the validated plan
    and the warnings for the report. Deterministic: the same request gives the
    same plan.
    """

    engine = "rules"

    def plan(self, request: DirectorRequest) -> tuple[Plan, list[str]]:
        request.validate()
        warnings: list[str] = []
        sentence = request.text
        written_in = detect_language(sentence)
        scene = read_scene(sentence, warnings, written_in.code if written_in else None)
        language = narration_language(request, scene.place, warnings, written_in.code if written_in else None)
        durations = split_durations(request.duration_s, request.shots, request.fps)
        if part_frame := _part_frame_warning(request):
            warnings.append(part_frame)
        narration = write_narration(scene, durations, language, request.seed, request.voice_engine)
        width, height = request.frame_size
        plan = validate_plan({
            "title": _title(sentence),
            "sentence": sentence,
            "locale": scene.locale,
            "language": language,
            "mood": scene.mood,
            "time_of_day": scene.time_of_day,
            "duration_s": float(request.duration_s),
            "fps": request.fps,
            "width": width,
            "height": height,
            "characters": list(scene.characters),
            "shots": _shots(scene, request, durations, narration),
        })
        return plan, warnings
