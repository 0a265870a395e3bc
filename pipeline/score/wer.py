"""The one place where text is normalized and WER/CER computed.

Rows store raw reference and hypothesis text; normalization happens only here, at scoring time,
with one pinned normalizer (whisper-normalizer, as the Open ASR Leaderboard does). Error counts
are kept per row so the corpus rate is sum(errors) / sum(ref_units), not a mean of row rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.languages import language_key

Unit = Literal["word", "char"]

# Languages written without spaces between words: word error rate is meaningless there.
_CHAR_LANGUAGES = frozenset(
    {"zh", "ja", "ko", "th", "yue", "chinese", "japanese", "korean", "thai", "cantonese"}
)
_ENGLISH = frozenset({"en", "english"})


@dataclass(frozen=True)
class RowScore:
    errors: int  # substitutions + deletions + insertions
    substitutions: int
    deletions: int
    insertions: int
    ref_units: int  # words or characters in the normalized reference
    unit: Unit


def _language_key(language: str | None) -> str:
    """'zh-CN', 'en_US', ' English ', 'zh-HK' -> 'zh', 'en', 'en', 'yue' (the language tag rule of
    pipeline.languages); a tag it does not know reduces to its primary subtag."""
    key = language_key(language)
    if key == "unknown":
        return ""
    if key == "other":
        return language.strip().lower().replace("_", "-").split("-")[0]
    return key


def unit_for_language(language: str | None) -> Unit:
    return "char" if _language_key(language) in _CHAR_LANGUAGES else "word"


@lru_cache(maxsize=1)
def _english() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


@lru_cache(maxsize=1)
def _basic() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def normalize_text(text: str, language: str | None) -> str:
    """Whisper's English normalizer for English, the basic one otherwise (also for unknown)."""
    key = _language_key(language)
    normalizer = _english() if key in _ENGLISH else _basic()
    normalized = normalizer(text)
    if key in _CHAR_LANGUAGES:
        # The basic normalizer turns CJK punctuation into spaces; characters are the units.
        return "".join(normalized.split())
    return " ".join(normalized.split())


def score_row(reference: str, hypothesis: str, language: str | None) -> RowScore:
    unit = unit_for_language(language)
    ref = normalize_text(reference, language)
    hyp = normalize_text(hypothesis, language)
    hyp_units = len(hyp) if unit == "char" else len(hyp.split())
    if not ref:
        # Nothing to say, so everything said is an insertion.
        return RowScore(hyp_units, 0, 0, hyp_units, 0, unit)
    if not hyp:
        ref_units = len(ref) if unit == "char" else len(ref.split())
        return RowScore(ref_units, 0, ref_units, 0, ref_units, unit)
    out = jiwer.process_characters(ref, hyp) if unit == "char" else jiwer.process_words(ref, hyp)
    ref_units = out.hits + out.substitutions + out.deletions
    errors = out.substitutions + out.deletions + out.insertions
    return RowScore(errors, out.substitutions, out.deletions, out.insertions, ref_units, unit)


def corpus_error_rate(scores: Iterable[RowScore]) -> float | None:
    """sum(errors) / sum(ref_units); None when there is nothing to measure against.

    Mixing word and char rows in one rate is the caller's choice; report per unit if both occur.
    """
    errors = 0
    units = 0
    for score in scores:
        errors += score.errors
        units += score.ref_units
    return errors / units if units else None
