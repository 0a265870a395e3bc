"""Alignment units: per-language splitting, punctuation merging, aligner text (no model)."""

from __future__ import annotations

import pytest

from pipeline.align import units as align_units
from pipeline.align.units import (
    ALIGNER_LANGUAGES,
    Unit,
    aligner_supports,
    build_aligner_text,
    resolve_language,
    split_units,
)
from pipeline.languages import LANGUAGE_NAMES


def _spans(units: list[Unit]) -> list[tuple[str, str, int, int]]:
    return [(u.text, u.token, u.start_char, u.end_char) for u in units]


def _check_offsets(text: str, units: list[Unit]) -> None:
    for u in units:
        assert text[u.start_char : u.end_char] == u.text
        assert u.token
    for a, b in zip(units, units[1:]):
        assert a.end_char <= b.start_char


def test_english_punctuation_contractions_numbers():
    text = 'Hello, world! I don\'t pay $3.50 -- or 1,000. "Well," she said.'
    units = split_units(text, "en")
    assert _spans(units) == [
        ("Hello,", "Hello", 0, 6),
        ("world!", "world", 7, 13),
        ("I", "I", 14, 15),
        ("don't", "don't", 16, 21),
        ("pay", "pay", 22, 25),
        ("$3.50 --", "3.50", 26, 34),
        ("or", "or", 35, 37),
        ("1,000.", "1,000", 38, 44),
        ('"Well,"', "Well", 45, 52),
        ("she", "she", 53, 56),
        ("said.", "said", 57, 62),
    ]
    _check_offsets(text, units)


def test_leading_punctuation_joins_the_next_unit():
    text = "-- ¿Qué tal? «Bien»"
    units = split_units(text, "Spanish")
    assert _spans(units) == [("-- ¿Qué", "Qué", 0, 7), ("tal?", "tal", 8, 12), ("«Bien»", "Bien", 13, 19)]
    _check_offsets(text, units)


def test_only_punctuation_gives_no_units():
    assert split_units("... !? --", "en") == []
    assert split_units("", "fr") == []
    assert split_units("   ", "zh") == []


def test_apostrophes_only_inside_words():
    units = split_units("'tis the dogs' bone l’été", "en")
    assert [u.token for u in units] == ["tis", "the", "dogs", "bone", "l’été"]


def test_russian_and_german_whitespace_words():
    assert [u.token for u in split_units("Привет, мир!", "ru")] == ["Привет", "мир"]
    assert [u.text for u in split_units("Straße und Größe.", "de")] == ["Straße", "und", "Größe."]


def test_chinese_one_unit_per_character_latin_words_whole():
    text = "你好，世界！我用Python写代码。"
    units = split_units(text, "zh")
    assert _spans(units) == [
        ("你", "你", 0, 1),
        ("好，", "好", 1, 3),
        ("世", "世", 3, 4),
        ("界！", "界", 4, 6),
        ("我", "我", 6, 7),
        ("用", "用", 7, 8),
        ("Python", "Python", 8, 14),
        ("写", "写", 14, 15),
        ("代", "代", 15, 16),
        ("码。", "码", 16, 18),
    ]
    _check_offsets(text, units)


def test_chinese_digits_and_spaced_latin():
    text = "今天是2024年，hello world. 3.5个"
    units = split_units(text, "Chinese")
    assert [u.text for u in units] == ["今", "天", "是", "2024", "年，", "hello", "world.", "3.5", "个"]
    assert [u.token for u in units] == ["今", "天", "是", "2024", "年", "hello", "world", "3.5", "个"]
    _check_offsets(text, units)


@pytest.mark.parametrize("language", ["yue", "Cantonese", "zh-CN", "zh-TW"])
def test_cantonese_and_chinese_variants_split_per_character(language):
    assert [u.text for u in split_units("佢哋去咗。", language)] == ["佢", "哋", "去", "咗。"]


def test_japanese_sudachi_segmentation():
    text = "私は東京に住んでいます。"
    units = split_units(text, "ja")
    assert _spans(units) == [
        ("私", "私", 0, 1),
        ("は", "は", 1, 2),
        ("東京", "東京", 2, 4),
        ("に", "に", 4, 5),
        ("住ん", "住ん", 5, 7),
        ("で", "で", 7, 8),
        ("い", "い", 8, 9),
        ("ます。", "ます", 9, 12),
    ]
    _check_offsets(text, units)


def test_japanese_quotes_and_mixed_script():
    text = "「今日はいい天気ですね！」と彼は言った。Pythonで書いた 2024年のコード"
    units = split_units(text, "Japanese")
    assert [u.text for u in units] == [
        "「今日", "は", "いい", "天気", "です", "ね！」", "と", "彼", "は", "言っ", "た。",
        "Python", "で", "書い", "た", "2024", "年", "の", "コード",
    ]  # fmt: skip
    assert units[0].token == "今日"
    _check_offsets(text, units)


def test_japanese_segmenter_is_loaded_once():
    split_units("猫です。", "ja")
    assert align_units._sudachi_tokenizer() is align_units._sudachi_tokenizer()
    assert align_units._sudachi_tokenizer.cache_info().currsize == 1


def test_japanese_long_text_is_fed_in_pieces():
    sentence = "私は東京に住んでいます。"
    text = sentence * 800  # 9,600 characters, 28.8 KB: more than one piece
    units = split_units(text, "ja")
    assert len(units) == 8 * 800
    assert units[-1].text == "ます。" and units[-1].end_char == len(text)
    _check_offsets(text, units)


def test_korean_eojeol():
    text = "안녕하세요, 저는 학생입니다."
    units = split_units(text, "ko")
    assert _spans(units) == [
        ("안녕하세요,", "안녕하세요", 0, 6),
        ("저는", "저는", 7, 9),
        ("학생입니다.", "학생입니다", 10, 16),
    ]
    _check_offsets(text, units)


def test_unknown_language_is_script_based():
    units = split_units("hello 世界!", None)
    assert [u.text for u in units] == ["hello", "世", "界!"]


@pytest.mark.parametrize("language", ["th", "Arabic", "hi", "nl"])
def test_unsupported_language_raises(language):
    with pytest.raises(ValueError, match="forced aligner does not support"):
        split_units("some text", language)


def test_unknown_language_name_raises():
    with pytest.raises(ValueError, match="unsupported language"):
        split_units("some text", "Klingon")


def test_aligner_languages():
    assert ALIGNER_LANGUAGES == {
        "Chinese", "English", "Cantonese", "French", "German", "Italian", "Japanese", "Korean",
        "Portuguese", "Russian", "Spanish",
    }  # fmt: skip
    assert ALIGNER_LANGUAGES <= set(LANGUAGE_NAMES)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", True), ("en-US", True), ("english", True), ("zh-CN", True), ("yue", True),
        ("Cantonese", True), ("ja", True), ("ko", True), ("pt-BR", True), ("ru", True),
        ("es", True), ("it", True), ("fr", True), ("de", True),
        ("th", False), ("Arabic", False), ("nl", False), ("Klingon", False), (None, False),
        ("", False),
    ],
)  # fmt: skip
def test_aligner_supports(language, expected):
    assert aligner_supports(language) is expected


def test_build_aligner_text_format():
    units = split_units("Hello, world.", "en")
    assert build_aligner_text(units) == "Hello<timestamp><timestamp>world<timestamp><timestamp>"
    assert build_aligner_text([]) == ""
    zh = split_units("你好，世界", "zh")
    text = build_aligner_text(zh)
    assert text == (
        "你<timestamp><timestamp>好<timestamp><timestamp>"
        "世<timestamp><timestamp>界<timestamp><timestamp>"
    )
    assert text.count("<timestamp>") == 2 * len(zh)


def test_unit_is_frozen():
    unit = split_units("hi", "en")[0]
    with pytest.raises(AttributeError):
        unit.text = "ho"  # type: ignore[misc]


# --- resolve_language -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "English"), ("English", "English"), ("zh-CN", "Chinese"), ("yue", "Cantonese")],
)
def test_resolve_language_supported(language, expected):
    # A given language wins over the script of the text.
    assert resolve_language("مرحبا hello", language) == (expected, None)


@pytest.mark.parametrize("language", ["Arabic", "ar", "th", "nl"])
def test_resolve_language_unsupported_by_the_aligner(language):
    name, reason = resolve_language("some text", language)
    assert name is None
    assert reason.startswith("unsupported_language:")
    assert "does not support" in reason


@pytest.mark.parametrize("language", ["klingon", "xx-YY"])
def test_resolve_language_unknown_language(language):
    name, reason = resolve_language("some text", language)
    assert name is None
    assert reason.startswith("unsupported_language:")
    assert repr(language) in reason


@pytest.mark.parametrize("language", [None, ""])
def test_resolve_language_unset_latin_and_cyrillic(language):
    assert resolve_language("Hello, naïve café 3.50 straße", language) == (None, None)
    assert resolve_language("Привет, мир", language) == (None, None)
    assert resolve_language("", language) == (None, None)
    assert resolve_language("123 ... !!", language) == (None, None)  # no letters at all


@pytest.mark.parametrize("text", ["こんにちは", "カタカナ", "東京に行きます", "hello こんにちは"])
def test_resolve_language_unset_kana_is_japanese(text):
    assert resolve_language(text, None) == ("Japanese", None)


@pytest.mark.parametrize("text", ["안녕하세요", "저는 학생입니다.", "ㅋㅋㅋ 진짜", "Hi 안녕 世界"])
def test_resolve_language_unset_hangul_is_korean(text):
    assert resolve_language(text, None) == ("Korean", None)


@pytest.mark.parametrize("text", ["مرحبا بالعالم", "hello مرحبا", "你好 مرحبا"])
def test_resolve_language_unset_arabic_script_is_skipped(text):
    name, reason = resolve_language(text, None)
    assert name is None
    assert reason.startswith("unsupported_language:")
    assert "arabic" in reason


def test_resolve_language_unset_other_scripts_are_named():
    name, reason = resolve_language("Ελληνικά и שלום", None)
    assert name is None and reason.startswith("unsupported_language:")
    assert "greek" in reason and "hebrew" in reason


@pytest.mark.parametrize("text", ["你好世界", "你好，世界！", "我用Python写代码"])
def test_resolve_language_unset_ideographs_are_split_per_character(text):
    assert resolve_language(text, None) == (None, None)
    units = split_units(text, None)
    assert all(len(u.token) == 1 for u in units if any(align_units.is_cjk(c) for c in u.token))
    assert "".join(u.token for u in units) == "".join(c for c in text if c.isalnum())


def test_resolve_language_unset_ideographs_units():
    assert [u.text for u in split_units("你好世界", None)] == ["你", "好", "世", "界"]


def test_resolve_language_unset_japanese_with_prolonged_sound_mark():
    assert resolve_language("コーヒーを飲みます", None) == ("Japanese", None)


@pytest.mark.parametrize("text", ["ＡＩの時代", "ｶﾀｶﾅ"])
def test_resolve_language_unset_width_forms(text):
    assert resolve_language(text, None) == ("Japanese", None)


def test_resolve_language_unset_latin_symbols_are_latin():
    assert resolve_language("µ-law encoding", None) == (None, None)
