"""Reading a sentence in any narration language with per-language tables (``rules_data/reading/<lang>.json``).

Each table says how that language names settings, times of day, weather, seasons, subjects and numbers;
``rules_data/settings.json`` lists the settings themselves. A new language or setting is a data change.
Keywords are folded like the rest of the director (case and Latin accents dropped); Latin and Devanagari
keywords match whole words (``*`` matches any ending), Chinese and Japanese ones match anywhere. At one
position the longest keyword wins ("夜明け", dawn, before "夜", night).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READING_DIR = Path(__file__).with_name("rules_data") / "reading"
SETTINGS_FILE = Path(__file__).with_name("rules_data") / "settings.json"
CATEGORIES = ("settings", "time", "weather", "season", "subjects", "numbers")
_WORDLIKE = r"[\w\u0900-\u097F]"  # a letter of a word-spaced script (Devanagari signs are not \w)
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")  # kana and Han: no spaces between words
IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "fisherman": "fishermen",
                     "person": "people", "old person": "old people"}


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
        if self.noun in IRREGULAR_PLURALS:
            return IRREGULAR_PLURALS[self.noun]
        head = self.singular
        plural = IRREGULAR_PLURALS.get(head) or (head[:-1] + "ies" if head.endswith("y") and head[-2:-1] not in "aeiou"
                                                 else head + ("es" if head.endswith(("s", "sh", "ch")) else "s"))
        return " ".join([*self.adjectives, plural])


@functools.cache
def reading_languages() -> frozenset[str]:
    return frozenset(path.stem for path in READING_DIR.glob("*.json"))


@functools.cache
def settings_data() -> dict[str, Any]:
    return json.loads(SETTINGS_FILE.read_text(encoding="utf-8"))


@functools.cache
def _table(language: str) -> dict[str, Any]:
    return json.loads((READING_DIR / f"{language}.json").read_text(encoding="utf-8"))


def _pattern(keyword: str, fold: Any) -> str:
    folded = fold(keyword)
    stem, wild = (folded[:-1], True) if folded.endswith("*") else (folded, False)
    body = r"\s+".join(map(re.escape, stem.split())) + (r"\w*" if wild else "")
    if _UNSPACED.search(stem):
        return body
    return rf"(?<!{_WORDLIKE}){body}(?!{_WORDLIKE})"


class Matcher:
    """Finds the keywords of one category in folded text: non-overlapping, longest first at each position."""

    def __init__(self, entries: list[tuple[str, Any]], fold: Any):
        ordered = sorted(entries, key=lambda entry: len(entry[0].rstrip("*")), reverse=True)
        self._each = [(re.compile(_pattern(keyword, fold)), value) for keyword, value in ordered]
        self._all = re.compile("|".join(f"(?:{p.pattern})" for p, _ in self._each)) if self._each else None

    def find(self, folded: str) -> list[Hit]:
        if self._all is None:
            return []
        hits = []
        for match in self._all.finditer(folded):
            value = next(v for p, v in self._each if p.fullmatch(match.group()))
            hits.append(Hit(match.start(), match.end(), value))
        return hits


def _entries(category: str, language: str) -> list[tuple[str, Any]]:
    table = _table(language).get(category, {})
    if category in ("subjects", "numbers"):
        return list(table.items())
    return [(keyword, name) for name, keywords in table.items() for keyword in keywords]


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
            prefix = [w for w in adjective if w in ("old", "young", "little")]
            hit = Hit(before.start, hit.end, " ".join([*prefix, head]) + ("+" if hit.value.endswith("+") else ""))
        merged.append(hit)
    return merged


def find_subjects(folded: str, languages: tuple[str, ...], fold: Any) -> list[Subject]:
    """Who the sentence is about, with how many: a number right before the noun, else two for a plural."""
    numbers = matcher("numbers", languages, fold).find(folded)
    subjects: list[Subject] = []
    for hit in _merged(matcher("subjects", languages, fold).find(folded), folded):
        noun, plural = hit.value.rstrip("+"), hit.value.endswith("+")
        count = next((n.value for n in numbers if n.end <= hit.start and _close(folded[n.end:hit.start])), None)
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
