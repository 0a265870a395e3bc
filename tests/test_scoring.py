from __future__ import annotations

import pytest

from pipeline.score.wer import (
    RowScore,
    corpus_error_rate,
    normalize_text,
    score_row,
    unit_for_language,
)


@pytest.mark.parametrize("language", ["zh", "ja", "ko", "th", "yue", "Chinese", "JAPANESE",
                                      "korean", "Thai", "Cantonese", "zh-CN", "ja_JP"])
def test_char_languages(language: str) -> None:
    assert unit_for_language(language) == "char"


@pytest.mark.parametrize("language", ["en", "English", "de", "fr", "German", None, "", "zho?"])
def test_word_languages(language: str | None) -> None:
    assert unit_for_language(language) == "word"


def test_english_normalizer() -> None:
    assert normalize_text("Hello, World!", "en") == "hello world"
    # Whisper's English normalizer expands contractions and standardises spelling.
    assert normalize_text("I'm fine, Colour", "English") == "i am fine color"


def test_basic_normalizer_for_other_languages() -> None:
    assert normalize_text("Heute ist  Größe, schön!", "de") == "heute ist größe schön"
    assert normalize_text("Hello, World!", None) == "hello world"


def test_char_language_drops_spaces_and_punctuation() -> None:
    assert normalize_text("你好，世界。", "zh") == "你好世界"


def test_substitution_and_deletion() -> None:
    s = score_row("the cat sat on the mat", "the cat sit on mat", "en")
    assert s == RowScore(errors=2, substitutions=1, deletions=1, insertions=0, ref_units=6,
                         unit="word")
    assert corpus_error_rate([s]) == pytest.approx(2 / 6)


def test_insertion() -> None:
    s = score_row("good morning", "good morning everyone", "de")
    assert (s.errors, s.insertions, s.ref_units) == (1, 1, 2)


def test_normalization_removes_case_and_punctuation_errors() -> None:
    s = score_row("Hello, World!", "hello world", "en")
    assert (s.errors, s.ref_units, s.unit) == (0, 2, "word")


def test_chinese_cer() -> None:
    s = score_row("今天天气很好。", "今天天很好啊", "zh")
    # ref 今天天气很好 (6 chars); hyp drops 气 and adds 啊.
    assert s == RowScore(errors=2, substitutions=0, deletions=1, insertions=1, ref_units=6,
                         unit="char")


def test_chinese_substitution() -> None:
    s = score_row("你好世界", "你好世届", "Chinese")
    assert (s.errors, s.substitutions, s.ref_units, s.unit) == (1, 1, 4, "char")


def test_empty_reference_counts_insertions() -> None:
    assert score_row("", "hello there", "en") == RowScore(2, 0, 0, 2, 0, "word")
    assert score_row("", "你好", "zh") == RowScore(2, 0, 0, 2, 0, "char")
    assert score_row("?!", "", "en") == RowScore(0, 0, 0, 0, 0, "word")


def test_empty_hypothesis_counts_deletions() -> None:
    assert score_row("red green blue", "", "en") == RowScore(3, 0, 3, 0, 3, "word")


def test_corpus_rate_is_pooled_not_averaged() -> None:
    a = score_row("a b c d e f g h i j", "a b c d e f g h i x", None)  # 1/10
    b = score_row("hello", "goodbye", None)  # 1/1
    assert corpus_error_rate([a, b]) == pytest.approx(2 / 11)


def test_corpus_rate_without_units_is_none() -> None:
    assert corpus_error_rate([]) is None
    assert corpus_error_rate([score_row("", "x", "en")]) is None
