"""Sentence segments from timed words (pipeline/align/sentences.py)."""

from __future__ import annotations

import pytest

from pipeline.align.sentences import ends_sentence, sentence_segments


def _w(text: str, start: float, end: float) -> dict:
    return {"text": text, "start": start, "end": end, "repaired": False}


def _texts(segments: list[dict]) -> list[str]:
    return [s["text"] for s in segments]


def test_sentences_end_at_final_punctuation():
    words = [
        _w("Good", 0.0, 0.3), _w("morning.", 0.35, 0.8), _w("How", 0.9, 1.0), _w("are", 1.05, 1.2),
        _w("you?", 1.25, 1.5), _w("Fine,", 1.6, 1.9), _w("thanks!", 2.0, 2.4), _w('"Really."', 2.5, 2.9),
        _w("Pi", 3.0, 3.2), _w("is", 3.25, 3.3), _w("3.14", 3.35, 3.9),
    ]  # fmt: skip
    segments = sentence_segments(words, language="English")
    assert _texts(segments) == ["Good morning.", "How are you?", "Fine, thanks!", '"Really."', "Pi is 3.14"]
    first = segments[0]
    assert (first["start"], first["end"], first["language"]) == (0.0, 0.8, "English")
    assert first["words"] == words[:2]
    assert [w for s in segments for w in s["words"]] == words  # every word in exactly one segment


def test_chinese_full_width_punctuation_and_no_spaces():
    words = [_w(ch, k * 0.2, k * 0.2 + 0.15) for k, ch in enumerate(["今", "天", "好。", "我", "们", "去", "吧！"])]
    segments = sentence_segments(words, language="Chinese")
    assert _texts(segments) == ["今天好。", "我们去吧！"]


def test_long_pause_and_language_change_and_maximum_length():
    words = [_w("one", 0.0, 0.3), _w("two", 2.0, 2.3), _w("drei", 2.4, 2.7), _w("vier", 2.8, 3.0)]
    segments = sentence_segments(
        words, language="English", word_languages=["English", "English", "German", None], max_pause_s=1.0
    )
    # The pause cuts after "one"; "drei" is German (its chunk's language); "vier" has none: the row's.
    assert [(s["text"], s["language"]) for s in segments] == [
        ("one", "English"), ("two", "English"), ("drei", "German"), ("vier", "English"),
    ]  # fmt: skip
    many = [_w(f"w{k}", k * 1.0, k * 1.0 + 0.9) for k in range(10)]
    capped = sentence_segments(many, language="English", max_duration_s=3.0)
    assert [len(s["words"]) for s in capped] == [3, 3, 3, 1]
    assert all(s["end"] - s["start"] <= 3.0 for s in capped)
    lone = sentence_segments([_w("long", 0.0, 50.0)], language="English", max_duration_s=30.0)
    assert len(lone) == 1  # a single longer word still gets a segment


def test_no_words_and_bad_arguments():
    assert sentence_segments([], language="English") == []
    with pytest.raises(ValueError):
        sentence_segments([_w("a", 0, 1)], language="English", word_languages=[])
    with pytest.raises(ValueError):
        sentence_segments([_w("a", 0, 1)], language="English", max_pause_s=0)


@pytest.mark.parametrize(
    ("text", "language", "ends"),
    [("dog.", "English", True), ("吧。", "Chinese", True), ("why?)", None, True), ("3.5", None, False),
     ("well,", None, False), ("τι;", "Greek", True), ("a;", "English", False), ("", None, False)],
)  # fmt: skip
def test_ends_sentence(text, language, ends):
    assert ends_sentence(text, language) is ends
