"""The ASR actor's row assembly: joining chunk texts, merging chunk languages."""

import pytest

from actors.asr_actor import join_texts, merge_languages
from pipeline.languages import language_key, language_name


def test_join_texts_by_script():
    assert join_texts([" hello there ", "", "general kenobi"], "English") == "hello there general kenobi"
    assert join_texts(["今天", "天气很好"], "Chinese") == "今天天气很好"
    assert join_texts([], None) == ""


def test_merge_languages_longest_speaker_wins_and_silence_does_not_vote():
    assert merge_languages(["English", "German", "German"], [50.0, 10.0, 10.0]) == "English"
    assert merge_languages(["English", None, "German"], [5.0, 60.0, 10.0]) == "German"
    assert merge_languages([None, None], [1.0, 1.0]) is None


def test_language_table():
    assert language_name("en-US") == "English"
    assert language_name("yue") == "Cantonese"
    assert language_name("german") == "German"
    assert language_name("") is None
    with pytest.raises(ValueError, match="unsupported language 'klingon'"):
        language_name("klingon")
    assert language_key("English") == "en"
    assert language_key("fr") == "fr"
    assert language_key("asdf garbage") == "other"
    assert language_key(None) == "unknown"
