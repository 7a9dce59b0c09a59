"""The rule-based director: one sentence in, a validated plan out, without weights."""

from __future__ import annotations

import itertools
import json
import math
import re
import string
from pathlib import Path

import pytest
from cinereel.model_loaders import rules
from cinereel.model_loaders.rules import DirectorRequest, RuleDirector
from cinereel.model_loaders.vocabulary.languages import LANGUAGES
from cinereel.model_loaders.vocabulary.plan import CAMERA_MOVES, DEFAULT_FLOW_SHIFT, SLUG_PATTERN, Plan, validate_plan
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

TOKYO = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
KANA = re.compile(r"[\u3040-\u30ff]")
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def plan_for(sentence: str = TOKYO, **kwargs) -> tuple[Plan, list[str]]:
    return RuleDirector().plan(DirectorRequest(sentence, **kwargs))


RATES = json.loads((Path(__file__).resolve().parents[1] / "model_loaders" / "rules_data" / "speaking_rates.json")
                   .read_text(encoding="utf-8"))
VOICE_ENGINES = [None, "espeak-ng", "kokoro"]


def table_rate(engine: str | None, language: str) -> float:
    """The table's rate for the engine that speaks ``language`` (Kokoro hands the languages it lacks to eSpeak NG);
    no engine: the slower one."""
    if engine is None:
        return min(table_rate(e, language) for e in ("espeak-ng", "kokoro"))
    if engine == "kokoro" and LANGUAGES[language].kokoro is None:
        engine = "espeak-ng"
    return RATES["engines"][engine]["languages"][language]["per_second"]


def units_that_fit(duration_s: float, language: str, engine: str | None = None) -> int:
    """Words (characters for ja and zh) a shot holds at the table's rate, the voice starting 0.25 s in and
    stopping 0.25 s before the cut."""
    return math.floor((duration_s - 0.5) * table_rate(engine, language) + 1e-9)


MOST_TEMPLATES_SAY = 50  # words: a 30 s shot at eSpeak NG's pace holds more than the templates tell in one line


def near_enough(said: int, fits: int) -> bool:
    """Narration fills its shot: never more than fits, and at least 60% of it (less one word for rounding) or
    what the templates can tell."""
    return min(0.6 * fits - 1, MOST_TEMPLATES_SAY) <= said <= fits


# -- the worked example ----------------------------------------------------------

def test_tokyo_sentence_gives_a_japanese_reel_at_dusk():
    plan, warnings = plan_for(TOKYO)
    assert (plan.locale, plan.language, plan.time_of_day) == ("Tokyo", "ja", "dusk")
    assert plan.mood == "mysterious"  # neon
    assert [s.duration_s for s in plan.shots] == [5.0] * 6
    assert sum(s.duration_s for s in plan.shots) == 30.0
    assert (plan.width, plan.height, plan.fps) == (1280, 720, 16)
    # written in English, set in Tokyo: the place decides, and the report says why
    assert warnings == ["the sentence is written in English (US) but set in Tokyo: the narration is in Japanese "
                        "(the place decides; set the language to en-US to narrate in English (US))"]
    for shot in plan.shots:
        assert KANA.search(shot.narration), shot.narration  # Japanese, not Chinese: kana in every line
    assert "東京" in plan.shots[0].narration  # the story opens on the place


def test_tokyo_astronaut_is_the_character_with_a_spacesuit():
    plan, _ = plan_for(TOKYO)
    assert [c.id for c in plan.characters] == ["astronaut"]
    astronaut = plan.characters[0]
    assert astronaut.name == "The Astronaut"
    assert "lone" in astronaut.description.lower()
    wardrobe = " ".join(astronaut.wardrobe).lower()
    assert "eva" in wardrobe and "visor" in wardrobe
    assert all("astronaut" in s.characters for s in plan.shots if s.type == "hero")
    assert plan.shots[0].prompt.startswith("Establishing wide shot: a narrow alley in Tokyo, at dusk.")  # read, not cut


# -- places and languages -----------------------------------------------------------

PLACES = [
    ("Tokyo", "Tokyo", "ja"), ("Kyoto", "Kyoto", "ja"), ("Osaka", "Osaka", "ja"), ("Japan", "Japan", "ja"),
    ("Paris", "Paris", "fr"), ("Lyon", "Lyon", "fr"), ("Marseille", "Marseille", "fr"), ("France", "France", "fr"),
    ("Mumbai", "Mumbai", "hi"), ("Delhi", "Delhi", "hi"), ("India", "India", "hi"),
    ("Madrid", "Madrid", "es"), ("Barcelona", "Barcelona", "es"), ("Spain", "Spain", "es"),
    ("Mexico City", "Mexico City", "es"), ("Buenos Aires", "Buenos Aires", "es"), ("Bogotá", "Bogotá", "es"),
    ("Bogota", "Bogotá", "es"),
    ("Rome", "Rome", "it"), ("Milan", "Milan", "it"), ("Venice", "Venice", "it"), ("Italy", "Italy", "it"),
    ("São Paulo", "São Paulo", "pt-BR"), ("Sao Paulo", "São Paulo", "pt-BR"), ("SAO PAULO", "São Paulo", "pt-BR"),
    ("Rio de Janeiro", "Rio de Janeiro", "pt-BR"), ("Brazil", "Brazil", "pt-BR"), ("Lisbon", "Lisbon", "pt-PT"),
    ("Beijing", "Beijing", "zh"), ("Shanghai", "Shanghai", "zh"), ("China", "China", "zh"),
    ("London", "London", "en-GB"), ("England", "England", "en-GB"), ("the UK", "UK", "en-GB"),
    ("New York", "New York", "en-US"), ("Los Angeles", "Los Angeles", "en-US"), ("Chicago", "Chicago", "en-US"),
    ("the USA", "USA", "en-US"),
    ("Berlin", "Berlin", "de"), ("Munich", "Munich", "de"), ("München", "Munich", "de"), ("Germany", "Germany", "de"),
    ("Seoul", "Seoul", "ko"), ("Busan", "Busan", "ko"), ("Korea", "Korea", "ko"),
    ("Amsterdam", "Amsterdam", "nl"), ("Stockholm", "Stockholm", "sv"), ("Istanbul", "Istanbul", "tr"),
    ("Cairo", "Cairo", "ar"), ("Moscow", "Moscow", "ru"), ("Bangkok", "Bangkok", "th"), ("Hanoi", "Hanoi", "vi"),
    ("Jakarta", "Jakarta", "id"), ("Athens", "Athens", "el"), ("Warsaw", "Warsaw", "pl"), ("Prague", "Prague", "cs"),
]


def test_gazetteer_has_at_least_forty_places():
    entries = json.loads((rules.DATA_DIR / "gazetteer.json").read_text(encoding="utf-8"))
    assert len(entries) >= 40
    assert len({e["name"] for e in entries}) == len(entries)
    assert len(PLACES) >= 40


@pytest.mark.parametrize(("written", "locale", "language"), PLACES)
def test_place_sets_locale_and_language(written, locale, language):
    sentence = f"A cyclist rides through {written} at night"
    assert rules.find_place(sentence).language == language
    plan, _ = plan_for(sentence)
    assert plan.locale == locale
    has_template = language.split("-")[0] in rules.narration_languages()
    assert plan.language == (language if has_template else "en-US")


@pytest.mark.parametrize(("sentence", "locale"), [
    ("Yellow cabs crawl through New York in the rain", "New York"),  # not York
    ("A cathedral bell rings over York", "York"),
    ("Rollerskaters glide along Venice Beach", "Venice Beach"),  # not Venice
    ("A Japanese chef opens her restaurant in Paris", "Paris"),  # a city beats a demonym
    ("Kyoto, Japan, under the first snow", "Kyoto"),  # a city beats its country
    ("A train leaves Madrid for Lisbon", "Madrid"),  # the first city named
    ("ein Mädchen läuft durch MÜNCHEN", "Munich"),  # accents and case
    ("夜の東京を歩く宇宙飛行士", "Tokyo"),  # no spaces in Japanese
])
def test_place_matching_prefers_longest_and_most_specific(sentence, locale):
    assert rules.find_place(sentence).name == locale


@pytest.mark.parametrize("sentence", ["Romeo waits by the window", "Indiana Jones runs from a boulder",
                                      "A parisienne-style cafe", "A koreography of lights"])
def test_place_names_match_whole_words_only(sentence):
    assert rules.find_place(sentence) is None


def test_mexico_city_is_spanish_with_its_local_name():
    plan, _ = plan_for("A mariachi band plays in Mexico City at night")
    assert (plan.locale, plan.language) == ("Mexico City", "es")
    assert "Ciudad de México" in plan.shots[0].narration


def test_no_place_means_an_unnamed_city_in_english():
    plan, _ = plan_for("A lone astronaut walks through a neon-lit alley at dusk")
    assert (plan.locale, plan.language) == ("an unnamed city", "en-US")


@pytest.mark.parametrize(("override", "expected"), [("fr", "fr"), ("en-gb", "en-GB"), ("pt", "pt-BR"),
                                                     ("de", "de"), ("zh", "zh")])
def test_language_override_wins_over_the_place(override, expected):
    plan, warnings = plan_for(TOKYO, language=override)
    assert plan.language == expected
    assert plan.locale == "Tokyo"
    assert warnings == []
    if expected != "zh":
        assert not CJK.search(" ".join(s.narration for s in plan.shots))


@pytest.mark.parametrize("auto", [None, "", "auto", " AUTO "])
def test_blank_or_auto_language_means_from_the_place(auto):
    assert plan_for(TOKYO, language=auto)[0].language == "ja"


@pytest.mark.parametrize(("sentence", "language", "code"), [
    (TOKYO, "nl", "nl"),
    ("A tram rattles through Amsterdam at dawn", None, "nl"),
    ("A boat drifts down the Nile past Cairo", None, "ar"),
    ("A tram crosses Istanbul at night", "tr", "tr"),
])
def test_language_without_template_narrates_in_english_with_a_warning(sentence, language, code):
    plan, warnings = plan_for(sentence, language=language)
    assert any(w.startswith(f"no narration template for {code}") and "narration is in English" in w
               for w in warnings), warnings
    assert plan.language == "en-US"  # the voice must speak the words as written
    assert all(s.narration.isascii() for s in plan.shots)


@pytest.mark.parametrize("language", ["en-US", "en-GB", "fr", "es", "ja", "de", "it", "pt-BR", "pt-PT", "hi", "zh",
                                      "ko"])
def test_every_template_language_narrates_without_warning(language):
    plan, warnings = plan_for("Two lovers dance in Seoul at golden hour", language=language)
    assert plan.language == language
    assert warnings == []
    assert all(s.narration for s in plan.shots)


SCRIPTS = {"ja": r"[\u3040-\u30ff]", "zh": r"[\u4e00-\u9fff]", "ko": r"[\uac00-\ud7af]", "hi": r"[\u0900-\u097f]"}


@pytest.mark.parametrize(("language", "script"), SCRIPTS.items())
def test_narration_is_written_in_the_languages_script(language, script):
    plan, _ = plan_for("A fisherman mends his nets at dawn", language=language)
    for shot in plan.shots:
        assert re.search(script, shot.narration), shot.narration


# -- narration size --------------------------------------------------------------------

@pytest.mark.parametrize(("duration", "shots"), [(30, 6), (30, 7), (17.5, 4), (120, 24), (6, 6), (120, 4), (30, 1),
                                                  (10, 4), (36, 24)])
@pytest.mark.parametrize("language", ["en-US", "en-GB", "fr", "es", "de", "it", "pt-BR", "hi", "ko"])
@pytest.mark.parametrize("engine", VOICE_ENGINES)
def test_narration_words_fill_the_voice_s_budget_and_always_fit(duration, shots, language, engine):
    plan, _ = plan_for(TOKYO, duration_s=duration, shots=shots, language=language, voice_engine=engine)
    for shot in plan.shots:
        fits = units_that_fit(shot.duration_s, language, engine)
        said = len(shot.narration.split())
        assert near_enough(said, fits), (shot.id, said, fits, shot.narration)


@pytest.mark.parametrize("language", ["ja", "zh"])
@pytest.mark.parametrize(("duration", "shots"), [(30, 6), (30, 7), (120, 24), (120, 4), (6, 6), (10, 4), (36, 24)])
@pytest.mark.parametrize("engine", VOICE_ENGINES)
def test_japanese_and_chinese_narration_is_sized_by_characters(language, duration, shots, engine):
    plan, _ = plan_for(TOKYO, duration_s=duration, shots=shots, language=language, voice_engine=engine)
    for shot in plan.shots:
        fits = units_that_fit(shot.duration_s, language, engine)
        said = len("".join(shot.narration.split()))
        assert near_enough(said, fits), (shot.id, said, fits, shot.narration)


LONG_SENTENCE = ("An old fisherman and his granddaughter mend torn nets on a windswept pier at dawn while gulls "
                 "circle the harbour, storm clouds gather over the grey sea and the first boats slip out past the "
                 "lighthouse toward the open water where the fish are running")


@pytest.mark.parametrize("language", ["en-US", "fr", "es", "it", "hi", "ja", "zh", "pt-BR", "de", "ko"])
@pytest.mark.parametrize("engine", VOICE_ENGINES)
def test_a_long_sentence_plans_narration_its_voice_can_speak_in_each_shot(language, engine):
    plan, _ = plan_for(LONG_SENTENCE, duration_s=12.0, shots=5, language=language, voice_engine=engine)
    for shot in plan.shots:
        said = rules.narration_length(shot.narration, language)
        assert said / table_rate(engine, language) <= shot.duration_s - 0.5, (shot.id, said, shot.narration)


@pytest.mark.parametrize("language", ["en-US", "fr", "ja", "zh", "de", "ko"])
def test_the_budget_is_the_table_s_rate_of_the_voice_that_speaks(language):
    espeak, kokoro = (rules.narration_budget(20.0, language, e) for e in ("espeak-ng", "kokoro"))
    assert espeak == units_that_fit(20.0, language, "espeak-ng")
    assert kokoro == units_that_fit(20.0, language, "kokoro")
    assert rules.narration_budget(20.0, language) == min(espeak, kokoro)  # voice not known: the slower voice
    if LANGUAGES[language].kokoro is None:  # Kokoro cannot speak it: eSpeak NG does, at its own rate
        assert kokoro == espeak
    else:
        assert (kokoro == espeak) == (table_rate("kokoro", language) == table_rate("espeak-ng", language))


def test_budgets_differ_by_voice_and_language_as_the_table_says():
    budgets = {(e, lang): rules.narration_budget(20.0, lang, e)
               for e in ("espeak-ng", "kokoro") for lang in ("en-US", "fr", "ja")}
    assert budgets[("espeak-ng", "en-US")] != budgets[("kokoro", "en-US")]
    assert budgets[("espeak-ng", "fr")] != budgets[("espeak-ng", "en-US")]
    assert budgets[("espeak-ng", "ja")] != budgets[("kokoro", "ja")]
    assert RATES["engines"]["espeak-ng"]["languages"]["fr"]["measured"] is True
    assert all(entry["measured"] is False for entry in RATES["engines"]["kokoro"]["languages"].values())


def test_an_unknown_voice_engine_is_refused():
    with pytest.raises(ValueError, match="voice_engine must be one of espeak-ng, kokoro"):
        DirectorRequest(TOKYO, voice_engine="festival").validate()


def test_narration_tells_an_arc_from_place_to_close():
    plan, _ = plan_for("A detective and a cat search a rain-soaked rooftop in London at night")
    lines = [s.narration for s in plan.shots]
    assert "London" in lines[0]
    assert "the detective and the cat" in " ".join(lines[1:3]).lower()
    assert len(set(lines)) == len(lines)  # no line said twice


def test_narration_budget_helpers_agree_with_the_rule():
    for engine in VOICE_ENGINES:
        for language in ("en-US", "ja", "zh", "fr", "de", "ko"):
            assert rules.narration_budget(5.0, language, engine) == units_that_fit(5.0, language, engine)
    assert rules.narration_budget(1.0, "fr") == 1
    assert rules.narration_length("Tokyo, at dusk.", "en-US") == 3
    assert rules.narration_length("夕暮れの 東京。", "ja") == 7


# -- timing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("duration", "shots", "fps"), [
    (30, 6, 16), (30, 7, 16), (17.5, 4, 16), (120, 24, 16), (10, 3, 24), (30, 7, 24), (45, 9, 25), (6, 6, 16),
    (29.97, 6, 30), (2.0, 1, 8),
])
def test_durations_add_up_exactly_in_whole_frames(duration, shots, fps):
    plan, _ = plan_for(TOKYO, duration_s=duration, shots=shots, fps=fps)
    durations = [s.duration_s for s in plan.shots]
    assert len(durations) == shots
    assert sum(durations) == duration  # exactly, in floating point
    assert min(durations) >= 1.0
    for d in durations[:-1]:
        assert d * fps == pytest.approx(round(d * fps), abs=1e-9)
    assert max(durations) - min(durations) < 2 / fps  # spread evenly: a frame apart, plus any part-frame


def test_thirty_seconds_in_seven_shots_mixes_68_and_69_frames():
    frames = [round(d * 16) for d in rules.split_durations(30.0, 7, 16)]
    assert sorted(set(frames)) == [68, 69] and sum(frames) == 480


def test_part_frame_duration_is_carried_by_the_last_shot_with_a_warning():
    plan, warnings = plan_for(TOKYO, duration_s=10.01, shots=3)
    assert sum(s.duration_s for s in plan.shots) == 10.01
    assert any("not a whole number of frames" in w for w in warnings)


# -- shots ---------------------------------------------------------------------------

def test_shot_order_opens_wide_alternates_and_closes_on_the_hero():
    plan, _ = plan_for(TOKYO)
    assert [s.type for s in plan.shots] == ["establishing", "hero", "broll", "hero", "broll", "hero"]
    assert [s.id for s in plan.shots] == [f"shot-{i:02d}" for i in range(1, 7)]


@pytest.mark.parametrize("shots", range(1, 25))
def test_shot_types_and_cameras_suit_each_other(shots):
    plan, _ = plan_for(TOKYO, duration_s=float(max(shots, 5)), shots=shots)
    types = [s.type for s in plan.shots]
    assert types[-1] == "hero"
    if shots > 1:
        assert types[0] == "establishing"
        assert all(a != b for a, b in itertools.pairwise(types[1:]))  # hero and b-roll alternate
    allowed = {"establishing": {"push_in", "pan_left", "pan_right", "pull_out"}, "hero": {"push_in", "static"},
               "broll": {"pan_left", "pan_right", "tilt_up", "tilt_down"}}
    for a, b in itertools.pairwise(plan.shots):
        assert a.camera != b.camera
    for shot in plan.shots:
        assert shot.camera in CAMERA_MOVES and shot.camera in allowed[shot.type]
        assert shot.camera_detail
        assert shot.flow_shift == DEFAULT_FLOW_SHIFT[shot.type]
        assert shot.ref_weight == 0.75
        assert 0 <= shot.seed <= 2**63 - 1
        assert "blurry" in shot.negative_prompt
        assert "Photorealistic" in shot.prompt


def test_hero_prompts_carry_the_subject_action_lighting_and_lens():
    plan, _ = plan_for(TOKYO)
    hero = plan.shots[1]
    assert hero.prompt.startswith(("Medium shot", "Medium close-up", "Close-up", "Medium wide shot"))
    for expected in ("The lone astronaut walks through a neon-lit Tokyo alley at dusk", "EVA", "twilight", "lens"):
        assert expected in hero.prompt
    assert "Tokyo" in plan.shots[2].prompt  # b-roll stays in the place


def test_landscape_has_no_characters_and_closes_on_a_wide():
    plan, warnings = plan_for("Mist rolls over the Scottish Highlands at dawn")
    assert plan.characters == []
    assert all(s.characters == [] for s in plan.shots)
    assert plan.shots[-1].type == "establishing" and plan.shots[-1].camera == "pull_out"
    assert (plan.locale, plan.language, plan.time_of_day) == ("Scottish Highlands", "en-GB", "dawn")
    assert any("no character" in w for w in warnings)
    assert "the scottish highlands" in plan.shots[0].narration.lower()  # English prose needs the article


@pytest.mark.parametrize(("sentence", "ids"), [
    ("Two lovers dance in Paris at golden hour", ["lover-1", "lover-2"]),
    ("A couple kisses on a bridge in Prague", ["lover-1", "lover-2"]),
    ("A detective and a cat search a rooftop in London", ["detective", "cat"]),
    ("A girl walks her dog through Central Park", ["girl", "dog"]),
    ("An old fisherman mends his nets at dawn in Lisbon", ["fisherman"]),
    ("Maria sells flowers in a Mumbai market", ["maria"]),
    ("A barista pours coffee in a tiny Seoul cafe", ["barista"]),
    ("A woman reads in a cafe full of students", ["woman"]),
])
def test_subjects_become_characters(sentence, ids):
    plan, _ = plan_for(sentence)
    assert [c.id for c in plan.characters] == ids
    assert all(re.fullmatch(SLUG_PATTERN[1:-1], c.id) for c in plan.characters)
    main = ids[0]
    assert all(main in s.characters for s in plan.shots if s.type == "hero")
    if len(ids) == 2:
        assert any(set(s.characters) == set(ids) for s in plan.shots)  # a two-shot
        assert plan.characters[0].description != plan.characters[1].description


def test_a_companion_is_in_the_cast_but_not_the_subject():
    plan, _ = plan_for("A girl walks her dog through Central Park")
    assert [c.id for c in plan.characters] == ["girl", "dog"]
    two_shot = next(s for s in plan.shots if s.characters == ["girl", "dog"])
    assert ": The girl walks her dog through Central Park." in two_shot.prompt
    assert "the dog walks" not in " ".join(s.narration for s in plan.shots).lower()


def test_two_of_a_kind_look_different():
    plan, _ = plan_for("Two lovers dance in Paris at golden hour")
    first, second = plan.characters
    assert (first.name, second.name) == ("The First Lover", "The Second Lover")
    assert first.wardrobe != second.wardrobe


def test_clothes_named_in_the_sentence_are_worn():
    plan, _ = plan_for("A woman in a red coat waits for a train in Berlin")
    wardrobe = plan.characters[0].wardrobe
    assert wardrobe[0] == "red coat"
    assert sum("coat" in item for item in wardrobe) == 1


def test_age_words_change_the_description():
    plan, _ = plan_for("An old fisherman mends his nets at dawn in Lisbon")
    assert "seventies" in plan.characters[0].description


def test_too_many_characters_are_capped_with_a_warning():
    plan, warnings = plan_for("Six dancers and a dog rehearse in Madrid")
    assert len(plan.characters) == rules.MAX_CHARACTERS
    assert any("characters" in w for w in warnings)


# -- mood and time of day --------------------------------------------------------------

@pytest.mark.parametrize(("sentence", "mood", "time_of_day"), [
    (TOKYO, "mysterious", "dusk"),
    ("A neon-lit street hums", "mysterious", "night"),
    ("Children laugh at a birthday party in the morning", "joyful", "morning"),
    ("Two lovers kiss on a bridge at sunset", "romantic", "golden hour"),
    ("A fishing boat leaves the harbour at sunrise", "calm", "dawn"),
    ("A thief flees through the streets at midnight", "tense", "night"),
    ("An army gathers below the mountain", "epic", "golden hour"),
    ("A skateboarder races down the hill in the afternoon", "energetic", "day"),
    ("An empty station in the rain, after the last goodbye", "melancholic", "dusk"),
    ("A chef cooks in Lyon", "calm", "day"),
])
def test_mood_and_time_of_day_come_from_keywords(sentence, mood, time_of_day):
    plan, _ = plan_for(sentence)
    assert (plan.mood, plan.time_of_day) == (mood, time_of_day)


# -- frame, title, determinism, speed ---------------------------------------------------

@pytest.mark.parametrize(("aspect", "resolution", "size"), [
    ("16:9", "720p", (1280, 720)), ("9:16", "720p", (720, 1280)),
    ("16:9", "480p", (832, 480)), ("9:16", "480p", (480, 832)),
])
def test_aspect_and_resolution_set_the_frame(aspect, resolution, size):
    plan, _ = plan_for(TOKYO, aspect=aspect, resolution=resolution)
    assert (plan.width, plan.height) == size


def test_title_comes_from_the_sentence():
    plan, _ = plan_for("  a lone astronaut walks through a neon-lit Tokyo alley at dusk.  ")
    assert plan.title == "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
    assert plan.sentence == "a lone astronaut walks through a neon-lit Tokyo alley at dusk."
    long_plan, _ = plan_for("word " * 300)
    assert len(long_plan.title) <= 80


def test_same_request_gives_the_same_plan():
    request = DirectorRequest(TOKYO, seed=1234)
    first, _ = RuleDirector().plan(request)
    second, _ = RuleDirector().plan(DirectorRequest(TOKYO, seed=1234))
    assert first.model_dump_json() == second.model_dump_json()


def test_seed_changes_shot_seeds_and_shot_seeds_differ():
    a, _ = plan_for(TOKYO, seed=1)
    b, _ = plan_for(TOKYO, seed=2)
    assert [s.seed for s in a.shots] != [s.seed for s in b.shots]
    assert len({s.seed for s in a.shots}) == len(a.shots)
    assert a.shots[0].seed == rules.shot_seed(1, 0)


# -- bad requests ---------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sentence": ""}, "sentence is empty"),
    ({"sentence": " \n\t "}, "sentence is empty"),
    ({"sentence": "x" * 2001},
     "sentence is 2001 characters; the limit is 2000 — shorten it or put details in the plan override"),
    ({"duration_s": 0}, "duration_s must be more than 0 and at most 120"),
    ({"duration_s": -5}, "duration_s must be more than 0 and at most 120"),
    ({"duration_s": 120.5}, "duration_s must be more than 0 and at most 120"),
    ({"duration_s": float("nan")}, "duration_s must be more than 0 and at most 120"),
    ({"shots": 0}, "shots must be a whole number from 1 to 24"),
    ({"shots": 25}, "shots must be a whole number from 1 to 24"),
    ({"shots": 2.5}, "shots must be a whole number from 1 to 24"),
    ({"duration_s": 6, "shots": 7}, "too many shots for the duration"),
    ({"duration_s": 6.9, "shots": 7}, "each shot must last at least 1 s"),
    ({"duration_s": 120, "shots": 3}, "too few shots for the duration"),
    ({"language": "xx"}, "unknown language 'xx'; use one of:"),
    ({"language": "klingon"}, "unknown language 'klingon'"),
    ({"aspect": "4:3"}, "aspect must be one of '16:9', '9:16', got '4:3'"),
    ({"aspect": ["16:9"]}, "aspect must be one of '16:9', '9:16'"),
    ({"resolution": "1080p"}, "resolution must be one of '720p', '480p', got '1080p'"),
    ({"sentence": None}, "sentence must be text"),
    ({"language": 3}, "language must be a language code"),
    ({"fps": 4}, "fps must be a whole number from 8 to 60"),
    ({"seed": "7"}, "seed must be a whole number"),
])
def test_bad_requests_are_refused_with_a_message_naming_the_problem(kwargs, message):
    request = DirectorRequest(**{"sentence": TOKYO, **kwargs})
    with pytest.raises(ValueError, match=re.escape(message)):
        request.validate()
    with pytest.raises(ValueError, match=re.escape(message)):
        RuleDirector().plan(request)


def test_every_problem_is_named_at_once():
    with pytest.raises(ValueError) as caught:
        DirectorRequest("", duration_s=0, shots=0, aspect="1:1").validate()
    for field in ("sentence", "duration_s", "shots", "aspect"):
        assert field in str(caught.value)


def test_a_sentence_of_exactly_2000_characters_is_accepted():
    plan, _ = plan_for("A quiet walk in Rome " + "a" * (2000 - 21))
    assert plan.locale == "Rome"


# -- any script ----------------------------------------------------------------------

@pytest.mark.parametrize(("sentence", "locale"), [
    ("🚀 A lone astronaut walks through Tokyo at night 🌃✨", "Tokyo"),
    ("👩‍🚀🌙", "an unnamed city"),
    ("رجل يمشي في شوارع القاهرة ليلاً", "Cairo"),
    ("אישה הולכת בירושלים בשקיעה", "Jerusalem"),
    ("مرحبا 👋 Paris", "Paris"),
    ("Ein Mann geht durch Berlin 🌧️", "Berlin"),
])
def test_emoji_and_right_to_left_sentences_plan_fine(sentence, locale):
    plan, _ = plan_for(sentence)
    assert plan.locale == locale
    assert plan.sentence == sentence
    assert plan.title
    validate_plan(plan.model_dump(mode="json"))


# -- data files ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(rules.narration_languages()))
def test_narration_templates_are_complete_and_format(key):
    data = json.loads((rules.DATA_DIR / "narration" / f"{key}.json").read_text(encoding="utf-8"))
    assert set(data["when"]) == set(rules.LIGHTING)
    assert set(data["moods"]) == set(rules.MOODS)
    assert set(data["phases"]) == set(rules.ARC)
    slots = {name: "X" for name in ("place", "Place", "when", "When", "who", "Who")}
    for phase, by_cast in data["phases"].items():
        has = {cast for cast, lines in by_cast.items() if lines}
        assert {"one", "many", "none"} <= has | ({"one", "many", "none"} if "any" in has else set()), phase
        for cast, lines in by_cast.items():
            for line in lines:
                names = {n for _, n, _, _ in string.Formatter().parse(line) if n}
                assert names <= set(slots)
                if cast in ("none", "any") or key != "en":
                    assert not names & {"who", "Who"}, line  # no one to name
                line.format(**slots)
    for line in itertools.chain(*data["moods"].values(), data["short"]):
        line.format(**slots)


def test_narration_languages_cover_kokoro_and_more():
    assert {"en", "fr", "es", "ja", "de", "it", "pt", "hi", "zh", "ko"} <= rules.narration_languages()


def test_gazetteer_languages_are_known():
    entries = json.loads((rules.DATA_DIR / "gazetteer.json").read_text(encoding="utf-8"))
    for entry in entries:
        assert entry["language"] in LANGUAGES, entry


# -- property ------------------------------------------------------------------------------

sentences = st.text(min_size=1, max_size=300).filter(lambda s: s.strip()) | st.sampled_from([
    TOKYO, "Two lovers dance in Paris at golden hour", "Mist rolls over the Scottish Highlands at dawn",
    "A detective and a cat search a rooftop", "Maria sells flowers", "🚀", "القاهرة", "東京の夜",
]).flatmap(lambda base: st.builds(lambda extra: f"{base} {extra}", st.text(max_size=40)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentence=sentences, duration=st.floats(min_value=0.01, max_value=120.0, allow_nan=False),
       shots=st.integers(1, 24), fps=st.sampled_from([8, 12, 16, 24, 25, 30, 60]),
       aspect=st.sampled_from(["16:9", "9:16"]), language=st.sampled_from([None, *LANGUAGES]),
       seed=st.integers(0, 2**64 - 1))
def test_any_valid_request_yields_a_valid_plan(sentence, duration, shots, fps, aspect, language, seed):
    request = DirectorRequest(sentence, duration_s=duration, shots=shots, aspect=aspect, language=language,
                              seed=seed, fps=fps)
    try:
        request.validate()
    except ValueError as exc:
        assert str(exc)
        assume(False)
    plan, warnings = RuleDirector().plan(request)
    again = validate_plan(plan.model_dump(mode="json"))
    assert again == plan
    assert len(plan.shots) == shots
    assert sum(s.duration_s for s in plan.shots) == duration
    assert all(s.duration_s >= 1.0 for s in plan.shots)
    assert all(isinstance(w, str) and w for w in warnings)
    for shot in plan.shots:
        said = rules.narration_length(shot.narration, plan.language)
        assert near_enough(said, rules.narration_budget(shot.duration_s, plan.language)), shot.narration
