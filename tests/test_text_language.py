"""The language of the sentence itself: read by py3langid (model in the wheel), used when no place decides."""

from __future__ import annotations

import pytest
from cinereel.model_loaders.rules import DirectorRequest, RuleDirector
from cinereel.model_loaders.textlang import detect_language
from cinereel.model_loaders.vocabulary.languages import LANGUAGES

# One short sentence per narration language (regional variants share their language's text).
WRITTEN = {
    "en-US": "A young woman waits for the last bus in the rain",
    "es": "Una niña pequeña baila con su abuelo en la plaza",
    "fr": "Une vieille dame nourrit les chats sur le quai",
    "hi": "एक छोटी लड़की बारिश में अपने कुत्ते के साथ खेलती है",
    "it": "Un vecchio pescatore ripara la sua barca sulla spiaggia",
    "ja": "少女が駅のホームで静かに本を読んでいる",
    "pt-BR": "Um menino empina uma pipa vermelha na praia",
    "zh": "一位老人在公园里慢慢地打太极拳",
    "de": "Zwei Kinder bauen am Nachmittag einen Schneemann",
    "ko": "할머니가 시장에서 따뜻한 떡을 팔고 있다",
    "nl": "Een oude man fietst langs de rivier naar huis",
    "sv": "En flicka springer barfota över den våta gräsmattan",
    "da": "En gammel mand sidder på bænken og fodrer fuglene",
    "nb": "Ei jente går alene gjennom skogen om kvelden",
    "fi": "Vanha mies kalastaa järvellä aikaisin aamulla",
    "pl": "Młoda kobieta czeka na tramwaj w deszczu",
    "cs": "Starý muž krmí holuby na náměstí",
    "el": "Ένας ψαράς επισκευάζει τα δίχτυα του στο λιμάνι",
    "tr": "Yaşlı bir adam sahilde martılara ekmek atıyor",
    "ru": "Старик кормит голубей в парке каждое утро",
    "uk": "Маленька дівчинка малює крейдою на асфальті біля будинку",
    "ar": "رجل عجوز يشرب القهوة في السوق القديم",
    "he": "ילדה קטנה רוקדת על החוף בשקיעה",
    "fa": "پیرمردی در بازار قدیمی چای می‌نوشد",
    "th": "เด็กผู้หญิงคนหนึ่งกำลังเต้นรำอยู่บนชายหาด",
    "vi": "Một ông lão đang câu cá bên bờ sông",
    "id": "Seorang nelayan tua memperbaiki jaringnya di pelabuhan",
    "ms": "Kanak-kanak bermain bola sepak di padang bersama kawan-kawan mereka",  # Malay, not Indonesian: kanak-kanak
    "sw": "Mzee mmoja anakunywa chai sokoni asubuhi",
    "hu": "Egy idős férfi galambokat etet a téren",
    "ro": "O fetiță dansează pe plajă la apus de soare",
    "bn": "একটি ছোট মেয়ে বৃষ্টিতে নাচছে",
    "ta": "ஒரு சிறுமி கடற்கரையில் நடனமாடுகிறாள்",
    "yue": "佢哋喺街市度買緊啲餸，好熱鬧㗎",
}
SHARED = {"en-GB": "en-US", "pt-PT": "pt-BR"}  # one written language, two voices


def test_every_narration_language_has_a_sentence():
    assert set(WRITTEN) | set(SHARED) == set(LANGUAGES)


@pytest.mark.parametrize(("code", "sentence"), WRITTEN.items())
def test_the_text_says_its_language(code, sentence):
    found = detect_language(sentence)
    assert found is not None and found.code == code, (sentence, found)


@pytest.mark.parametrize("text", ["", "OK", "🌙👩‍🚀", "12:30 !!"])
def test_too_little_text_says_nothing(text):
    assert detect_language(text) is None


def plan_for(sentence: str, **kwargs):
    return RuleDirector().plan(DirectorRequest(sentence=sentence, **kwargs))


@pytest.mark.parametrize(("sentence", "language"), [
    ("Ein Bäcker öffnet früh am Morgen seinen kleinen Laden", "de"),
    ("夜、小さな猫が屋根の上で月を見ている", "ja"),
    ("Una pareja de ancianos pasea por la orilla del río", "es"),
    ("एक बूढ़ा आदमी नदी के किनारे बैठा है", "hi"),
])
def test_without_a_place_the_text_decides(sentence, language):
    plan, warnings = plan_for(sentence)
    assert plan.language == language
    assert not any("written in" in w for w in warnings)


def test_when_place_and_text_disagree_the_place_decides_and_says_why():
    plan, warnings = plan_for("An old baker opens his shop in Lyon at dawn")
    assert plan.language == "fr"
    assert any(w.startswith("the sentence is written in English (US) but set in Lyon") for w in warnings), warnings


def test_the_override_wins_over_both_without_a_warning():
    plan, warnings = plan_for("Ein Bäcker öffnet seinen Laden in Lyon", language="it")
    assert plan.language == "it"
    assert not any("written in" in w for w in warnings)


# -- py3langid's model, unpacked into the cache once ------------------------------------------------------------

def test_the_unpacked_model_answers_exactly_as_py3langid_s_own_loader_and_is_unpacked_once(tmp_path, monkeypatch):
    import lzma

    from cinereel.model_loaders import textlang
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    monkeypatch.setenv("CINEREEL_CACHE_DIR", str(tmp_path))
    packed = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    unpacked = textlang._from_unpacked(LanguageIdentifier, textlang._model_path())
    assert unpacked is not None and packed is not None
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("py3langid-") and (folder / "complete").is_file()
    texts = [*WRITTEN.values(), "A lone astronaut walks through a neon-lit Tokyo alley at dusk", "OK", "🌙 ..."]
    for text in texts:  # the same label and the same probability, to the last bit
        assert unpacked.classify(text) == packed.classify(text), text
        assert unpacked.rank(text) == packed.rank(text), text

    def no_decompressing(*args, **kwargs):
        raise AssertionError("the model was decompressed again")

    monkeypatch.setattr(lzma, "open", no_decompressing)
    again = textlang._from_unpacked(LanguageIdentifier, textlang._model_path())
    assert again.classify(texts[0]) == packed.classify(texts[0])


def test_copies_of_the_same_model_share_one_folder_and_the_mtime_named_ones_go(tmp_path, monkeypatch):
    import os
    import shutil
    from array import array

    from cinereel.model_loaders import textlang

    monkeypatch.setenv("CINEREEL_CACHE_DIR", str(tmp_path / "cache"))
    legacy = tmp_path / "cache" / "py3langid-0.4.0-4586720-1796290992988712614"
    legacy.mkdir(parents=True)
    (legacy / "ptc.npy").write_bytes(b"68 MB, once")
    other_model = tmp_path / "cache" / "py3langid-0123456789abcdef0123"  # another model's: not ours to remove
    other_model.mkdir()
    copies = []
    for k in range(2):  # two installations of the same wheel: same bytes, different file times
        copy = tmp_path / f"install{k}" / "model.npz.xz"
        copy.parent.mkdir()
        shutil.copyfile(textlang._model_path(), copy)
        os.utime(copy, ns=(10**18 + k, 10**18 + k))
        copies.append(textlang._unpacked_model(copy))
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert folders == sorted([other_model.name, f"py3langid-{textlang._content_digest(textlang._model_path())}"])
    assert all(isinstance(arrays[name], array) for arrays in copies for name in textlang.STDLIB_ARRAYS)
    assert copies[0]["nextmove"] == copies[1]["nextmove"]


def test_a_damaged_cache_is_unpacked_again_and_an_unwritable_one_falls_back_to_py3langid_s_loader(
        tmp_path, monkeypatch):
    from cinereel.model_loaders import textlang
    from py3langid.langid import LanguageIdentifier

    monkeypatch.setenv("CINEREEL_CACHE_DIR", str(tmp_path / "cache"))
    first = textlang._from_unpacked(LanguageIdentifier, textlang._model_path())
    (folder,) = (tmp_path / "cache").iterdir()
    (folder / "ptc.npy").write_bytes(b"not an array")
    repaired = textlang._from_unpacked(LanguageIdentifier, textlang._model_path())
    assert repaired.classify(WRITTEN["de"]) == first.classify(WRITTEN["de"])
    assert (folder / "ptc.npy").stat().st_size > 1_000_000
    nextmove = folder / "nextmove.npy"
    whole = nextmove.stat().st_size
    nextmove.write_bytes(nextmove.read_bytes()[:-4096])  # cut short: read straight into an array, it must not pass
    assert textlang._from_unpacked(LanguageIdentifier, textlang._model_path()).classify(WRITTEN["de"]) == \
        first.classify(WRITTEN["de"])
    assert nextmove.stat().st_size == whole
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CINEREEL_CACHE_DIR", str(tmp_path / "file"))
    assert textlang._from_unpacked(LanguageIdentifier, textlang._model_path()) is None
    textlang._identifier.cache_clear()  # and the director still reads the language, from the packed model
    try:
        assert detect_language(WRITTEN["fr"]).code == "fr"
    finally:
        textlang._identifier.cache_clear()
