"""The rule director reads the sentence in each narration language: its language, who is in it (with counts),
the setting, the time of day, the weather, the mood, and what the characters wear and carry. The tables are
data (rules_data/reading/<lang>.json)."""

from __future__ import annotations

import json
import time

import pytest
from cinereel.model_loaders import reading, storyboard
from cinereel.model_loaders.rules import MOODS, DirectorRequest, RuleDirector, read_scene

# sentence, language, characters, setting, time of day, weather
READS = [
    # English, naming cities (the place decides the language)
    ("Two old friends share tea on a rooftop in Seoul at night", "ko", 2, "rooftop", "night", "clear"),
    ("An old clockmaker opens his workshop in Kyoto on a snowy morning", "ja", 1, "interior", "morning", "snow"),
    ("A girl in a yellow raincoat flies a red kite on the beach in Lisbon at noon", "pt-PT", 1, "beach", "day", "clear"),
    ("A tea seller waits under an umbrella at a market in Mumbai as the rain falls at dusk", "hi", 1, "market", "dusk", "rain"),
    ("A fisherman and his dog walk along the river in Paris in thick fog at dawn", "fr", 2, "river", "dawn", "fog"),
    ("Three children chase pigeons through a park in Rome in the afternoon", "it", 3, "park", "day", "clear"),
    # Spanish
    ("Dos viejos amigos juegan al ajedrez en el parque por la mañana", "es", 2, "park", "morning", "clear"),
    ("Una niña corre por la playa bajo la lluvia al atardecer", "es", 1, "beach", "golden hour", "rain"),
    ("El panadero abre su tienda antes del amanecer mientras nieva", "es", 1, "interior", "dawn", "snow"),
    ("Un gato duerme en un tejado de noche entre la niebla", "es", 1, "rooftop", "night", "fog"),
    # French
    ("Deux amis boivent un café sur un toit la nuit", "fr", 2, "rooftop", "night", "clear"),
    ("Une vieille dame vend des fleurs au marché sous la pluie ce matin", "fr", 1, "market", "morning", "rain"),
    ("Un pêcheur répare son bateau sur la plage au coucher du soleil", "fr", 1, "beach", "golden hour", "clear"),
    ("Trois enfants traversent le pont à l'aube dans le brouillard", "fr", 3, "river", "dawn", "fog"),
    # Italian
    ("Il vecchio orologiaio lavora nella sua bottega di notte", "it", 1, "interior", "night", "clear"),
    ("Due amiche passeggiano lungo il fiume al tramonto", "it", 2, "river", "golden hour", "clear"),
    ("Un bambino gioca nel parco sotto la neve la mattina", "it", 1, "park", "morning", "snow"),
    ("Un cane aspetta nel vicolo sotto la pioggia a mezzanotte", "it", 1, "alley", "night", "rain"),
    # Portuguese
    ("Dois amigos conversam no mercado ao meio-dia", "pt-BR", 2, "market", "day", "clear"),
    ("Uma menina dança na praia ao pôr do sol com muito vento", "pt-BR", 1, "beach", "golden hour", "wind"),
    ("O velho pescador espera no cais de madrugada sob a chuva", "pt-BR", 1, "harbor", "dawn", "rain"),
    ("Um gato dorme no telhado à noite enquanto cai a neve", "pt-BR", 1, "rooftop", "night", "snow"),
    # Japanese
    ("二人の老人が公園で朝に将棋をさしている", "ja", 2, "park", "morning", "clear"),
    ("少女が雨の中、屋上で夕暮れの空を見ている", "ja", 1, "rooftop", "dusk", "rain"),
    ("霧の夜明け、漁師が港で網を直している", "ja", 1, "harbor", "dawn", "fog"),
    ("雪の夜、猫が路地で静かに眠っている", "ja", 1, "alley", "night", "snow"),
    # Mandarin
    ("两个老朋友在公园里下棋，早上阳光很好", "zh", 2, "park", "morning", "clear"),
    ("一个女孩在海边的沙滩上奔跑，黄昏时下着雨", "zh", 1, "beach", "dusk", "rain"),
    ("老钟表匠在小店里工作到深夜", "zh", 1, "interior", "night", "clear"),
    ("一只猫在屋顶上看着大雪，夜晚很安静", "zh", 1, "rooftop", "night", "snow"),
    # Hindi
    ("दो दोस्त सुबह पार्क में चाय पीते हैं", "hi", 2, "park", "morning", "clear"),
    ("एक लड़की शाम को बारिश में नदी के किनारे खड़ी है", "hi", 1, "river", "dusk", "rain"),
    ("एक मछुआरा भोर में कोहरे के बीच समुद्र तट पर जाल ठीक करता है", "hi", 1, "beach", "dawn", "fog"),
    ("रात में एक बिल्ली छत पर सो रही है", "hi", 1, "rooftop", "night", "clear"),
    # English without a place (American and British English share the tables)
    ("Two sisters bake bread in a small kitchen before dawn", "en-US", 2, "interior", "dawn", "clear"),
    ("A lonely boy waits at a bus stop in the pouring rain at night", "en-US", 1, "street", "night", "rain"),
    ("An old man feeds the ducks by the river on a foggy morning", "en-US", 1, "river", "morning", "fog"),
    ("A young woman with a red scarf walks through the snowy forest at dusk", "en-US", 1, "forest", "dusk", "snow"),
    ("A surfer paddles out into the waves on a windy afternoon", "en-US", 1, "harbor", "day", "wind"),
    ("Four musicians play on a rooftop under the stars at night", "en-US", 4, "rooftop", "night", "clear"),
]


def plan_for(sentence: str):
    return RuleDirector().plan(DirectorRequest(sentence=sentence))


@pytest.mark.parametrize(("sentence", "language", "characters", "setting", "time_of_day", "weather"), READS)
def test_the_director_reads_the_sentence(sentence, language, characters, setting, time_of_day, weather):
    plan, _ = plan_for(sentence)
    scene = read_scene(sentence, [], plan.language)
    got = (plan.language, len(plan.characters), scene.setting.name, plan.time_of_day, scene.weather)
    assert got == (language, characters, setting, time_of_day, weather), sentence


def test_at_least_four_sentences_in_each_kokoro_language():
    per_language = {}
    for sentence, language, *_ in READS:
        per_language[language] = per_language.get(language, 0) + 1
    for language in ("en-US", "es", "fr", "it", "pt-BR", "ja", "zh", "hi"):
        assert per_language.get(language, 0) >= 4, language
    assert len(READS) >= 40


@pytest.mark.parametrize("sentence", [r[0] for r in READS])
def test_the_opening_prompt_describes_the_scene_in_english(sentence):
    plan, _ = plan_for(sentence)
    opening = plan.shots[0].prompt
    assert opening.startswith("Establishing wide shot: ")
    assert opening.isascii(), opening  # a description, not a piece of the sentence in its own script
    words = sentence.split()
    assert not any(" ".join(words[i:i + 4]) in opening for i in range(max(0, len(words) - 3))), opening


def test_weather_reaches_every_prompt():
    plan, _ = plan_for("A cat sleeps on a rooftop in the rain at night")
    assert all("rain" in shot.prompt for shot in plan.shots)


def test_the_director_is_fast():
    plan_for("warm up: Un chat dort sur un toit")
    start = time.perf_counter()
    for sentence, *_ in READS:
        plan_for(sentence)
    assert (time.perf_counter() - start) / len(READS) < 0.5


# sentence, language, worn and carried (in English, as the plan's wardrobe says them), hair (in the description), mood
WEARS = [
    ("Un hombre con un abrigo verde y un paraguas negro espera en la estación", "es",
     ["green coat", "with a black umbrella"], "", "melancholic"),
    ("Una mujer joven con coleta toca la guitarra en la plaza, muy feliz", "es",
     ["with a guitar"], "hair in a ponytail", "joyful"),
    ("Une vieille dame en manteau rouge promène son chien avec un sac jaune", "fr",
     ["red coat", "with a yellow bag"], "silver hair", "calm"),
    ("Un garçon aux cheveux blonds fait voler un cerf-volant bleu sur la plage, heureux", "fr",
     ["with a blue kite"], "blonde hair", "joyful"),
    ("Una ragazza con i capelli rossi e un vestito bianco legge un libro nel giardino", "it",
     ["white dress", "with a book"], "red hair", "calm"),
    ("Un vecchio pescatore con un cappello giallo porta una lanterna sul molo di notte", "it",
     ["yellow hat", "with a lantern"], "silver hair", "mysterious"),
    ("Uma menina de vestido azul e trança anda de bicicleta no parque", "pt-BR",
     ["blue dress", "with a bicycle"], "hair in a braid", "calm"),
    ("Um homem de casaco preto com uma câmera fotografa a cidade sozinho", "pt-BR",
     ["black coat", "with a camera"], "", "melancholic"),
    ("青いジャケットを着た男性がカメラを持って公園を歩いている", "ja", ["blue jacket", "with a camera"], "", "calm"),
    ("三つ編みの少女が赤い風船を持って笑っている", "ja", ["with a red balloon"], "hair in a braid", "joyful"),
    ("一个穿着绿色毛衣的男人拿着一束鲜花在河边等待", "zh", ["green sweater", "with flowers"], "", "calm"),
    ("扎着马尾辫的女孩背着书包，快乐地走在街上", "zh", ["with a bag"], "hair in a ponytail", "joyful"),
    ("लाल कोट पहने एक आदमी हाथ में किताब लिए बगीचे में बैठा है", "hi", ["red coat", "with a book"], "", "calm"),
    ("चोटी वाली एक लड़की पीली पतंग उड़ा रही है, बहुत खुश", "hi", ["with a yellow kite"], "hair in a braid", "joyful"),
    ("A young woman with a braid and a purple umbrella waits at the tram stop", "en-US",
     ["with a purple umbrella"], "hair in a braid", "melancholic"),
    ("An old man in a brown coat carries a bunch of flowers through the park", "en-US",
     ["brown coat", "with flowers"], "silver hair", "calm"),
    ("Ein alter Mann mit einem roten Schal und einer Kamera sitzt still im Park", "de",
     ["red scarf", "with a camera"], "silver hair", "calm"),
]


@pytest.mark.parametrize(("sentence", "language", "wardrobe", "hair", "mood"), WEARS)
def test_wardrobe_props_hair_and_mood_are_read_in_every_language(sentence, language, wardrobe, hair, mood):
    plan, _ = plan_for(sentence)
    character = plan.characters[0]
    assert (plan.language, plan.mood) == (language, mood), sentence
    assert character.wardrobe[:len(wardrobe)] == wardrobe, character.wardrobe  # the sentence's own, first
    assert hair in character.description and character.description.count("hair") <= 1 + ("hair" in hair)
    hero = next(shot for shot in plan.shots if shot.type == "hero" and character.id in shot.characters)
    assert all(item in hero.prompt for item in wardrobe), hero.prompt  # in English, in the keyframe prompt
    assert hero.prompt.isascii()


def test_what_the_sentence_names_replaces_the_archetypes_own():
    plan, _ = plan_for("Una niña con un impermeable verde y el pelo corto camina por la calle")
    girl = plan.characters[0]
    assert girl.wardrobe[0] == "green raincoat"
    assert not any("raincoat" in item for item in girl.wardrobe[1:])  # not also the archetype's yellow one
    assert "short hair" in girl.description and "ponytail" not in girl.description


def test_a_companion_animal_does_not_take_the_persons_things():
    plan, _ = plan_for("Un anciano pasea a su perro con una maleta roja por el puente")
    man, dog = plan.characters
    assert "with a red suitcase" in man.wardrobe and not any(item.startswith("with ") for item in dog.wardrobe)


@pytest.mark.parametrize(("sentence", "weather", "mood"), [
    ("A man walks through the fog", "fog", "mysterious"),
    ("Mist hangs over a quiet, peaceful harbour", "fog", "calm"),  # mood words decide the hour: calm, dawn
    ("Una mujer pasea bajo la lluvia", "rain", "melancholic"),
    ("Dans le brouillard, un chat attend", "fog", "mysterious"),
    ("雪の中を犬が歩いている", "snow", "calm"),
    ("Nella nebbia un ragazzo aspetta il tram", "fog", "mysterious"),
    ("A fishing boat heads out into a storm", "storm", "tense"),
    ("Uma menina caminha na chuva com o cachorro", "rain", "melancholic"),
    ("Una niña corre por la playa bajo la lluvia", "rain", "energetic"),  # a mood word outweighs the weather
])
def test_weather_alone_does_not_set_the_time_of_day(sentence, weather, mood):
    plan, _ = plan_for(sentence)
    scene = read_scene(sentence, [], plan.language)
    expected_time = "dawn" if "quiet" in sentence else "day"  # fog is not night, rain not dusk, snow not dawn
    assert (scene.weather, plan.mood, plan.time_of_day) == (weather, mood, expected_time), sentence


def test_every_table_speaks_the_shared_vocabulary():
    """A new language is a table: its values are the English words the prompts, the moods and the storyboard use."""
    ages, moods = set(reading.settings_data()["ages"]), set(MOODS)
    for language in sorted(reading.reading_languages()):
        table = json.loads((reading.READING_DIR / f"{language}.json").read_text(encoding="utf-8"))
        assert set(reading.CATEGORIES) <= set(table), language
        assert set(table["mood"]) <= moods, language
        assert set(table["ages"]) <= ages, language
        assert set(table["colours"]) <= set(storyboard.COLOUR_WORDS), language  # the storyboard can paint them
        assert set(table["props"]) <= set(storyboard.PROP_PAINTERS), language  # and draw them
        assert all("hair" in value.split() for value in table["hair"]), language  # colourable: "red hair"
        assert set(table["time"]) | set(table["hints"]) <= set(reading.settings_data()["mood_by_time"]), language


@pytest.mark.parametrize(("text", "language", "found"), [
    ("Una niña de pelo negro con un paraguas amarillo", "es", [("hair", "black hair"), ("props", "yellow umbrella")]),
    ("Un homme aux cheveux gris porte un sac noir et une veste bleue", "fr",
     [("hair", "grey hair"), ("props", "black bag"), ("garments", "blue jacket")]),
    ("赤い髪の少年が白い凧を持っている", "ja", [("hair", "red hair"), ("props", "white kite")]),
    ("穿着黄色雨衣的女孩拿着红色的风筝", "zh", [("garments", "yellow raincoat"), ("props", "red kite")]),
    ("काले बाल और हरी साड़ी वाली औरत", "hi", [("hair", "black hair"), ("garments", "green sari")]),
    ("Uma menina de cabelo ruivo com uma bolsa verde", "pt", [("hair", "red hair"), ("props", "green bag")]),
    ("A boy with a blue kite and a red balloon", "en", [("props", "blue kite"), ("props", "red balloon")]),
])
def test_a_colour_goes_with_the_word_it_stands_next_to(text, language, found):
    from cinereel.model_loaders.rules import fold

    attributes = reading.find_attributes(fold(text), reading.tables_for(language), fold)
    assert [(a.kind, a.english) for a in attributes] == found


def _hits(entries, text):
    from cinereel.model_loaders.rules import fold

    folded = fold(text)
    return [(folded[h.start:h.end], h.value) for h in reading.Matcher(entries, fold).find(folded)]


def test_a_keyword_matches_whole_words_and_a_star_any_ending():
    entries = [("rain", "rain"), ("storm*", "storm"), ("fog bank", "fog")]
    assert _hits(entries, "brain rainy rain") == [("rain", "rain")]
    assert _hits(entries, "stormy storms, storm") == [("stormy", "storm"), ("storms", "storm"), ("storm", "storm")]
    assert _hits(entries, "a fog  bank; fog banks") == [("fog bank", "fog")]


def test_the_longest_keyword_wins_at_a_position_across_scripts():
    # Longest first, whatever the script: the unspaced "neonサイン" (7) before the whole-word "neon*" (4), which
    # would match the same characters (\w takes kana); "夜明け" before "夜", found inside unspaced text.
    entries = [("neon*", "spaced"), ("neonサイン", "unspaced"), ("夜", "night"), ("夜明け", "dawn"), ("neonsign", "sign")]
    assert _hits(entries, "neonサイン neonlights 夜明けの夜") == [
        ("neonサイン", "unspaced"), ("neonlights", "spaced"), ("夜明け", "dawn"), ("夜", "night")]
    assert _hits(entries, "neonsign neonsigns") == [("neonsign", "sign"), ("neonsigns", "spaced")]


def test_a_keyword_its_boundary_rejects_gives_way_to_the_next_one():
    # "nightfall" is tried first but "nightfalls" goes on: "night*" matches it, and names its own value.
    entries = [("nightfall", "dusk"), ("night*", "night")]
    assert _hits(entries, "nightfall, nightfalls") == [("nightfall", "dusk"), ("nightfalls", "night")]
