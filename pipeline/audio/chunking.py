"""Split a long recording into engine-sized chunks at quiet points.

Follows the qwen-asr reference (cut at the quietest 100 ms window near the length limit) with one
difference: the reference searches +-5 s around the limit and so can overshoot it; here the search
is only *before* the limit, so no chunk is ever longer than `max_chunk_s` and the engine's length
budget (max_num_batched_tokens, aligner input cap) holds for every chunk.
"""

from __future__ import annotations

import numpy as np


def plan_chunks(
    samples: np.ndarray,
    sample_rate: int,
    max_chunk_s: float,
    *,
    search_s: float = 5.0,
    window_s: float = 0.1,
) -> list[tuple[int, int]]:
    """Return contiguous (start, end) sample ranges that cover [0, len(samples)) exactly.

    Each chunk is at most `max_chunk_s` long. Where a recording must be cut, the cut is placed at
    the centre of the lowest-energy (RMS) `window_s` window within `search_s` before the limit;
    among equally quiet windows the latest wins, which keeps chunks (and so engine requests) few.
    A recording no longer than `max_chunk_s` is one chunk; an empty one gives no chunks.

    Offsets are kept true: chunks shorter than 0.5 s (the model's minimum input) are padded by the
    engine caller, not here, so that timestamps map back to the recording without correction.
    """
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_chunk_s <= 0:
        raise ValueError(f"max_chunk_s must be positive, got {max_chunk_s}")
    if search_s < 0 or window_s <= 0:
        raise ValueError(f"need search_s >= 0 and window_s > 0, got {search_s}, {window_s}")

    total = int(samples.shape[0])
    max_len = max(1, int(max_chunk_s * sample_rate))
    if total == 0:
        return []
    if total <= max_len:
        return [(0, total)]

    search = int(search_s * sample_rate)
    win = max(1, int(window_s * sample_rate))
    chunks: list[tuple[int, int]] = []
    start = 0
    while total - start > max_len:
        limit = start + max_len
        boundary = _quietest_cut(samples, max(start, limit - search), limit, win)
        # A cut at the chunk's first sample would make no progress.
        boundary = max(boundary, start + 1)
        chunks.append((start, boundary))
        start = boundary
    chunks.append((start, total))
    return chunks


def _quietest_cut(samples: np.ndarray, left: int, right: int, win: int) -> int:
    """Centre of the lowest-energy `win`-sample window lying wholly in [left, right)."""
    if right - left < win:
        return right
    # float64 cumulative energy: float32 would lose the small differences between quiet windows
    # once a few seconds of speech have been summed.
    seg = samples[left:right].astype(np.float64)
    energy = np.concatenate(([0.0], np.cumsum(seg * seg)))
    window_energy = energy[win:] - energy[:-win]  # window_energy[i] covers seg[i : i + win]
    # Take the latest of the quietest windows. Cumsum differences carry rounding noise, so two
    # digitally silent windows may differ by ~1e-13; "equal" therefore means within a tolerance.
    floor = window_energy.min()
    quiet = np.flatnonzero(window_energy <= floor + 1e-9 * max(1.0, energy[-1]))
    best = int(quiet[-1])
    return left + best + win // 2
