"""Utterance planning and quality signals of the labeling job (pure functions, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import FilterConfig
from pipeline.label.quality import (
    agreement_wer,
    compression_ratio,
    first_pass_reasons,
    longest_repeat,
    measure,
    reason_key,
    units_of,
)  # fmt: skip
from pipeline.label.segments import plan_utterances
from pipeline.label.stage import finetune_line


def _words(spec: list[tuple[str, float, float]]) -> list[dict]:
    return [{"text": t, "start": s, "end": e} for t, s, e in spec]


def _even(n: int, word_s: float = 0.4, gap_s: float = 0.1, start: float = 0.0) -> list[dict]:
    out, t = [], start
    for k in range(n):
        out.append({"text": f"w{k}", "start": t, "end": t + word_s})
        t += word_s + gap_s
    return out


PLAN = dict(min_s=1.0, max_s=5.0, max_pause_s=1.0, pad_s=0.15)


def test_long_pause_always_cuts():
    words = _words([("a", 0.0, 0.5), ("b", 0.6, 1.2), ("c", 3.0, 3.5), ("d", 3.6, 4.2)])
    utts = plan_utterances(words, duration_s=5.0, language="en", **PLAN)
    assert [(u.first, u.last) for u in utts] == [(0, 1), (2, 3)]
    assert [u.text for u in utts] == ["a b", "c d"]


def test_long_span_cut_at_widest_pause():
    words = _even(20)  # 10 s of speech, 0.1 s gaps
    words[9]["end"] -= 0.3  # a 0.4 s pause before word 10
    utts = plan_utterances(words, duration_s=12.0, language="en", **PLAN)
    assert utts[0].last == 9 and utts[1].first == 10
    for u in utts:
        assert u.speech_end - u.speech_start <= PLAN["max_s"]


def test_padding_never_crosses_the_midpoint_or_the_file():
    words = _words([("a", 0.05, 0.5), ("b", 2.0, 3.5), ("c", 4.6, 5.9)])
    utts = plan_utterances(words, duration_s=6.0, language="en", **{**PLAN, "max_pause_s": 1.0, "pad_s": 0.8})
    starts_ends = [(round(u.start, 3), round(u.end, 3)) for u in utts]
    assert starts_ends[0][0] == 0.0  # clamped to the file
    assert starts_ends[-1][1] == 6.0
    for (_, end), (start, _) in zip(starts_ends, starts_ends[1:]):
        assert end <= start  # neighbours never share audio


def test_short_piece_joins_its_nearest_neighbour():
    words = _words([("a", 0.0, 2.0), ("b", 2.9, 3.2), ("c", 3.3, 5.0)])  # "b" alone would be 0.3 s
    utts = plan_utterances(words, duration_s=6.0, language="en", min_s=1.0, max_s=3.0, max_pause_s=1.0, pad_s=0.0)
    assert [(u.first, u.last) for u in utts] == [(0, 0), (1, 2)]


def test_isolated_short_piece_stays_and_is_rejected():
    words = _words([("a", 0.0, 2.0), ("b", 4.0, 4.3)])
    utts = plan_utterances(words, duration_s=5.0, language="en", **{**PLAN, "pad_s": 0.0})
    assert [(u.first, u.last) for u in utts] == [(0, 0), (1, 1)]
    s = measure("b", "en", None, np.full(int(0.3 * 16000), 0.1, np.float32), 16000, 0.3)
    assert [reason_key(r) for r in first_pass_reasons(s, min_s=1.0, max_s=5.0, f=FilterConfig())] == ["too_short"]


def test_chinese_is_joined_without_spaces():
    words = _words([("今", 0.0, 0.3), ("天", 0.3, 0.6), ("好，", 0.6, 1.2)])
    (u,) = plan_utterances(words, duration_s=2.0, language="zh", **PLAN)
    assert u.text == "今天好，"
    assert units_of(u.text, "zh") == ["今", "天", "好"]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 2.5), min_size=1, max_size=60),
    lengths=st.lists(st.floats(0.05, 1.5), min_size=61, max_size=61),
)
def test_every_word_in_exactly_one_utterance_in_order(gaps, lengths):
    words, t = [], 0.0
    for k, gap in enumerate([0.0] + gaps):
        t += gap
        words.append({"text": f"w{k}", "start": t, "end": t + lengths[k]})
        t += lengths[k]
    duration = t + 0.5
    utts = plan_utterances(words, duration_s=duration, language="en", **PLAN)
    covered = [k for u in utts for k in range(u.first, u.last + 1)]
    assert covered == list(range(len(words)))
    for u, nxt in zip(utts, utts[1:]):
        assert u.end <= nxt.start + 1e-9
    for u in utts:
        assert 0.0 <= u.start <= u.speech_start and u.speech_end <= u.end <= duration
        if u.first != u.last:  # a span over max_s is cut unless it is a single word
            assert u.speech_end - u.speech_start <= PLAN["max_s"] + 1e-9
        for k in range(u.first + 1, u.last + 1):  # no long pause inside
            assert words[k]["start"] - words[k - 1]["end"] <= PLAN["max_pause_s"] + 1e-9


def test_repetition_and_compression():
    assert longest_repeat("a b c".split()) == 1
    assert longest_repeat("the the the the".split()) == 4
    assert longest_repeat("x go home go home go home y".split()) == 3
    assert compression_ratio("thank you " * 20) > 2.4 > compression_ratio("the quick brown fox jumps over the lazy dog")


def test_first_pass_reasons():
    f = FilterConfig()
    loud = np.full(16000 * 3, 0.1, np.float32)
    ok = measure("the quick brown fox jumps", "en", "en", loud, 16000, 2.5)
    assert first_pass_reasons(ok, min_s=1.0, max_s=20.0, f=f) == []
    rushed = measure("one two three four five six seven eight nine ten eleven twelve", "en", None, loud, 16000, 1.0)
    assert [reason_key(r) for r in first_pass_reasons(rushed, min_s=1.0, max_s=20.0, f=f)] == ["speech_rate"]
    looped = measure("go go go go go home", "en", None, loud, 16000, 2.5)
    assert "repetition" in {reason_key(r) for r in first_pass_reasons(looped, min_s=1.0, max_s=20.0, f=f)}
    wrong = measure("bonjour tout le monde", "fr", "en", loud, 16000, 2.0)
    assert [reason_key(r) for r in first_pass_reasons(wrong, min_s=1.0, max_s=20.0, f=f)] == ["language_mismatch"]
    quiet = measure("", None, None, np.zeros(16000 * 2, np.float32), 16000, 2.0)
    assert {reason_key(r) for r in first_pass_reasons(quiet, min_s=1.0, max_s=20.0, f=f)} == {"empty", "non_speech"}
    off = FilterConfig(reject_empty=False, min_rms_db=None, reject_language_mismatch=False, max_units_per_s=None)
    assert first_pass_reasons(quiet, min_s=1.0, max_s=20.0, f=off) == []
    assert first_pass_reasons(rushed, min_s=1.0, max_s=20.0, f=off) == []


def test_agreement_wer():
    assert agreement_wer("The cat sat.", "the cat sat", "en") == 0.0
    assert agreement_wer("the cat sat", "the dog sat", "en") == pytest.approx(1 / 3)
    assert agreement_wer("今天好", "今天很好", "zh") == pytest.approx(1 / 3)
    assert agreement_wer("", "", "en") == 0.0 and agreement_wer("", "noise", "en") == 1.0


def test_finetune_line_uses_the_models_output_format():
    assert finetune_line("s3://b/a.flac", "Hello there.", "en") == (
        '{"audio": "s3://b/a.flac", "text": "language English<asr_text>Hello there."}'
    )
    assert '"language None<asr_text>' in finetune_line("a.flac", "x", None)
    assert "language Chinese<asr_text>你好" in finetune_line("a.flac", "你好", "Chinese")
