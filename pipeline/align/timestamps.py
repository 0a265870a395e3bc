"""From the forced aligner's slot classes to word timestamps (pure Python, no model).

The aligner predicts one class per ``<timestamp>`` slot, two slots per unit (start, end);
class x ``timestamp_segment_time`` (80 ms for Qwen3-ForcedAligner-0.6B) is the time in seconds
from the start of the aligned audio. Predictions are not always monotone: the longest
non-decreasing subsequence is kept and the other slots are interpolated between kept neighbours.
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
    non-decreasing starts (each chunk's words already are; this guards the seams)."""
    out: list[dict] = []
    prev_start = 0.0
    for w in words:
        start, end = float(w["start"]), float(w["end"])
        start = prev_start if math.isnan(start) else start
        end = start if math.isnan(end) else end
        start = min(max(start, prev_start, 0.0), duration_s)
        end = min(max(end, start), duration_s)
        prev_start = start
        out.append({"text": w["text"], "start": start, "end": end})
    return out
