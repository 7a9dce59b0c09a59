"""Measure eSpeak NG's speaking rate per language and write it into ``model_loaders/rules_data/speaking_rates.json``.

    .venv/bin/python tests/bench/speaking_rates.py          # rewrite the eSpeak NG part of the table
    .venv/bin/python tests/bench/speaking_rates.py --check  # print the measurement, write nothing

Every narration template of ``model_loaders/rules_data/narration/<key>.json`` is filled (the place and the
hour in that language, the subject as the rule director names it), the templates are joined three at a
time with the language's joiner (as the rule director joins a line), and each such line is spoken by the
pack's own eSpeak NG backend at speed 1.0. The rate is the words (characters without spaces for ja and zh)
of all lines over their seconds of sound. eSpeak NG output is deterministic, so the figures are reproducible
for one eSpeak NG build. The Kokoro part of the table is left as it is (it cannot be measured without weights).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
NARRATION_DIR = PACK_ROOT / "model_loaders" / "rules_data" / "narration"
TABLE = PACK_ROOT / "model_loaders" / "rules_data" / "speaking_rates.json"
TEMPLATES_PER_LINE = 3  # the rule director's COMBINE_LINES
SUBJECT = "the lone astronaut"


def import_pack() -> None:
    spec = importlib.util.spec_from_file_location("cinereel", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cinereel"] = module
    spec.loader.exec_module(module)


def template_key(language: str) -> str:
    return language.split("-")[0]


def measured_languages() -> list[str]:
    """Every CineReel language whose narration templates exist (en covers en-US and en-GB, pt pt-BR and pt-PT)."""
    from cinereel.model_loaders.vocabulary.languages import LANGUAGES

    keys = {path.stem for path in NARRATION_DIR.glob("*.json")}
    return [code for code in LANGUAGES if template_key(code) in keys]


def filled_lines(language: str) -> list[str]:
    """The language's templates with their slots filled, joined TEMPLATES_PER_LINE at a time."""
    data = json.loads((NARRATION_DIR / f"{template_key(language)}.json").read_text(encoding="utf-8"))
    templates = [t for phase in data["phases"].values() for pool in phase.values() for t in pool]
    templates += [t for pool in data["moods"].values() for t in pool] + data["short"]
    hours = list(data["when"].values())
    filled = []
    for i, template in enumerate(templates):
        slots = {"place": data["nowhere"]["city"], "when": hours[i % len(hours)], "who": SUBJECT}
        slots |= {name.capitalize(): value[:1].upper() + value[1:] for name, value in slots.items()}
        filled.append(template.format(**slots))
    return [data["joiner"].join(filled[i:i + TEMPLATES_PER_LINE]) for i in range(0, len(filled), TEMPLATES_PER_LINE)]


def measure(language: str) -> dict:
    from cinereel.model_loaders.espeak import EspeakVoice
    from cinereel.model_loaders.speaking_rates import narration_length, unit_of

    voice = EspeakVoice()
    units = seconds = characters = 0.0
    rates = []
    for line in filled_lines(language):
        audio, sample_rate = voice.synthesize(line, language, 1.0)
        length, spoken_s = narration_length(line, language), len(audio) / sample_rate
        units, seconds = units + length, seconds + spoken_s
        characters += sum(1 for ch in line if not ch.isspace())
        rates.append(length / spoken_s)
    return {"unit": unit_of(language), "per_second": round(units / seconds, 2), "measured": True,
            "lines": len(rates), "slowest_line": round(min(rates), 2), "fastest_line": round(max(rates), 2),
            "characters_per_second": round(characters / seconds, 1)}


def espeak_part(languages: dict[str, dict]) -> dict:
    words = {code: e for code, e in languages.items() if e["unit"] == "words"}
    chars = {code: e for code, e in languages.items() if e["unit"] == "characters"}
    slowest_words = min(words, key=lambda code: words[code]["per_second"])
    slowest_chars = min(chars, key=lambda code: chars[code]["per_second"])
    version = importlib.metadata.version("espeakng-loader")
    return {
        "method": "measured with tests/bench/speaking_rates.py: every narration template of "
                  "model_loaders/rules_data/narration/, filled and joined three to a line as the rule director "
                  "joins them, spoken by this pack's eSpeak NG backend at speed 1.0; per_second is all the "
                  "lines' words (characters without spaces for ja and zh) over their seconds of sound, "
                  "leading and trailing silence excluded",
        "engine_build": f"libespeak-ng from the espeakng-loader {version} wheel",
        "languages": languages,
        "other_languages": {
            "words": {"unit": "words", "per_second": words[slowest_words]["per_second"], "measured": False,
                      "source": f"not measured (no narration templates): the slowest measured language's "
                                f"rate ({slowest_words}), so that a line fits rather than overruns"},
            "characters": {"unit": "characters", "per_second": chars[slowest_chars]["per_second"],
                           "measured": False,
                           "source": f"not measured (no narration templates): the slowest measured language's "
                                     f"rate ({slowest_chars}), so that a line fits rather than overruns"},
        },
    }


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="print the measurement, write nothing")
    options = args.parse_args()
    import_pack()
    languages = {}
    for language in measured_languages():
        languages[language] = measure(language)
        entry = languages[language]
        print(f"{language:<6} {entry['per_second']:5.2f} {entry['unit']}/s  (lines {entry['slowest_line']:.2f} to "
              f"{entry['fastest_line']:.2f}; {entry['characters_per_second']:.1f} characters/s)")
    if options.check:
        return
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    table["engines"]["espeak-ng"] = espeak_part(languages)
    TABLE.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {TABLE.relative_to(PACK_ROOT)}")


if __name__ == "__main__":
    main()
