"""SRT / WebVTT from word timestamps, checked with real parsers (srt, webvtt-py)."""

from __future__ import annotations

import html
from datetime import timedelta

import srt
import webvtt

from pipeline.align.subtitles import group_cues, srt_time, to_srt, to_vtt, vtt_time
from pipeline.align.timestamps import slots_to_words
from pipeline.align.units import split_units


def _w(text: str, start: float, end: float) -> dict:
    return {"text": text, "start": start, "end": end}


def _td(seconds: float) -> timedelta:
    return timedelta(milliseconds=round(seconds * 1000))


# A 1.0 s pause (> 0.8) after "world." ends cue 1; "somewhere" would make cue 2
# 46 characters (> 42), so it opens cue 3.
WORDS = [
    _w("Hello,", 0.0, 0.4),
    _w("world.", 0.5, 1.0),
    _w("This", 2.0, 2.2),
    _w("sentence", 2.3, 2.8),
    _w("is", 2.9, 3.0),
    _w("long", 3.1, 3.4),
    _w("enough", 3.5, 3.9),
    _w("to", 4.0, 4.1),
    _w("wrap", 4.2, 4.5),
    _w("somewhere", 4.6, 5.1),
    _w("here.", 5.2, 5.6),
]
EXPECTED = [
    (0.0, 1.0, "Hello, world."),
    (2.0, 4.5, "This sentence is long enough to wrap"),
    (4.6, 5.6, "somewhere here."),
]


def _srt_cues(text: str):
    return [(c.index, c.start, c.end, c.content) for c in srt.parse(text)]


def _vtt_cues(text: str):
    return [(c.start, c.end, html.unescape(c.text)) for c in webvtt.from_string(text)]


def test_timestamp_formats():
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(1.234) == "00:00:01,234"
    assert srt_time(3723.4567) == "01:02:03,457"
    assert srt_time(-0.001) == "00:00:00,000"
    assert vtt_time(61.5) == "00:01:01.500"
    assert vtt_time(3723.4567) == "01:02:03.457"


def test_srt_breaks_on_pause_and_length():
    out = to_srt(WORDS)
    assert out.startswith("1\n00:00:00,000 --> 00:00:01,000\nHello, world.\n\n2\n00:00:02,000 --> ")
    assert _srt_cues(out) == [
        (i, _td(start), _td(end), text) for i, (start, end, text) in enumerate(EXPECTED, 1)
    ]


def test_vtt_same_cues_with_header():
    out = to_vtt(WORDS)
    assert out.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello, world.\n")
    cues = list(webvtt.from_string(out))
    assert [(c.start, c.end, c.text) for c in cues] == [
        (vtt_time(start), vtt_time(end), text) for start, end, text in EXPECTED
    ]


def test_break_on_duration():
    # contiguous short words, 0.1 s apart: only the 7 s limit can break them
    words = [_w(f"w{i}", 0.8 * i, 0.8 * i + 0.7) for i in range(10)]
    cues = _srt_cues(to_srt(words))
    assert [c[3] for c in cues] == ["w0 w1 w2 w3 w4 w5 w6 w7", "w8 w9"]
    assert (cues[0][1], cues[0][2]) == (_td(0.0), _td(6.3))
    assert (cues[1][1], cues[1][2]) == (_td(6.4), _td(7.9))
    # a longer limit keeps them together
    assert len(_srt_cues(to_srt(words, max_duration_s=8.0))) == 1


def test_gap_equal_to_limit_does_not_break():
    words = [_w("a", 0.0, 0.25), _w("b", 1.0, 1.5), _w("c", 2.5, 3.0)]
    assert [c[3] for c in _srt_cues(to_srt(words, max_gap_s=0.75))] == ["a b", "c"]


def test_overlong_word_gets_its_own_cue():
    words = [_w("a", 0.0, 0.1), _w("supercalifragilistic", 0.2, 1.0), _w("b", 1.1, 1.2)]
    assert [c[3] for c in _srt_cues(to_srt(words, max_chars=10, min_duration_s=0.05))] == [
        "a", "supercalifragilistic", "b",
    ]  # fmt: skip


def test_chinese_joined_without_spaces_latin_words_spaced():
    units = ["我", "用", "Python", "3", "写", "代", "码。"]
    words = [_w(t, 0.1 * i, 0.1 * i + 0.1) for i, t in enumerate(units)]
    assert [c[3] for c in _srt_cues(to_srt(words, language="zh"))] == ["我用Python 3写代码。"]
    assert [c[3] for c in _srt_cues(to_srt(words, language="en"))] == ["我 用 Python 3 写 代 码。"]


def test_cjk_length_limit_counts_characters():
    words = [_w(ch, 0.2 * i, 0.2 * i + 0.2) for i, ch in enumerate("一二三四五六七八九十")]
    cues = _srt_cues(to_srt(words, language="Cantonese", max_chars=4))
    assert [c[3] for c in cues] == ["一二三四", "五六七八", "九十"]


def test_japanese_and_korean_joining():
    ja_units = ["私", "は", "東京", "に", "住ん", "で", "い", "ます。"]
    ja = [_w(t, i * 0.2, i * 0.2 + 0.2) for i, t in enumerate(ja_units)]
    assert _vtt_cues(to_vtt(ja, language="ja"))[0][2] == "私は東京に住んでいます。"
    ko = [_w(t, i * 0.5, i * 0.5 + 0.4) for i, t in enumerate(["안녕하세요,", "저는", "학생입니다."])]
    assert _vtt_cues(to_vtt(ko, language="ko"))[0][2] == "안녕하세요, 저는 학생입니다."


def test_vtt_escapes_markup():
    out = to_vtt([_w("A&B", 0.0, 0.5), _w("<3", 0.5, 1.0), _w("-->", 1.0, 1.5)])
    assert "A&amp;B &lt;3 --&gt;" in out
    assert [c[2] for c in _vtt_cues(out)] == ["A&B <3 -->"]
    # SRT has no escaping
    assert [c[3] for c in _srt_cues(to_srt([_w("A&B", 0.0, 0.5)]))] == ["A&B"]


def test_empty():
    assert to_srt([]) == ""
    assert list(srt.parse(to_srt([]))) == []
    assert to_vtt([]) == "WEBVTT\n"
    assert list(webvtt.from_string(to_vtt([]))) == []
    assert group_cues([_w("  ", 0.0, 1.0)]) == []


def test_from_aligner_slots_end_to_end():
    units = split_units("Good morning. How are you?", "en")
    classes = [0, 5, 6, 12, 30, 33, 34, 36, 37, 42]
    words = slots_to_words(units, classes, 0.08, offset_s=10.0, duration_s=20.0)
    out = to_srt(words)
    assert _srt_cues(out) == [
        (1, _td(10.0), _td(10.96), "Good morning."),
        (2, _td(12.4), _td(13.36), "How are you?"),
    ]
    assert [(c.start, c.end) for c in webvtt.from_string(to_vtt(words))] == [
        ("00:00:10.000", "00:00:10.960"),
        ("00:00:12.400", "00:00:13.360"),
    ]


# --- timing rules: minimum length, no overlap, never before the first word -----------------------


def _vtt_seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _check_cue_rules(words: list[dict], min_s: float = 0.3, **options) -> list[srt.Subtitle]:
    """Write both formats, parse them back with the real parsers, and hold every cue to the rules."""
    starts = sorted(w["start"] for w in words)
    srt_cues = list(srt.parse(to_srt(words, min_duration_s=min_s, **options)))
    vtt_cues = list(webvtt.from_string(to_vtt(words, min_duration_s=min_s, **options)))
    assert len(srt_cues) == len(vtt_cues)
    as_seconds = [(c.start.total_seconds(), c.end.total_seconds()) for c in srt_cues]
    assert as_seconds == [(_vtt_seconds(c.start), _vtt_seconds(c.end)) for c in vtt_cues]
    prev_end = 0.0
    for start, end in as_seconds:
        assert end - start >= min_s - 1e-3, (start, end)
        assert start >= prev_end, "cues overlap"
        prev_end = end
    if as_seconds:
        assert as_seconds[0][0] >= round(starts[0], 3) - 1e-9  # never before the first word
    return srt_cues


def test_piled_up_words_give_valid_cues():
    # What the aligner gives when several words share one slot: zero-length words, some cues
    # made only of them (before the word-time repair these became cues with end == start).
    words = [
        _w("Hello", 0.0, 0.0), _w("there", 0.0, 0.0), _w("my", 1.5, 1.5), _w("friend.", 1.5, 1.5),
        _w("How", 3.0, 3.0), _w("are", 3.1, 3.1), _w("you?", 3.1, 3.3),
    ]  # fmt: skip
    cues = _check_cue_rules(words)
    assert " ".join(c.content for c in cues).split() == [w["text"] for w in words]


def test_a_cue_too_close_to_the_next_takes_in_its_words():
    words = [_w("a", 0.0, 0.1), _w("b", 0.2, 0.25), _w("c", 1.2, 1.3), _w("d", 2.5, 2.6)]
    cues = _check_cue_rules(words, max_gap_s=0.05)
    # a and b are 0.2 s apart: one cue; c and d keep their own, lengthened to 0.3 s.
    assert [(c.content, c.start.total_seconds(), c.end.total_seconds()) for c in cues] == [
        ("a b", 0.0, 0.3), ("c", 1.2, 1.5), ("d", 2.5, 2.8),
    ]  # fmt: skip


def test_a_short_cue_is_lengthened_only_up_to_the_next_cue():
    words = [_w("a", 0.0, 0.1), _w("b", 0.35, 0.5)]
    cues = _check_cue_rules(words, max_gap_s=0.1)
    assert [(c.start.total_seconds(), c.end.total_seconds()) for c in cues] == [(0.0, 0.3), (0.35, 0.65)]


def test_long_word_keeps_its_own_span_and_overlapping_words_join():
    cues = _check_cue_rules([_w("looooong", 1.0, 2.5), _w("x", 2.0, 2.1), _w("y", 5.0, 5.0)])
    assert [(c.content, c.start.total_seconds(), c.end.total_seconds()) for c in cues] == [
        ("looooong x", 1.0, 2.5), ("y", 5.0, 5.3),
    ]  # fmt: skip


def test_min_duration_must_be_positive():
    import pytest

    with pytest.raises(ValueError, match="min_duration_s"):
        group_cues([_w("a", 0, 1)], min_duration_s=0)


def test_random_piled_words_always_give_valid_cues():
    import random

    rng = random.Random(7)
    for _ in range(200):
        t, words = 0.0, []
        for k in range(rng.randint(1, 30)):
            t += rng.choice([0.0, 0.0, 0.05, 0.2, 1.0])
            words.append(_w(f"w{k}", t, t + rng.choice([0.0, 0.0, 0.1, 0.4])))
        _check_cue_rules(words, max_chars=rng.choice([10, 42]), max_gap_s=rng.choice([0.1, 0.8]))
