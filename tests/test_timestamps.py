"""Slot classes -> word timestamps: monotone repair and clamping (no model)."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.align.timestamps import (
    _longest_non_decreasing,
    enforce_invariants,
    repair_monotone,
    spread_piled_words,
    slots_to_words,
)
from pipeline.align.units import split_units


def _lnds_length(values) -> int:
    """Longest non-decreasing subsequence length, O(n^2) reference."""
    best = [1] * len(values)
    for i in range(len(values)):
        for j in range(i):
            if values[j] <= values[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best, default=0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([4.0], [4.0]),
        ([0, 1, 2, 2, 3], [0.0, 1.0, 2.0, 2.0, 3.0]),  # already monotone: unchanged
        ([0, 1, 5, 2, 3, 4], [0.0, 1.0, 1.5, 2.0, 3.0, 4.0]),  # one spike interpolated
        ([1, 9, 9, 9, 2, 3, 4, 5], [1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 4.0, 5.0]),  # a run of three
        ([9, 1, 2, 3], [1.0, 1.0, 2.0, 3.0]),  # leading outlier takes the first kept value
        ([1, 2, 3, 0], [1.0, 2.0, 3.0, 3.0]),  # trailing outlier takes the last kept value
        ([7, 8, 1, 2, 3, 9, 4], [1.0, 1.0, 1.0, 2.0, 3.0, 3.5, 4.0]),
        ([2, 2, 1, 2], [2.0, 2.0, 2.0, 2.0]),  # equal values count as non-decreasing
        ([3, 1], [1.0, 1.0]),  # tie: the subsequence with the smaller values wins
        ([5, 4, 3, 2, 1], [1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_repair_monotone_exact(values, expected):
    assert repair_monotone(values) == pytest.approx(expected, abs=1e-12)


def test_repair_monotone_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        repair_monotone([0.0, math.nan, 1.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), max_size=60))
def test_repair_monotone_invariants(values):
    out = repair_monotone(values)
    assert len(out) == len(values)
    assert all(a <= b for a, b in zip(out, out[1:]))
    if values:
        assert min(values) <= min(out) and max(out) <= max(values)
    # Exactly the slots outside one longest non-decreasing subsequence change... at most:
    # a replaced slot may by chance receive its own value back.
    idx = _longest_non_decreasing(values)
    assert len(idx) == _lnds_length(values)
    assert all(i < j and values[i] <= values[j] for i, j in zip(idx, idx[1:]))
    assert all(out[i] == values[i] for i in idx)
    kept = sum(1 for a, b in zip(values, out) if a == b)
    assert kept >= _lnds_length(values)
    if values == sorted(values):
        assert out == [float(v) for v in values]


def test_repair_monotone_is_fast_on_long_input():
    n = 200_000
    values = [(i * 7919) % 1000 + i * 0.01 for i in range(n)]  # jagged, trending up
    began = time.perf_counter()
    out = repair_monotone(values)
    assert time.perf_counter() - began < 5.0  # quadratic would take hours
    assert all(a <= b for a, b in zip(out, out[1:]))


def test_slots_to_words_exact():
    units = split_units("Hello, big world.", "en")
    words = slots_to_words(units, [0, 5, 20, 6, 7, 10], 0.08, offset_s=1.0, duration_s=10.0)
    assert [w["text"] for w in words] == ["Hello,", "big", "world."]
    # slot 2 (class 20) breaks monotonicity: interpolated between classes 5 and 6 -> 5.5
    expected = [(1.0, 1.4), (1.44, 1.48), (1.56, 1.8)]
    assert [(w["start"], w["end"]) for w in words] == [
        (pytest.approx(s, abs=1e-9), pytest.approx(e, abs=1e-9)) for s, e in expected
    ]
    assert set(words[0]) == {"text", "start", "end"}


def test_slots_to_words_clamps_to_recording():
    units = split_units("one two three", "en")
    # negative offset pushes the first word before 0; the last runs past the duration
    words = slots_to_words(units, [0, 5, 10, 20, 30, 40], 0.1, offset_s=-0.7, duration_s=3.0)
    assert [(w["start"], w["end"]) for w in words] == [
        (0.0, 0.0),
        (pytest.approx(0.3), pytest.approx(1.3)),
        (pytest.approx(2.3), 3.0),
    ]


def test_slots_to_words_chinese_units_keep_punctuation_text():
    units = split_units("你好。", "zh")
    words = slots_to_words(units, [1, 3, 3, 6], 0.08, duration_s=1.0)
    assert [w["text"] for w in words] == ["你", "好。"]
    assert [w["end"] for w in words] == [pytest.approx(0.24), pytest.approx(0.48)]


@pytest.mark.parametrize("classes", [[], [1], [1, 2, 3], [1, 2, 3, 4, 5]])
def test_slots_to_words_wrong_slot_count(classes):
    units = split_units("a b", "en")
    with pytest.raises(ValueError, match="2 slots per unit"):
        slots_to_words(units, classes, 0.08, duration_s=5.0)


def test_slots_to_words_bad_parameters():
    units = split_units("a", "en")
    with pytest.raises(ValueError, match="segment_time_s"):
        slots_to_words(units, [0, 1], 0.0, duration_s=5.0)
    with pytest.raises(ValueError, match="duration_s"):
        slots_to_words(units, [0, 1], 0.08, duration_s=-1.0)


def test_slots_to_words_empty():
    assert slots_to_words([], [], 0.08, duration_s=1.0) == []


@settings(max_examples=300, deadline=None)
@given(
    n_words=st.integers(min_value=0, max_value=25),
    data=st.data(),
    offset_s=st.floats(min_value=-20.0, max_value=200.0),
    duration_s=st.floats(min_value=0.0, max_value=400.0),
)
def test_slots_to_words_invariants(n_words, data, offset_s, duration_s):
    units = split_units(" ".join(f"w{i}" for i in range(n_words)), "en")
    classes = data.draw(st.lists(st.integers(0, 4999), min_size=2 * n_words, max_size=2 * n_words))
    words = slots_to_words(units, classes, 0.08, offset_s=offset_s, duration_s=duration_s)
    assert len(words) == n_words
    for w in words:
        assert 0.0 <= w["start"] <= w["end"] <= duration_s
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))


# --- enforce_invariants ---------------------------------------------------------------------------


def _spans_of(words):
    return [(w["text"], w["start"], w["end"]) for w in words]


def test_enforce_invariants_overlapping_seam_between_chunks():
    # Two chunks' words concatenated; chunk 2 was aligned with its own offset and its first
    # words start before chunk 1's last word.
    chunk1 = [{"text": "a", "start": 0.0, "end": 0.5}, {"text": "b", "start": 4.8, "end": 5.3}]
    chunk2 = [
        {"text": "c", "start": 4.6, "end": 4.7},  # start and end before b's start
        {"text": "d", "start": 4.9, "end": 5.1},  # start after b's start: kept
        {"text": "e", "start": 6.0, "end": 6.5},
    ]
    words = enforce_invariants(chunk1 + chunk2, 10.0)
    assert _spans_of(words) == [
        ("a", 0.0, 0.5),
        ("b", 4.8, 5.3),
        ("c", 5.3, 5.3),  # pulled up to the previous end (no overlap); end follows
        ("d", 5.3, 5.3),
        ("e", 6.0, 6.5),
    ]
    assert [w.get("repaired", False) for w in words] == [False, False, True, True, False]
    # The seam's piled words then share the gap up to the next word, by their length.
    spread = spread_piled_words(words, 0.0, 10.0)
    assert [(w["start"], w["end"]) for w in spread] == [
        (0.0, 0.5), (4.8, 5.3), (5.3, pytest.approx(5.65)), (pytest.approx(5.65), 6.0), (6.0, 6.5),
    ]  # fmt: skip


def test_enforce_invariants_negative_times_and_times_past_duration():
    words = enforce_invariants(
        [
            {"text": "x", "start": -1.0, "end": -0.5},
            {"text": "y", "start": -0.2, "end": 0.3},
            {"text": "z", "start": 2.5, "end": 3.5},
            {"text": "w", "start": 3.2, "end": 9.0},
            {"text": "v", "start": 1.0, "end": 0.5},  # after the clamps: start 3.0 (duration)
        ],
        3.0,
    )
    assert _spans_of(words) == [
        ("x", 0.0, 0.0),
        ("y", 0.0, 0.3),
        ("z", 2.5, 3.0),
        ("w", 3.0, 3.0),
        ("v", 3.0, 3.0),
    ]


def test_enforce_invariants_end_before_start_and_extra_keys():
    words = enforce_invariants([{"text": "a", "start": 2, "end": 1, "score": 0.9}], 5.0)
    assert words == [{"text": "a", "start": 2.0, "end": 2.0, "score": 0.9, "repaired": True}]
    assert all(isinstance(v, float) for v in (words[0]["start"], words[0]["end"]))


def test_enforce_invariants_leaves_input_alone_and_handles_empty():
    original = [{"text": "a", "start": -1.0, "end": 99.0}]
    snapshot = [dict(w) for w in original]
    enforce_invariants(original, 1.0)
    assert original == snapshot
    assert enforce_invariants([], 1.0) == []
    assert _spans_of(enforce_invariants(original, 0.0)) == [("a", 0.0, 0.0)]


def test_enforce_invariants_is_identity_on_valid_words():
    units = split_units("one two three four", "en")
    words = slots_to_words(units, [0, 3, 4, 6, 6, 9, 10, 12], 0.08, offset_s=1.0, duration_s=9.0)
    assert enforce_invariants(words, 9.0) == words


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.floats(-50.0, 500.0), st.floats(-50.0, 500.0)), max_size=40
    ),
    duration_s=st.floats(min_value=0.0, max_value=400.0),
)
def test_enforce_invariants_properties(spans, duration_s):
    words = [{"text": f"w{i}", "start": s, "end": e} for i, (s, e) in enumerate(spans)]
    out = enforce_invariants(words, duration_s)
    assert [w["text"] for w in out] == [w["text"] for w in words]
    for w in out:
        assert 0.0 <= w["start"] <= w["end"] <= duration_s
    assert all(a["start"] <= b["start"] for a, b in zip(out, out[1:]))
    assert enforce_invariants(out, duration_s) == out  # idempotent


# --- spread_piled_words: words the aligner left with no time ------------------------------------


def _word(text: str, start: float, end: float) -> dict:
    return {"text": text, "start": start, "end": end}


def _assert_sound(words: list[dict], lo: float, hi: float) -> None:
    prev_end = lo
    for w in words:
        assert lo <= w["start"] < w["end"] <= hi, w
        assert w["start"] >= prev_end - 1e-12, (w, prev_end)
        prev_end = w["end"]


def test_piled_words_share_the_gap_between_their_neighbours_by_length():
    words = [
        _word("one", 0.0, 0.4),
        _word("a", 1.2, 1.2), _word("bbb", 1.2, 1.2), _word("cc,", 1.2, 1.2),  # one slot, zero length
        _word("two", 2.0, 2.5),
    ]  # fmt: skip
    out = spread_piled_words(words, 0.0, 3.0)
    _assert_sound(out, 0.0, 3.0)
    # The gap 0.4..2.0 split 1:3:2 (letters; the comma is silent).
    assert [(w["start"], w["end"]) for w in out[1:4]] == [
        (pytest.approx(0.4), pytest.approx(0.4 + 1.6 / 6)),
        (pytest.approx(0.4 + 1.6 / 6), pytest.approx(0.4 + 1.6 * 4 / 6)),
        (pytest.approx(0.4 + 1.6 * 4 / 6), 2.0),
    ]
    assert [w["repaired"] for w in out] == [False, True, True, True, False]
    assert (out[0]["start"], out[0]["end"], out[4]["start"], out[4]["end"]) == (0.0, 0.4, 2.0, 2.5)


def test_words_bunched_in_one_slot_spread_over_the_whole_piece():
    # What a piece of a long text looks like when the aligner places every word at its start.
    words = [_word(w, 10.0, 10.0) for w in "the quick brown fox jumps".split()]
    out = spread_piled_words(words, 10.0, 22.0)
    _assert_sound(out, 10.0, 22.0)
    assert out[0]["start"] == 10.0 and out[-1]["end"] == 22.0
    assert all(w["repaired"] for w in out)


def test_trailing_pile_on_the_last_slot_takes_in_its_neighbour():
    # The last words collapse onto the piece's end: no gap is left after their neighbour, so the
    # neighbour's time is shared with them.
    words = [_word("a", 0.0, 1.0), _word("b", 1.0, 4.0), _word("c", 4.0, 4.0), _word("d", 4.0, 4.0)]
    out = spread_piled_words(words, 0.0, 4.0)
    _assert_sound(out, 0.0, 4.0)
    assert out[0] == {**words[0], "repaired": False}
    assert [w["repaired"] for w in out] == [False, True, True, True]
    assert out[1]["start"] == 1.0 and out[-1]["end"] == 4.0


def test_overlapping_words_are_moved_after_their_predecessor():
    words = [_word("a", 0.0, 2.0), _word("b", 1.0, 3.0), _word("c", 3.5, 4.0)]
    out = spread_piled_words(words, 0.0, 5.0)
    _assert_sound(out, 0.0, 5.0)
    assert (out[1]["start"], out[1]["end"], out[1]["repaired"]) == (2.0, 3.0, True)
    assert out[2]["repaired"] is False


def test_no_audio_leaves_words_at_the_span_start():
    out = spread_piled_words([_word("a", 1.0, 1.0), _word("b", 1.0, 1.0)], 1.0, 1.0)
    assert [(w["start"], w["end"]) for w in out] == [(1.0, 1.0), (1.0, 1.0)]
    assert spread_piled_words([], 0.0, 1.0) == []
    with pytest.raises(ValueError):
        spread_piled_words([], 2.0, 1.0)


def test_sound_words_are_untouched_and_flags_are_kept():
    words = [_word("a", 0.0, 0.5), {**_word("b", 0.5, 0.9), "repaired": True}]
    out = spread_piled_words(words, 0.0, 1.0)
    assert out == [{**words[0], "repaired": False}, words[1]]
    assert "repaired" not in words[0]  # the input is left alone


@pytest.mark.parametrize("seed", range(30))
def test_any_monotone_slots_come_out_sound(seed):
    import random

    rng = random.Random(seed)
    n = rng.randint(1, 40)
    hi = rng.choice([0.5, 3.0, 30.0])
    # Slot times on an 80 ms grid, many repeated, as a weak aligner gives them.
    slots = sorted(rng.choice([0.0, 0.08, 0.16, hi / 2, hi]) for _ in range(2 * n))
    words = [_word("w" * rng.randint(1, 8), slots[2 * k], slots[2 * k + 1]) for k in range(n)]
    out = spread_piled_words(words, 0.0, hi)
    _assert_sound(out, 0.0, hi)
    changed = sum(1 for a, b in zip(words, out) if (a["start"], a["end"]) != (b["start"], b["end"]))
    assert sum(w["repaired"] for w in out) == changed
