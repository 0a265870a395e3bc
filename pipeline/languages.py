"""Qwen3-ASR's languages: the model's names, ISO codes, and mapping between them.

Manifests say "en", "en-US", "zh-HK", "English", "english" or "auto"; the model wants "English"
in a forced prompt and answers "English". One table and one rule (:func:`language_name`), used by
the engine adapters (prompts, parsing), the aligner (units) and scoring (grouping rows by language).
"""

from __future__ import annotations

# The model's language names (the forced-language suffix must use exactly these).
LANGUAGE_NAMES: tuple[str, ...] = (
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese",
    "Indonesian", "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish",
    "Hindi", "Malay", "Dutch", "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino",
    "Persian", "Greek", "Hungarian", "Macedonian", "Romanian",
)  # fmt: skip

# Every code that names a model language: ISO 639-1 first (the key reports group by), then
# ISO 639-2/T, 639-2/B and 639-3 (macrolanguage and its main individual language).
_CODES_BY_NAME: dict[str, tuple[str, ...]] = {
    "Chinese": ("zh", "zho", "chi", "cmn"), "English": ("en", "eng"), "Cantonese": ("yue",),
    "Arabic": ("ar", "ara", "arb"), "German": ("de", "deu", "ger"), "French": ("fr", "fra", "fre"),
    "Spanish": ("es", "spa"), "Portuguese": ("pt", "por"), "Indonesian": ("id", "ind"),
    "Italian": ("it", "ita"), "Korean": ("ko", "kor"), "Russian": ("ru", "rus"), "Thai": ("th", "tha"),
    "Vietnamese": ("vi", "vie"), "Japanese": ("ja", "jpn"), "Turkish": ("tr", "tur"), "Hindi": ("hi", "hin"),
    "Malay": ("ms", "msa", "may", "zsm"), "Dutch": ("nl", "nld", "dut"), "Swedish": ("sv", "swe"),
    "Danish": ("da", "dan"), "Finnish": ("fi", "fin"), "Polish": ("pl", "pol"), "Czech": ("cs", "ces", "cze"),
    "Filipino": ("fil", "tl", "tgl"), "Persian": ("fa", "fas", "per", "pes"), "Greek": ("el", "ell", "gre"),
    "Hungarian": ("hu", "hun"), "Macedonian": ("mk", "mkd", "mac"), "Romanian": ("ro", "ron", "rum"),
}  # fmt: skip

# Code -> model language name.
LANGUAGE_CODES: dict[str, str] = {code: name for name, codes in _CODES_BY_NAME.items() for code in codes}

# Values that ask the model to identify the language itself (as None and "" do).
DETECT_TAGS: frozenset[str] = frozenset({"auto", "detect"})

# Chinese tags whose region is Hong Kong or Macau name Cantonese: Common Voice's "zh-HK" corpus is
# Cantonese speech (its "zh-CN" and "zh-TW" are Mandarin). "zh-yue" is BCP-47's old tag for it.
_CANTONESE_REGIONS = frozenset({"hk", "mo"})
_CHINESE_PRIMARY = frozenset({"zh", "zho", "chi"})

NAME_BY_LOWER = {name.lower(): name for name in LANGUAGE_NAMES}
CODE_BY_NAME = {name: codes[0] for name, codes in _CODES_BY_NAME.items()}


def is_detect(language: str | None) -> bool:
    """Whether a language value means "identify it": None, empty, ``auto`` or ``detect`` (any case)."""
    return language is None or language.strip().lower() in DETECT_TAGS or not language.strip()


def language_name(language: str | None) -> str | None:
    """The model's language name for a language tag, or None for "detect".

    One rule for every form a manifest, a config or a request uses (README, "Language tags"):

    1. None, ``""``, ``auto``, ``detect`` (any case, surrounding spaces ignored): None (detect).
    2. A model name in any case: ``english``, ``CANTONESE``.
    3. An ISO 639-1, 639-2 (T or B) or 639-3 code (:data:`LANGUAGE_CODES`): ``en``, ``deu``,
       ``fre``, ``cmn``, ``yue``.
    4. A BCP-47 tag or locale (``_`` read as ``-``, case ignored) by its primary subtag, with one
       exception: a Chinese tag (``zh``, ``zho``, ``chi``) with region ``HK`` or ``MO``, or
       ``zh-yue``, is Cantonese (Common Voice's ``zh-HK`` corpus is Cantonese). So ``yue-Hant-HK``,
       ``zh-HK``, ``zh-Hant-HK`` -> Cantonese; ``zh-CN``, ``zh-TW``, ``zh-Hans``, ``zh-Hant``,
       ``cmn-Hans-CN`` -> Chinese; ``pt-BR`` -> Portuguese; ``en-US`` -> English; ``es-419`` ->
       Spanish; Common Voice's ``sv-SE`` -> Swedish.

    Raises ValueError naming the tag for anything else (``klingon``, ``xx-YY``, ``ca``: a language
    the model does not know).
    """
    if is_detect(language):
        return None
    key = language.strip()
    lower = key.lower().replace("_", "-")
    if lower in NAME_BY_LOWER:
        return NAME_BY_LOWER[lower]
    if lower in LANGUAGE_CODES:
        return LANGUAGE_CODES[lower]
    primary, *subtags = lower.split("-")
    if primary in _CHINESE_PRIMARY and any(t in _CANTONESE_REGIONS or t == "yue" for t in subtags):
        return "Cantonese"
    if primary in LANGUAGE_CODES and all(subtags):
        return LANGUAGE_CODES[primary]
    raise ValueError(
        f"unsupported language {language!r}: Qwen3-ASR knows {', '.join(LANGUAGE_NAMES)} "
        "(by name, ISO 639 code or BCP-47 tag such as pt-BR; auto or detect to identify it)"
    )


def language_key(language: str | None) -> str:
    """A stable grouping key for reports: the ISO 639-1 code (``yue`` for Cantonese, ``fil`` for
    Filipino), 'other' if unknown, 'unknown' if unset or "detect"."""
    try:
        name = language_name(language)
    except ValueError:
        return "other"
    return "unknown" if name is None else CODE_BY_NAME[name]
