"""How one recording is aligned: which audio goes with which text, and how words are stitched.

A recording is aligned span by span. A span is a piece of audio with its own text:
- after ASR, each ASR chunk with the text recognised in it (the chunks are already cut at quiet
  points and no longer than ``asr.max_chunk_s``), so the texts need no guessing;
- in the align-only job, the whole recording with the manifest's text.

A span longer than the aligner's limit is cut again at quiet points (:func:`plan_chunks`), and
its text must be shared out between the pieces. That is done one piece at a time: the piece gets
the words its share of the remaining time predicts, plus a margin; the aligner places them; the
words it puts before the piece's end are kept and the rest carry over to the next piece (the last
piece takes all that remain). Words the audio does not contain are placed at the very end of the
piece by the aligner, so a word starting in the piece's last time slot is taken as one that
belongs to the next piece.

Times are shifted by the piece's offset and clamped into the piece, so the words of successive
pieces never overlap and starts never decrease across cuts. Once a piece's words are chosen (the
carry-over above reads the aligner's raw slots), words it left with no time are spread over the
gaps around them within the piece (:func:`pipeline.align.timestamps.spread_piled_words`), so a
piece's words cover the piece instead of piling up on one of its slots.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.align.timestamps import slots_to_words, spread_piled_words
from pipeline.align.units import Unit
from pipeline.audio.chunking import plan_chunks

SAMPLE_RATE = 16000
# Extra words offered to a piece beyond its time share (speech rate varies along a recording).
WORD_MARGIN = 1.5
WORD_MARGIN_MIN = 8

# (audio of one piece, its units) -> (slot classes, seconds per class)
AlignCall = Callable[[np.ndarray, Sequence[Unit]], Awaitable[tuple[list[int], float]]]


@dataclass(frozen=True)
class Span:
    """A stretch of a recording, in samples, and the text spoken in it."""

    start: int
    end: int
    text: str


def spans_for_row(num_samples: int, text: str | None, segments: Sequence[dict] | None) -> list[Span]:
    """ASR segments (``{"start", "end", "text"}`` in seconds) as spans, or the whole recording."""
    if segments:
        spans = []
        for seg in segments:
            start = min(num_samples, max(0, round(float(seg["start"]) * SAMPLE_RATE)))
            end = min(num_samples, max(start, round(float(seg["end"]) * SAMPLE_RATE)))
            spans.append(Span(start, end, seg.get("text") or ""))
        return spans
    return [Span(0, num_samples, text or "")]


async def align_span(
    samples: np.ndarray,
    span: Span,
    units: Sequence[Unit],
    align: AlignCall,
    max_chunk_s: float,
) -> list[dict]:
    """Word timestamps (seconds from the start of the recording) for ``units`` spoken in ``span``:
    ``[{"text", "start", "end", "repaired"}]``, ``start < end`` for every word unless the span has
    no audio."""
    if not units:
        return []
    pieces = plan_chunks(samples[span.start : span.end], SAMPLE_RATE, max_chunk_s)
    if not pieces:  # no audio at all: the words have no time to take
        t = span.start / SAMPLE_RATE
        return [{"text": u.text, "start": t, "end": t} for u in units]
    words: list[dict] = []
    remaining = list(units)
    for k, (p_start, p_end) in enumerate(pieces):
        if not remaining:
            break
        a, b = span.start + p_start, span.start + p_end
        last = k == len(pieces) - 1
        if last:
            offered = remaining
        else:
            share = (p_end - p_start) / (span.end - a)  # of the time that is left
            n = math.ceil(len(remaining) * share * WORD_MARGIN) + WORD_MARGIN_MIN
            offered = remaining[: min(len(remaining), n)]
        classes, segment_time_s = await align(samples[a:b], offered)
        placed = slots_to_words(
            offered, classes, segment_time_s, offset_s=a / SAMPLE_RATE, duration_s=b / SAMPLE_RATE
        )
        if not last:
            # Slot times are multiples of segment_time_s: the margin keeps a start in the last
            # slot from passing the comparison by a rounding error.
            cut = b / SAMPLE_RATE - segment_time_s - 1e-6
            kept = 0
            while kept < len(placed) and placed[kept]["start"] < cut:
                kept += 1
            placed = placed[:kept]
        words.extend(spread_piled_words(placed, a / SAMPLE_RATE, b / SAMPLE_RATE))
        remaining = remaining[len(placed) :]
    return words
