"""Reading a sentence in any narration language with per-language tables (``rules_data/reading/<lang>.json``).

Each table says how that language names settings, times of day, weather, seasons, moods, subjects, numbers and
ages, and what a character wears and carries (colours, garments, hair, props), always with English values, since
the prompts are English; ``rules_data/settings.json`` lists the settings and moods themselves. A new language or
setting is a data change.
Keywords are folded like the rest of the director (case and Latin accents dropped); Latin and Devanagari
keywords match whole words (``*`` matches any ending), Chinese and Japanese ones match anywhere. At one
position the longest keyword wins ("夜明け", dawn, before "夜", night).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READING_DIR = Path(__file__).with_name("rules_data") / "reading"
SETTINGS_FILE = Path(__file__).with_name("rules_data") / "settings.json"
CATEGORIES = ("settings", "time", "hints", "weather", "season", "mood", "subjects", "numbers", "ages", "colours",
              "garments", "hair", "props")
ATTRIBUTE_KINDS = ("garments", "hair", "props")  # what a character wears and carries
_WORDLIKE = r"[\w\u0900-\u097F]"  # a letter of a word-spaced script (Devanagari signs are not \w)
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")  # kana and Han: no spaces between words


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    value: Any


@dataclass(frozen=True)
class Subject:
    """Someone the sentence is about, in English: "old clockmaker", two of them."""

    noun: str  # singular English noun phrase: "old friend"
    count: int
    start: int
    end: int

    @property
    def singular(self) -> str:
        return self.noun.split()[-1]

    @property
    def adjectives(self) -> tuple[str, ...]:
        return tuple(self.noun.split()[:-1])

    @property
    def plural(self) -> str:
        irregular = grammar("en")["irregular_plurals"]
        if self.noun in irregular:
            return irregular[self.noun]
        head = self.singular
        plural = irregular.get(head) or (head[:-1] + "ies" if head.endswith("y") and head[-2:-1] not in "aeiou"
                                         else head + ("es" if head.endswith(("s", "sh", "ch")) else "s"))
        return " ".join([*self.adjectives, plural])


@dataclass(frozen=True)
class Attribute:
    """Something a character wears or carries, in English: ("garments", "yellow raincoat"), ("props", "red kite"),
    ("hair", "black hair in a ponytail")."""

    kind: str  # one of ATTRIBUTE_KINDS
    english: str
    start: int
    end: int


@functools.cache
def reading_languages() -> frozenset[str]:
    return frozenset(path.stem for path in READING_DIR.glob("*.json"))


@functools.cache
def settings_data() -> dict[str, Any]:
    return json.loads(SETTINGS_FILE.read_text(encoding="utf-8"))


@functools.cache
def _table(language: str) -> dict[str, Any]:
    return json.loads((READING_DIR / f"{language}.json").read_text(encoding="utf-8"))


def _keyword(keyword: str, fold: Any) -> tuple[str, bool]:
    """A keyword's pattern (folded; a trailing ``*`` matches any ending) and whether it matches whole words only."""
    folded = fold(keyword)
    stem, wild = (folded[:-1], True) if folded.endswith("*") else (folded, False)
    return r"\s+".join(map(re.escape, stem.split())) + (r"\w*" if wild else ""), not _UNSPACED.search(stem)


def _alternation(keywords: list[str], fold: Any) -> str:
    """One capturing group per keyword, in order. A run of whole-word keywords shares one pair of word-boundary
    assertions: ``(?<!W)(?:(a)|(b))(?!W)`` tries what ``(?<!W)(a)(?!W)|(?<!W)(b)(?!W)`` does, in the same order,
    and the assertions written out for each keyword were three quarters of the time compiling took."""
    parts = []
    for whole_words, run in itertools.groupby((_keyword(keyword, fold) for keyword in keywords), key=lambda k: k[1]):
        groups = "|".join(f"({body})" for body, _ in run)
        parts.append(f"(?<!{_WORDLIKE})(?:{groups})(?!{_WORDLIKE})" if whole_words else groups)
    return "|".join(parts)


class Matcher:
    """Finds the keywords of one category in folded text: non-overlapping, longest first at each position."""

    def __init__(self, entries: list[tuple[str, Any]], fold: Any):
        ordered = sorted(entries, key=lambda entry: len(entry[0].rstrip("*")), reverse=True)
        self._values = [value for _, value in ordered]
        # The group that matched (keywords capture nothing themselves) says which keyword did: one pattern to compile.
        self._all = re.compile(_alternation([keyword for keyword, _ in ordered], fold)) if ordered else None

    def find(self, folded: str) -> list[Hit]:
        if self._all is None:
            return []
        return [Hit(match.start(), match.end(), self._values[match.lastindex - 1])
                for match in self._all.finditer(folded)]


def _entries(category: str, language: str) -> list[tuple[str, Any]]:
    table = _table(language).get(category, {})
    if category in ("subjects", "numbers"):
        return list(table.items())
    return [(keyword, name) for name, keywords in table.items() for keyword in keywords]


def grammar(language: str = "en") -> dict[str, Any]:
    """The word lists a language's own reader uses (English: determiners, human verbs...), from its table."""
    return _table(language).get("grammar", {})


def english_values(category: str, language: str = "en") -> dict[str, str]:
    """One category of one table as keyword (folded by the caller) -> English value."""
    return dict(_entries(category, language))


@functools.cache
def matcher(category: str, languages: tuple[str, ...], fold: Any) -> Matcher:
    """One category's keywords in ``languages`` (settings.json's English ones included for "settings")."""
    entries = [entry for language in languages for entry in _entries(category, language)]
    if category == "settings":
        entries += [(k, s["name"]) for s in settings_data()["settings"] for k in s["keywords"]]
    return Matcher(entries, fold)


def tables_for(language: str | None) -> tuple[str, ...]:
    """The tables a sentence is read with: its language's and English (names like "café" cross languages)."""
    base = (language or "").split("-")[0]
    if base in reading_languages():
        return tuple(dict.fromkeys((base, "en")))
    return tuple(sorted(reading_languages()))


def find_setting_name(folded: str, languages: tuple[str, ...], fold: Any) -> str | None:
    """The first setting of settings.json (most specific first) whose keywords the text uses."""
    found = {hit.value for hit in matcher("settings", languages, fold).find(folded)}
    return next((s["name"] for s in settings_data()["settings"] if s["name"] in found), None)


def find_first(category: str, folded: str, languages: tuple[str, ...], fold: Any) -> str | None:
    """The value of the first keyword of ``category`` in the text."""
    hits = matcher(category, languages, fold).find(folded)
    return hits[0].value if hits else None


def _merged(hits: list[Hit], folded: str) -> list[Hit]:
    """Adjacent subject words are one subject: "vecchio orologiaio" is an old clockmaker, not two people."""
    merged: list[Hit] = []
    for hit in hits:
        if merged and not folded[merged[-1].end:hit.start].strip():
            before = merged.pop()
            adjective = before.value.rstrip("+").split()[:-1] or [before.value.rstrip("+")]
            head = hit.value.rstrip("+")
            prefix = [w for w in adjective if w in settings_data()["ages"]]
            hit = Hit(before.start, hit.end, " ".join([*prefix, head]) + ("+" if hit.value.endswith("+") else ""))
        merged.append(hit)
    return merged


def find_subjects(folded: str, languages: tuple[str, ...], fold: Any) -> list[Subject]:
    """Who the sentence is about, with how many (a number right before the noun, else two for a plural) and
    their age when an age word stands next to them ("una mujer joven": a young woman)."""
    numbers = matcher("numbers", languages, fold).find(folded)
    hits = _merged(matcher("subjects", languages, fold).find(folded), folded)
    ages = [age for age in matcher("ages", languages, fold).find(folded)
            if not any(age.start < hit.end and hit.start < age.end for hit in hits)]
    subjects: list[Subject] = []
    for hit in hits:
        noun, plural = hit.value.rstrip("+"), hit.value.endswith("+")
        count = next((n.value for n in numbers if n.end <= hit.start and _close(folded[n.end:hit.start])), None)
        age = _next_to(hit, ages, folded, after_first=False)
        if age and noun.split()[0] not in settings_data()["ages"]:
            noun = f"{age.value} {noun}"
        subjects.append(Subject(noun, count or (2 if plural else 1), hit.start, hit.end))
    unique: dict[str, Subject] = {}
    for subject in subjects:
        unique.setdefault(subject.noun, subject)
    return list(unique.values())


def _close(gap: str) -> bool:
    """A number counts a noun when at most one word ("dos viejos amigos") or one particle ("二人の") is between."""
    if _UNSPACED.search(gap) or (gap and not gap.strip(" の的")):
        return len(gap.strip()) <= 1
    return len(gap.split()) <= 1


def _next_to(hit: Hit, words: list[Hit], folded: str, after_first: bool) -> Hit | None:
    """The word of ``words`` right before or right after ``hit`` (``_close``), the side ``after_first`` first."""
    before = [w for w in words if w.end <= hit.start and _close(folded[w.end:hit.start])]
    after = [w for w in words if hit.end <= w.start and _close(folded[hit.end:w.start])]
    nearest_before, nearest_after = (before[-1:] or [None])[0], (after[:1] or [None])[0]
    return (nearest_after or nearest_before) if after_first else (nearest_before or nearest_after)


def colour_after(language: str) -> bool:
    """Whether the language puts a colour after its noun ("un paraguas rojo")."""
    return bool(_table(language).get("colour_after", False))


def find_attributes(folded: str, languages: tuple[str, ...], fold: Any) -> list[Attribute]:
    """Garments, hair and props the text names, in English and in order, each with the colour next to it."""
    nouns = [(kind, hit) for kind in ATTRIBUTE_KINDS for hit in matcher(kind, languages, fold).find(folded)]
    colours = [c for c in matcher("colours", languages, fold).find(folded)
               if not any(hit.start <= c.start and c.end <= hit.end for _, hit in nouns)]  # "红发": red hair
    after_first = colour_after(languages[0])
    found = []
    for kind, hit in sorted(nouns, key=lambda noun: noun[1].start):
        colour = _next_to(hit, colours, folded, after_first)
        if colour:
            colours.remove(colour)
        english = _coloured(hit.value, colour.value if colour else None)
        if english != "hair":  # hair, no colour: nothing to draw or say
            found.append(Attribute(kind, english, hit.start, hit.end))
    return found


def _coloured(english: str, colour: str | None) -> str:
    """ "red" and "kite": "red kite"; "black" and "hair in a ponytail": "black hair in a ponytail"."""
    if not colour:
        return english
    if "hair" in english.split():
        return english.replace("hair", f"{colour} hair", 1)
    return f"{colour} {english}"
