"""Output guards and confidence arithmetic (actors/asr_guards.py, actors/asr_confidence.py,
pipeline/score/confidence.py) on plain values. The same functions run on the real engine's output
in tests/test_asr_quality.py."""

from __future__ import annotations

import math

import pytest

from actors.asr_confidence import (
    avg_logprob,
    carry_confidences,
    char_spans,
    language_probability,
    mean_log_confidence,
    token_bytes,
    transcript_start,
    unit_confidences,
)
from actors.asr_guards import GuardOptions, collapse_span, find_repetition, is_context_echo, token_budget
from pipeline.score.confidence import auroc, word_outcomes


def test_token_budget_follows_speech_seconds():
    g = GuardOptions(tokens_per_s=15, margin_tokens=24)
    assert token_budget(2.0, g, 512) == 54
    assert token_budget(0.0, g, 512) == 24
    assert token_budget(100.0, g, 512) == 512  # never above the configured cap
    assert token_budget(None, g, 512) == 512


@pytest.mark.parametrize(
    "tokens, found",
    [
        ([1, 2, 3, 4, 5, 6], None),
        ([7, 7, 7, 7], None),  # four copies: natural ("no no no no")
        ([1, 7, 7, 7, 7, 7, 2], (1, 1, 5)),
        ([9, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2], (1, 2, 6)),  # "I think." as two tokens, six times
        ([5, 1, 2, 3] * 5 + [4], (1, 4, 4)) if False else ([1, 2, 3] * 5 + [4], (0, 3, 5)),
    ],
)
def test_find_repetition(tokens, found):
    assert find_repetition(tokens, min_repeats=5, max_ngram=10) == found


def test_collapse_keeps_one_copy():
    text = "I think. I think. I think. I think. I think. done"
    pieces = ["I", " think.", " I", " think.", " I", " think.", " I", " think.", " I", " think.", " done"]
    spans, pos = [], 0
    for p in pieces:
        spans.append((pos, pos + len(p)))
        pos += len(p)
    ids = [1, 2] * 5 + [3]
    loop = find_repetition(ids, 5, 10)
    assert collapse_span(text, spans, loop) == "I think. done"


def test_context_echo():
    g = GuardOptions()
    assert is_context_echo("Kubernetes PyTorch", "Hotwords: Kubernetes, PyTorch, Ray", 0.3, g)
    assert not is_context_echo("Kubernetes PyTorch", "Hotwords: Kubernetes, PyTorch, Ray", 5.0, g)  # speech enough
    assert not is_context_echo("the cluster runs Kubernetes", "Kubernetes", 0.3, g)  # mostly other words
    assert not is_context_echo("", "Kubernetes", 0.0, g) and not is_context_echo("Kubernetes", "", 0.0, g)
    assert is_context_echo("阿里云", "热词：阿里云", 0.2, g)  # characters in scripts without spaces


def test_char_spans_follow_bytes_across_a_split_character():
    # "é" is two bytes; byte-level BPE may put them in two tokens.
    text = "café ok"
    pieces = [b"caf", b"\xc3", b"\xa9", b" ok", b""]
    assert char_spans(pieces, text) == [(0, 3), (3, 3), (3, 4), (4, 7), (7, 7)]
    assert char_spans([b"x"], "y") is None
    assert token_bytes("Ġok", False) == b" ok" and token_bytes("<asr_text>", False) == b"<asr_text>"
    assert token_bytes("<|im_end|>", True) == b""


def test_language_probability_and_averages():
    text = "language English<asr_text>zero back"
    spans = [(0, 8), (8, 16), (16, 26), (26, 30), (30, 35)]
    lps = [0.0, math.log(0.8), 0.0, math.log(0.5), math.log(0.25)]
    assert language_probability(text, spans, lps) == pytest.approx(0.8)
    start = transcript_start(text, forced=False)
    assert text[start:] == "zero back"
    assert avg_logprob(spans, lps, start) == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert unit_confidences(["zero", "back"], text, spans, lps, start) == [pytest.approx(0.5), pytest.approx(0.25)]
    assert language_probability("zero back", [(0, 4), (4, 9)], [0.0, 0.0]) is None  # forced: no name generated


def test_confidences_carry_onto_aligned_words():
    asr = [{"text": "zero", "confidence": 0.9}, {"text": "back,", "confidence": 0.4}]
    aligned = [{"text": "zero", "start": 0.0, "end": 0.3}, {"text": "back,", "start": 0.4, "end": 0.7}]
    assert [w["confidence"] for w in carry_confidences(aligned, asr)] == [0.9, 0.4]
    # A different split (characters) takes the lowest overlapping ASR word.
    aligned = [{"text": "ze"}, {"text": "ro"}, {"text": "back,"}]
    assert [w["confidence"] for w in carry_confidences(aligned, asr)] == [0.9, 0.9, 0.4]
    assert carry_confidences([{"text": "x"}], None)[0]["confidence"] is None
    assert mean_log_confidence([{"confidence": 0.5}, {"confidence": 0.25}]) == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)


def test_auroc():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([], [0.3]) is None


def test_word_outcomes_mark_substitutions_and_insertions():
    words = [{"text": "Zero", "confidence": 0.9}, {"text": "black", "confidence": 0.3}, {"text": "zero.", "confidence": 0.8},
             {"text": "up", "confidence": 0.2}]  # fmt: skip
    assert word_outcomes("zero back zero", words, "English") == [(0.9, True), (0.3, False), (0.8, True), (0.2, False)]
