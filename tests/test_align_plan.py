"""Spans of a row and piece-by-piece alignment of a long span, with a simulated aligner."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.align.plan import SAMPLE_RATE, Span, align_span, spans_for_row
from pipeline.align.units import split_units
from pipeline.audio.chunking import plan_chunks

SR = SAMPLE_RATE
SEG_S = 0.08  # seconds per aligner class (Qwen3-ForcedAligner: 80 ms)
SLOT = round(SEG_S * SR)  # 1280 samples per class


# --- spans_for_row ------------------------------------------------------------------------------


def test_spans_for_row_from_segments():
    n = 3 * SR  # a 3 s recording
    segments = [
        {"start": 0.5, "end": 1.25, "text": "hello there"},
        {"start": -1.0, "end": 0.2, "text": None},  # before the recording: clamped to 0
        {"start": 2.0, "end": 99.0, "text": ""},  # past the end: clamped to the recording
        {"start": 2.5, "end": 2.0, "text": "x"},  # end before start: an empty span at start
        {"start": 5.0, "end": 6.0, "text": "late"},  # wholly past the end: empty, at the end
        {"start": "1.5", "end": "1.75"},  # numbers as strings; no text at all
    ]
    assert spans_for_row(n, "ignored manifest text", segments) == [
        Span(8000, 20000, "hello there"),
        Span(0, 3200, ""),
        Span(32000, n, ""),
        Span(40000, 40000, "x"),
        Span(n, n, "late"),
        Span(24000, 28000, ""),
    ]


def test_spans_for_row_rounds_seconds_to_samples():
    [span] = spans_for_row(SR, None, [{"start": 0.10003, "end": 0.99996, "text": "a"}])
    assert (span.start, span.end) == (1600, 15999)  # round(0.10003*16000)=1600.48->1600


@pytest.mark.parametrize("segments", [None, []])
@pytest.mark.parametrize(
    ("text", "expected_text"), [("the text", "the text"), (None, ""), ("", "")]
)
def test_spans_for_row_without_segments_is_the_whole_recording(segments, text, expected_text):
    assert spans_for_row(12345, text, segments) == [Span(0, 12345, expected_text)]


def test_span_is_frozen():
    with pytest.raises(AttributeError):
        Span(0, 1, "a").start = 2  # type: ignore[misc]


# --- a synthetic recording and a simulated aligner -----------------------------------------------


def _recording(word_s: list[float], gap_s: list[float], seed: int = 0):
    """Words as bursts of noise (|sample| in [0.2, 0.5], never near zero) separated by digital
    silence. Returns the samples and each word's true (start, end) in samples."""
    rng = np.random.default_rng(seed)
    pos = int(0.3 * SR)
    truth: list[tuple[int, int]] = []
    for dur, gap in zip(word_s, gap_s):
        n = int(dur * SR)
        truth.append((pos, pos + n))
        pos += n + int(gap * SR)
    samples = np.zeros(pos + int(0.3 * SR), dtype=np.float32)
    for s, e in truth:
        samples[s:e] = rng.choice([-1.0, 1.0], e - s) * rng.uniform(0.2, 0.5, e - s)
    return samples, truth


def _uniform_recording(seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed + 1)
    word_s, gap_s, t = [], [], 0.3
    while t < seconds - 1.5:
        word_s.append(float(rng.uniform(0.2, 0.6)))
        gap_s.append(float(rng.uniform(0.2, 0.6)))
        t += word_s[-1] + gap_s[-1]
    return _recording(word_s, gap_s, seed)


_VOCAB = [
    "Hello,", "world.", "don't", "$3.50", "«quoted»", "plain", "it's", "1,000!", "ok", "yes?",
]  # fmt: skip


def _transcript(n: int) -> str:
    return " ".join(f"{_VOCAB[i % len(_VOCAB)]}" for i in range(n))


class SimulatedAligner:
    """A deterministic stand-in for the forced aligner.

    It sees only what the real one sees: a piece of audio and the units offered for it. It learns
    where the piece lies by matching its samples against the pieces ``plan_chunks`` cuts the span
    into (computed here independently, with the same samples and ``max_chunk_s``). For each
    offered unit, in order, it returns the unit's true times (classes relative to the piece) when
    that word lies in the piece; words the piece does not contain are piled on the piece's last
    class (the last 80 ms frame), as a real aligner piles text it cannot find in the audio.
    """

    def __init__(self, samples, span: Span, max_chunk_s: float, truth, units):
        self.samples = samples
        self.pieces = [
            (span.start + a, span.start + b)
            for a, b in plan_chunks(samples[span.start : span.end], SR, max_chunk_s)
        ]
        self.truth_by_unit = {id(u): t for u, t in zip(units, truth)}
        self.calls: list[tuple[tuple[int, int], int, int]] = []  # (piece, n offered, n inside)

    def _locate(self, audio: np.ndarray) -> tuple[int, int]:
        found = [
            (a, b)
            for a, b in self.pieces
            if b - a == len(audio) and np.array_equal(self.samples[a:b], audio)
        ]
        assert len(found) == 1, "the audio handed to the aligner is not one of the planned pieces"
        return found[0]

    async def __call__(self, audio, units):
        a, b = self._locate(audio)
        last = (len(audio) - 1) // SLOT  # the class of the piece's last 80 ms frame
        classes: list[int] = []
        inside = 0
        for unit in units:
            s, e = self.truth_by_unit[id(unit)]
            if a <= s < b:
                inside += 1
                classes += [round((s - a) / SR / SEG_S), round((e - a) / SR / SEG_S)]
            else:
                classes += [last, last]
        self.calls.append(((a, b), len(units), inside))
        await asyncio.sleep(0)
        return classes, SEG_S


def _check_words(words, units, truth, lo_s: float, hi_s: float, tol_s: float = 0.1):
    assert len(words) == len(units)
    assert [w["text"] for w in words] == [u.text for u in units]
    for w, (s, e) in zip(words, truth):
        assert set(w) == {"text", "start", "end", "repaired"}
        assert lo_s <= w["start"] <= w["end"] <= hi_s
        assert w["start"] == pytest.approx(s / SR, abs=tol_s), w
        assert w["end"] == pytest.approx(e / SR, abs=tol_s), w
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


@pytest.mark.parametrize("max_chunk_s", [8.0, 12.0, 16.0])
def test_align_span_long_recording_matches_truth(max_chunk_s):
    samples, truth = _uniform_recording(50.0)
    duration = len(samples) / SR
    assert 45.0 < duration < 55.0
    units = split_units(_transcript(len(truth)), "en")
    assert len(units) == len(truth)
    span = Span(0, len(samples), "")
    aligner = SimulatedAligner(samples, span, max_chunk_s, truth, units)
    assert len(aligner.pieces) >= 3

    words = asyncio.run(align_span(samples, span, units, aligner, max_chunk_s))

    _check_words(words, units, truth, 0.0, duration)
    # Once per piece, in order, each piece holding words.
    assert [c[0] for c in aligner.calls] == aligner.pieces
    assert all(c[2] > 0 for c in aligner.calls)


def test_align_span_sub_span_times_are_from_the_recording_start():
    """An ASR chunk in the middle of a recording: word times count from the recording's start."""
    samples, truth = _uniform_recording(50.0, seed=3)
    # A span from the middle of one silence to the middle of another, ~30 s long.
    i, j = 10, next(k for k, (s, _) in enumerate(truth) if s > truth[10][0] + 30 * SR)
    span = Span((truth[i - 1][1] + truth[i][0]) // 2, (truth[j - 1][1] + truth[j][0]) // 2, "")
    inside = truth[i:j]
    units = split_units(_transcript(len(inside)), "en")
    aligner = SimulatedAligner(samples, span, 10.0, inside, units)
    assert len(aligner.pieces) >= 3

    words = asyncio.run(align_span(samples, span, units, aligner, 10.0))

    _check_words(words, units, inside, span.start / SR, span.end / SR)
    assert [c[0] for c in aligner.calls] == aligner.pieces


def test_align_span_carries_words_over_when_a_piece_is_offered_too_many():
    """Slow speech early and fast speech later: the first pieces' time share predicts far more
    words than they hold, so the aligner gets words their audio does not contain; those are
    piled at the piece's end, handed over to the next piece, and must not be lost."""
    rng = np.random.default_rng(7)
    slow = 12  # ~1.6 s per word for the first ~20 s
    fast = 80  # ~0.4 s per word for the remaining ~32 s
    word_s = [float(rng.uniform(0.6, 0.9)) for _ in range(slow)]
    word_s += [float(rng.uniform(0.15, 0.25)) for _ in range(fast)]
    gap_s = [float(rng.uniform(0.7, 1.0)) for _ in range(slow)]
    gap_s += [float(rng.uniform(0.15, 0.25)) for _ in range(fast)]
    samples, truth = _recording(word_s, gap_s, seed=7)
    duration = len(samples) / SR
    units = split_units(_transcript(len(truth)), "en")
    span = Span(0, len(samples), "")
    max_chunk_s = 10.0
    aligner = SimulatedAligner(samples, span, max_chunk_s, truth, units)
    assert len(aligner.pieces) >= 4

    words = asyncio.run(align_span(samples, span, units, aligner, max_chunk_s))

    _check_words(words, units, truth, 0.0, duration)
    assert [c[0] for c in aligner.calls] == aligner.pieces
    offered, inside = aligner.calls[0][1], aligner.calls[0][2]
    assert offered > inside + 10  # the hand-over path was really taken
    # Every piece but the last was offered at least the words it holds (the margin sufficed).
    assert all(n_offered >= n_inside for _, n_offered, n_inside in aligner.calls)


@pytest.mark.parametrize(
    "slots",
    [
        32,  # 2.56 s pieces: rounding happens to fall on the right side
        206,  # 16.48 s: 205 * 0.08 = 16.4 vs 16.48 - 0.08 = 16.400000000000002
    ],
)
def test_align_span_piece_of_exact_slot_multiple_hands_over_its_last_slot(slots):
    """Pieces whose length is an exact multiple of 80 ms: the last frame starts exactly one slot
    before the piece's end, which is where align_span draws the hand-over line; words piled there
    (not in the piece's audio) must go to the next piece."""
    piece = slots * SLOT
    samples = np.zeros(3 * piece, dtype=np.float32)
    rng = np.random.default_rng(1)
    truth = [(k * piece + SR // 2, k * piece + SR) for k in range(3)]  # one word per piece
    for s, e in truth:
        samples[s:e] = rng.choice([-1.0, 1.0], e - s) * rng.uniform(0.2, 0.5, e - s)
    # plan_chunks cuts at the centre of the latest silent 100 ms window before the limit:
    # with a limit of piece + 50 ms the cut lands exactly on the piece boundary.
    max_chunk_s = (piece + 800) / SR
    assert int(max_chunk_s * SR) == piece + 800
    assert plan_chunks(samples, SR, max_chunk_s) == [(k * piece, (k + 1) * piece) for k in range(3)]
    span = Span(0, len(samples), "")
    units = split_units("one two three", "en")
    aligner = SimulatedAligner(samples, span, max_chunk_s, truth, units)

    words = asyncio.run(align_span(samples, span, units, aligner, max_chunk_s))

    _check_words(words, units, truth, 0.0, len(samples) / SR)
    assert [c[0] for c in aligner.calls] == aligner.pieces


# --- an adversarial aligner: random classes ------------------------------------------------------

_NOISE_REC, _ = _uniform_recording(30.0, seed=11)


@settings(max_examples=30, deadline=None)
@given(
    n_units=st.integers(min_value=0, max_value=60),
    max_chunk_s=st.floats(min_value=0.2, max_value=40.0),
    bounds=st.tuples(
        st.integers(min_value=0, max_value=len(_NOISE_REC)),
        st.integers(min_value=0, max_value=len(_NOISE_REC)),
    ),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_align_span_invariants_with_random_classes(n_units, max_chunk_s, bounds, seed):
    start, end = sorted(bounds)
    span = Span(start, end, "")
    units = split_units(" ".join(f"w{i}" for i in range(n_units)), "en")
    rng = np.random.default_rng(seed)
    calls: list[tuple[int, int]] = []

    async def adversary(audio, offered):
        assert 0 < len(audio) <= max(1, int(max_chunk_s * SR))
        calls.append((len(audio), len(offered)))
        return [int(c) for c in rng.integers(0, 301, size=2 * len(offered))], SEG_S

    words = asyncio.run(align_span(_NOISE_REC, span, units, adversary, max_chunk_s))

    assert [w["text"] for w in words] == [u.text for u in units]
    lo, hi = span.start / SR, span.end / SR
    for w in words:
        assert 0.0 <= lo <= w["start"] <= w["end"] <= hi
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    pieces = plan_chunks(_NOISE_REC[span.start : span.end], SR, max_chunk_s)
    assert len(calls) <= len(pieces)
    if units and pieces:
        assert calls and calls[0][0] == pieces[0][1] - pieces[0][0]
    else:
        assert calls == []


# --- edge cases ----------------------------------------------------------------------------------


async def _never(audio, units):  # pragma: no cover - must not be called
    raise AssertionError("the aligner must not be called")


def test_align_span_no_units_returns_nothing_and_never_calls():
    samples, _ = _uniform_recording(10.0)
    assert asyncio.run(align_span(samples, Span(0, len(samples), "x"), [], _never, 5.0)) == []


def test_align_span_zero_length_span_puts_words_at_its_start():
    samples, _ = _uniform_recording(10.0)
    units = split_units("one, two three.", "en")
    words = asyncio.run(align_span(samples, Span(SR, SR, "one, two three."), units, _never, 5.0))
    assert words == [
        {"text": "one,", "start": 1.0, "end": 1.0},
        {"text": "two", "start": 1.0, "end": 1.0},
        {"text": "three.", "start": 1.0, "end": 1.0},
    ]
