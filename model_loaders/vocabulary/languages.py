"""Narration languages CineReel knows, and which voice engine speaks each.

The plan stores a BCP-47 style code (``ja``, ``pt-BR``, ``en-GB``). Kokoro
speaks nine of them; everything else is spoken by eSpeak NG, and the report
says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    kokoro: str | None  # Kokoro's one-letter language code, None when Kokoro cannot speak it
    espeak: str  # eSpeak NG voice name


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en-US", "English (US)", "a", "en-us"),
        Language("en-GB", "English (UK)", "b", "en-gb"),
        Language("es", "Spanish", "e", "es"),
        Language("fr", "French", "f", "fr-fr"),
        Language("hi", "Hindi", "h", "hi"),
        Language("it", "Italian", "i", "it"),
        Language("ja", "Japanese", "j", "ja"),
        Language("pt-BR", "Portuguese (Brazil)", "p", "pt-br"),
        Language("zh", "Mandarin Chinese", "z", "cmn"),
        Language("de", "German", None, "de"),
        Language("ko", "Korean", None, "ko"),
        Language("pt-PT", "Portuguese (Portugal)", None, "pt"),
        Language("nl", "Dutch", None, "nl"),
        Language("sv", "Swedish", None, "sv"),
        Language("da", "Danish", None, "da"),
        Language("nb", "Norwegian Bokmål", None, "nb"),
        Language("fi", "Finnish", None, "fi"),
        Language("pl", "Polish", None, "pl"),
        Language("cs", "Czech", None, "cs"),
        Language("el", "Greek", None, "el"),
        Language("tr", "Turkish", None, "tr"),
        Language("ru", "Russian", None, "ru"),
        Language("uk", "Ukrainian", None, "uk"),
        Language("ar", "Arabic", None, "ar"),
        Language("he", "Hebrew", None, "he"),
        Language("fa", "Persian", None, "fa"),
        Language("th", "Thai", None, "th"),
        Language("vi", "Vietnamese", None, "vi"),
        Language("id", "Indonesian", None, "id"),
        Language("ms", "Malay", None, "ms"),
        Language("sw", "Swahili", None, "sw"),
        Language("hu", "Hungarian", None, "hu"),
        Language("ro", "Romanian", None, "ro"),
        Language("bn", "Bengali", None, "bn"),
        Language("ta", "Tamil", None, "ta"),
        Language("yue", "Cantonese", None, "yue"),
    )
}

_ALIASES = {
    "en": "en-US",
    "en-us": "en-US",
    "en-gb": "en-GB",
    "pt": "pt-BR",
    "pt-br": "pt-BR",
    "pt-pt": "pt-PT",
    "zh-cn": "zh",
    "cmn": "zh",
    "no": "nb",
}


def normalize_language(code: str) -> str:
    """Return the canonical code for ``code`` or raise ``ValueError`` naming the choices."""
    raw = (code or "").strip()
    if raw in LANGUAGES:
        return raw
    lowered = raw.lower().replace("_", "-")
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    for known in LANGUAGES:
        if known.lower() == lowered:
            return known
    raise ValueError(
        f"unknown language {code!r}; use one of: {', '.join(sorted(LANGUAGES))}"
    )
