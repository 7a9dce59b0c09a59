"""How much narration a shot holds, from the speaking rate of the voice that will speak it.

The rates are data (``rules_data/speaking_rates.json``): per voice engine and
language, words a second (characters a second for scripts written without
spaces), and how each figure was obtained. eSpeak NG's are measured by
``tests/bench/speaking_rates.py``; Kokoro's cannot be measured without its
weights and say so.

Engines are named as in the narration report: ``espeak-ng`` (the preview voice,
and the fallback for languages Kokoro lacks) and ``kokoro``. ``None`` means the
voice is not known yet (a Director node with no voice connected): the budget is
then that of the slower engine, so the line fits whichever voice speaks it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .vocabulary.languages import LANGUAGES, normalize_language

RATES_FILE = Path(__file__).with_name("rules_data") / "speaking_rates.json"
ESPEAK, KOKORO = "espeak-ng", "kokoro"
ENGINES = (ESPEAK, KOKORO)
VOICE_START_S = 0.25  # the voice stage starts each line this far into its shot
VOICE_TAIL_S = 0.25  # and keeps this much quiet before the cut


@dataclass(frozen=True)
class SpeakingRate:
    """One engine's pace in one language: ``per_second`` ``unit`` ("words" or "characters") at speed 1.0."""

    engine: str
    language: str
    unit: str
    per_second: float
    measured: bool

    def describe(self) -> str:
        """For messages: "2.89 words/s, eSpeak NG en-US"."""
        engine = "eSpeak NG" if self.engine == ESPEAK else "Kokoro"
        return f"{self.per_second:g} {self.unit}/s, {engine} {self.language}"


@dataclass(frozen=True)
class Overrun:
    """A shot whose narration needs more time than its shot gives the voice."""

    shot_id: str
    length: int  # the narration's size in ``rate.unit``
    budget: int  # the most the shot holds, in the same unit
    needed_s: float  # seconds of speech at the requested speed
    window_s: float  # seconds the shot gives the voice
    rate: SpeakingRate
    speed: float = 1.0

    @property
    def over_s(self) -> float:
        return self.needed_s - self.window_s

    def describe(self) -> str:
        faster = f" spoken {self.speed:g}x faster" if self.speed != 1.0 else ""
        return (f"{self.shot_id} is {self.over_s:.1f} s over: its narration needs about {self.needed_s:.1f} s{faster} "
                f"({self.length} {self.rate.unit} at {self.rate.describe()}) but the shot gives the voice "
                f"{self.window_s:.1f} s, room for {self.budget} {self.rate.unit} at normal pace")


@functools.cache
def rate_table() -> dict[str, Any]:
    return json.loads(RATES_FILE.read_text(encoding="utf-8"))


def speaking_engine(voice_engine: str | None, language: str) -> str | None:
    """The engine that speaks ``language`` when ``voice_engine`` is chosen: Kokoro hands the languages it
    lacks to eSpeak NG (as the narration stage does); None stays None (not known yet)."""
    if voice_engine is None:
        return None
    if voice_engine not in ENGINES:
        raise ValueError(f"voice engine must be one of {', '.join(ENGINES)} (or None when not known), "
                         f"got {voice_engine!r}")
    if voice_engine == KOKORO and LANGUAGES[normalize_language(language)].kokoro is None:
        return ESPEAK
    return voice_engine


def speaking_rate(voice_engine: str | None, language: str) -> SpeakingRate:
    """The rate of the engine that speaks ``language``; for an unknown voice, the slower engine's."""
    engine = speaking_engine(voice_engine, language)
    if engine is None:
        return min((speaking_rate(e, language) for e in ENGINES), key=lambda rate: rate.per_second)
    language = normalize_language(language)
    entries = rate_table()["engines"][engine]
    entry = entries["languages"].get(language) or entries["other_languages"][unit_of(language)]
    return SpeakingRate(engine, language, entry["unit"], float(entry["per_second"]), bool(entry["measured"]))


def unit_of(language: str) -> str:
    """"characters" for languages written without spaces between words (ja, zh, yue), else "words"."""
    code = normalize_language(language)
    return "characters" if code in rate_table()["character_languages"] else "words"


def narration_length(text: str, language: str) -> int:
    """``text``'s size in its language's unit: characters without spaces, or words."""
    if unit_of(language) == "characters":
        return sum(1 for ch in text if not ch.isspace())
    return len(text.split())


def speech_window_s(duration_s: float) -> float:
    """The seconds of a shot the voice may use: it starts VOICE_START_S in and stops VOICE_TAIL_S before the cut."""
    return max(0.0, duration_s - VOICE_START_S - VOICE_TAIL_S)


def narration_budget(duration_s: float, language: str, voice_engine: str | None = None) -> int:
    """The most narration (words, or characters for ja, zh and yue) a shot of ``duration_s`` holds."""
    rate = speaking_rate(voice_engine, language)
    return math.floor(speech_window_s(duration_s) * rate.per_second + 1e-9)


def overrun(shot_id: str, duration_s: float, text: str, language: str, voice_engine: str | None,
            speed: float = 1.0) -> Overrun | None:
    """How far ``text`` runs past its shot when spoken at ``speed``; None when it fits."""
    rate = speaking_rate(voice_engine, language)
    length = narration_length(text, language)
    needed_s = length / rate.per_second / speed
    window_s = speech_window_s(duration_s)
    if length <= narration_budget(duration_s, language, voice_engine) or needed_s <= window_s:
        return None
    return Overrun(shot_id, length, narration_budget(duration_s, language, voice_engine), needed_s, window_s, rate,
                   speed)


def plan_overruns(plan: dict[str, Any], voice_engine: str | None, speed: float = 1.0) -> list[Overrun]:
    """Every shot of ``plan`` (a plan dict) whose narration does not fit at ``speed``."""
    found = (overrun(shot["id"], float(shot["duration_s"]), shot.get("narration", ""), plan["language"],
                     voice_engine, speed) for shot in plan["shots"])
    return [o for o in found if o is not None]


_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s*")
_CLAUSE_END = re.compile(r"(?<=[、，,;；:：])")


def shorten(text: str, budget: int, language: str) -> str:
    """``text`` cut to at most ``budget`` units at a boundary: whole sentences when they fit, else whole words
    (for ja, zh and yue, whole clauses); never mid-word. May be empty."""
    if narration_length(text, language) <= budget:
        return text
    kept = _longest_prefix(_SENTENCE_END.split(text.strip()), budget, language)
    if kept:
        return kept
    if unit_of(language) == "characters":
        first = _SENTENCE_END.split(text.strip())[0]
        return _longest_prefix(_CLAUSE_END.split(first), budget, language)
    return " ".join(text.split()[:budget])


def _longest_prefix(pieces: list[str], budget: int, language: str) -> str:
    joiner = "" if unit_of(language) == "characters" else " "
    kept: list[str] = []
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        if narration_length(joiner.join([*kept, piece]), language) > budget:
            break
        kept.append(piece)
    return joiner.join(kept)


def fastest_characters_per_second() -> float:
    """The most characters a second any entry of the table speaks (a bound for decoding, not a budget)."""
    entries = [e for engine in rate_table()["engines"].values()
               for group in ("languages", "other_languages") for e in engine.get(group, {}).values()]
    return max(float(e["per_second"] if e["unit"] == "characters" else e.get("characters_per_second", 0.0))
               for e in entries)
