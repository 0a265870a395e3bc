"""From the forced aligner's slot classes to word timestamps (pure Python, no model).

The aligner predicts one class per ``<timestamp>`` slot, two slots per unit (start, end);
class x ``timestamp_segment_time`` (80 ms for Qwen3-ForcedAligner-0.6B) is the time in seconds
from the start of the aligned audio. Predictions are not always monotone: the longest
non-decreasing subsequence is kept and the other slots are interpolated between kept neighbours.

Even monotone slots can give words no time: the aligner often puts the start and end of a word,
or of several neighbouring words, in one slot (on long inputs the trailing words of a piece pile up
on its last slots). :func:`spread_piled_words` then gives each such word a share of the time
between its sound neighbours, in proportion to its length in characters, and marks it
``repaired``; every word then has ``end > start`` and no word overlaps the next.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from pipeline.align.units import Unit


def _longest_non_decreasing(values: Sequence[float]) -> list[int]:
    """Indices of a longest non-decreasing subsequence, O(n log n) (patience sorting).

    Among equally long ones, the one found is the one whose elements are the smallest possible
    at every position counted from its end (the tails array's choice).
    """
    tails: list[float] = []  # tails[k]: smallest last value of a subsequence of length k+1
    tail_idx: list[int] = []  # index in values of tails[k]
    parent: list[int] = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_right(tails, v)  # bisect_right: equal values extend (non-decreasing)
        parent[i] = tail_idx[k - 1] if k > 0 else -1
        if k == len(tails):
            tails.append(v)
            tail_idx.append(i)
        else:
            tails[k] = v
            tail_idx[k] = i
    kept: list[int] = []
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        kept.append(i)
        i = parent[i]
    kept.reverse()
    return kept


def repair_monotone(values: Sequence[float]) -> list[float]:
    """Make ``values`` non-decreasing with as few changes as possible.

    A longest non-decreasing subsequence keeps its values; every other slot is replaced by linear
    interpolation (by position) between the kept slots on either side, or takes the nearest kept
    value when it lies before the first or after the last kept slot. O(n log n).

    >>> repair_monotone([0.0, 1.0, 5.0, 2.0, 3.0])
    [0.0, 1.0, 1.5, 2.0, 3.0]
    """
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        raise ValueError("repair_monotone: NaN in values")
    if not vals:
        return []
    kept = _longest_non_decreasing(vals)
    out = list(vals)
    first, last = kept[0], kept[-1]
    for i in range(first):
        out[i] = vals[first]
    for i in range(last + 1, len(vals)):
        out[i] = vals[last]
    for left, right in zip(kept, kept[1:]):
        if right - left > 1:
            lo, hi = vals[left], vals[right]
            span = right - left
            for i in range(left + 1, right):
                out[i] = lo + (hi - lo) * (i - left) / span
    return out


def slots_to_words(
    units: Sequence[Unit],
    slot_classes: Sequence[int],
    segment_time_s: float,
    *,
    offset_s: float = 0.0,
    duration_s: float,
) -> list[dict]:
    """Word timestamps from the aligner's slot classes.

    ``slot_classes`` holds two classes per unit, (start, end), in unit order (the layout of
    :func:`pipeline.align.units.build_aligner_text`). Each class is multiplied by
    ``segment_time_s``, the sequence is repaired with :func:`repair_monotone`, shifted by
    ``offset_s`` (where the aligned audio starts within the recording), and clamped to
    ``[0, duration_s]`` (``duration_s``: the recording's duration, in the same time frame as the
    shifted times). The result satisfies ``0 <= start <= end <= duration_s`` for every word and
    non-decreasing starts (and ends) across words.

    Returns ``[{"text": unit.text, "start": s, "end": e}, ...]`` in seconds.
    Raises ValueError when ``len(slot_classes) != 2 * len(units)`` or on a non-positive
    ``segment_time_s`` / negative ``duration_s``.
    """
    if len(slot_classes) != 2 * len(units):
        raise ValueError(
            f"expected 2 slots per unit: {len(units)} units need {2 * len(units)} slot classes, "
            f"got {len(slot_classes)}"
        )
    if not segment_time_s > 0:
        raise ValueError(f"segment_time_s must be > 0, got {segment_time_s!r}")
    if not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s!r}")
    times = repair_monotone([int(c) * segment_time_s for c in slot_classes])
    shifted = [
        {"text": unit.text, "start": times[2 * i] + offset_s, "end": times[2 * i + 1] + offset_s}
        for i, unit in enumerate(units)
    ]
    return enforce_invariants(shifted, duration_s)

def enforce_invariants(words: Sequence[dict], duration_s: float) -> list[dict]:
    """Clamp words stitched from several chunks to ``0 <= start <= end <= duration_s`` with
    non-decreasing starts and no word starting before the previous one ends (each chunk's words
    already hold; this guards the seams). Other keys of a word (``repaired``) are kept; a word
    whose times change here is marked ``repaired``. Returns new dicts."""
    out: list[dict] = []
    prev_start = prev_end = 0.0
    for w in words:
        start, end = float(w["start"]), float(w["end"])
        start = prev_start if math.isnan(start) else start
        end = start if math.isnan(end) else end
        new_start = min(max(start, prev_start, prev_end, 0.0), duration_s)
        new_end = min(max(end, new_start), duration_s)
        word = dict(w, start=new_start, end=new_end)
        if (new_start, new_end) != (start, end):
            word["repaired"] = True
        prev_start, prev_end = new_start, new_end
        out.append(word)
    return out


# The least time a spread word gets; a pile whose gap gives less takes in its neighbours.
MIN_WORD_S = 0.02


def _weight(text: str) -> int:
    """A word's share of a gap: its characters, punctuation and spaces not counted (at least 1)."""
    return max(1, sum(1 for ch in text if ch.isalnum()))


def spread_piled_words(
    words: Sequence[dict], lo: float, hi: float, *, min_word_s: float = MIN_WORD_S
) -> list[dict]:
    """Give words that the aligner left with no time a share of the gap around them.

    ``words``: ``[{"text", "start", "end", ...}]`` in seconds, in order, with non-decreasing times
    inside ``[lo, hi]`` (what :func:`slots_to_words` returns for one piece of audio spanning
    ``lo``..``hi`` seconds). A word is *piled* when ``end <= start`` (zero length) or it starts
    before the previous word ends (its start is first moved to that end). Each maximal run of
    piled words is spread over the gap between its sound neighbours: from the previous sound
    word's end (else ``lo``) to the next sound word's start (else ``hi``), each word taking a
    share in proportion to its length in characters (letters and digits; punctuation is
    silent), back to back in order. Where that gap gives less than ``min_word_s`` per word, the
    run takes in its longer sound neighbour and spreads over its time too, until the gap suffices
    or ``lo``..``hi`` is used up.

    Returns new dicts with ``"repaired"``: True for every word whose times changed, else the
    word's own flag (False when absent). Afterwards ``lo <= start < end <= hi`` for every word and
    ``start >= previous end``, unless ``hi - lo`` is zero (no audio: the words keep ``lo``).
    Raises ValueError when ``hi < lo``.
    """
    if hi < lo:
        raise ValueError(f"spread_piled_words: hi ({hi}) < lo ({lo})")
    out = [dict(w, repaired=bool(w.get("repaired", False))) for w in words]
    n = len(out)
    prev_end = lo
    for w in out:
        start = min(max(float(w["start"]), prev_end, lo), hi)
        end = min(max(float(w["end"]), start), hi)
        if (start, end) != (w["start"], w["end"]):
            w["start"], w["end"], w["repaired"] = start, end, True
        prev_end = end
    piled = [w["end"] <= w["start"] for w in out]
    i = 0
    while i < n:
        if not piled[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and piled[j + 1]:
            j += 1
        i, j = _widen(out, i, j, lo, hi, min_word_s)
        left = out[i - 1]["end"] if i > 0 else lo
        right = out[j + 1]["start"] if j + 1 < n else hi
        weights = [_weight(str(w["text"])) for w in out[i : j + 1]]
        total, acc = sum(weights), 0
        for k, weight in zip(range(i, j + 1), weights):
            start = left + (right - left) * acc / total
            acc += weight
            end = right if k == j else left + (right - left) * acc / total
            out[k]["start"], out[k]["end"], out[k]["repaired"] = start, end, True
        i = j + 1
    return out


def _widen(words: list[dict], i: int, j: int, lo: float, hi: float, min_word_s: float) -> tuple[int, int]:
    """Grow the run ``i..j`` by its longer sound neighbour while its gap is too short for it."""
    n = len(words)
    while True:
        left = words[i - 1]["end"] if i > 0 else lo
        right = words[j + 1]["start"] if j + 1 < n else hi
        if right - left >= min_word_s * (j - i + 1) or (i == 0 and j == n - 1):
            return i, j
        before = words[i - 1]["end"] - words[i - 1]["start"] if i > 0 else -1.0
        after = words[j + 1]["end"] - words[j + 1]["start"] if j + 1 < n else -1.0
        if before >= after:
            i -= 1
        else:
            j += 1
