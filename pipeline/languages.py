"""Qwen3-ASR's languages: the model's names, ISO codes, and mapping between them.

Manifests say "en", "en-US", "English" or "english"; the model wants "English" in a forced prompt
and answers "English". One table, used by the engine adapter (prompts, parsing) and by scoring
(grouping rows by language).
"""

from __future__ import annotations

# The model's language names (the forced-language suffix must use exactly these).
LANGUAGE_NAMES: tuple[str, ...] = (
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese",
    "Indonesian", "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish",
    "Hindi", "Malay", "Dutch", "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino",
    "Persian", "Greek", "Hungarian", "Macedonian", "Romanian",
)  # fmt: skip

# ISO 639-1 (and a few 639-2/3) codes -> model language name.
LANGUAGE_CODES: dict[str, str] = {
    "zh": "Chinese", "en": "English", "yue": "Cantonese", "ar": "Arabic", "de": "German",
    "fr": "French", "es": "Spanish", "pt": "Portuguese", "id": "Indonesian", "it": "Italian",
    "ko": "Korean", "ru": "Russian", "th": "Thai", "vi": "Vietnamese", "ja": "Japanese",
    "tr": "Turkish", "hi": "Hindi", "ms": "Malay", "nl": "Dutch", "sv": "Swedish", "da": "Danish",
    "fi": "Finnish", "pl": "Polish", "cs": "Czech", "fil": "Filipino", "tl": "Filipino",
    "fa": "Persian", "el": "Greek", "hu": "Hungarian", "mk": "Macedonian", "ro": "Romanian",
}  # fmt: skip

NAME_BY_LOWER = {name.lower(): name for name in LANGUAGE_NAMES}
CODE_BY_NAME = {}
for _code, _name in LANGUAGE_CODES.items():
    CODE_BY_NAME.setdefault(_name, _code)


def language_name(language: str | None) -> str | None:
    """Map an ISO code ("en", "zh-CN", "yue") or a name ("english") to the model's name.

    None or "" means "detect". Unknown languages raise ValueError.
    """
    if language is None:
        return None
    key = language.strip()
    if not key:
        return None
    lower = key.lower().replace("_", "-")
    if lower in NAME_BY_LOWER:
        return NAME_BY_LOWER[lower]
    if lower in LANGUAGE_CODES:
        return LANGUAGE_CODES[lower]
    base = lower.split("-", 1)[0]  # "zh-cn" -> "zh", "pt-br" -> "pt"
    if base in LANGUAGE_CODES:
        return LANGUAGE_CODES[base]
    raise ValueError(
        f"unsupported language {language!r}: Qwen3-ASR knows {', '.join(LANGUAGE_NAMES)} "
        f"(or their ISO codes: {', '.join(sorted(LANGUAGE_CODES))})"
    )


def language_key(language: str | None) -> str:
    """A stable grouping key for reports: the ISO code, 'other' if unknown, 'unknown' if unset."""
    if not language or not language.strip():
        return "unknown"
    try:
        name = language_name(language)
    except ValueError:
        return "other"
    return CODE_BY_NAME[name]
