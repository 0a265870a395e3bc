from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.chunking import plan_chunks

SR = 16000
LONG = Path(__file__).parent / "assets" / "speech" / "en_long_16k.flac"


def _assert_covers(chunks: list[tuple[int, int]], total: int, max_len: int) -> None:
    assert chunks[0][0] == 0
    assert chunks[-1][1] == total
    for (a, b), (c, _) in zip(chunks, chunks[1:]):
        assert b == c
    for a, b in chunks:
        assert 0 < b - a <= max_len


def _tone(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def test_short_recording_is_one_chunk() -> None:
    x = np.ones(10 * SR, dtype=np.float32)
    assert plan_chunks(x, SR, 10.0) == [(0, 10 * SR)]
    assert plan_chunks(x[:5], SR, 10.0) == [(0, 5)]


def test_empty_recording_has_no_chunks() -> None:
    assert plan_chunks(np.zeros(0, dtype=np.float32), SR, 30.0) == []


def test_cuts_at_the_silent_gap_before_the_limit() -> None:
    rng = np.random.default_rng(0)
    # 27 s noise, 0.4 s silence, 10 s noise: with a 30 s limit the cut goes in the gap.
    x = np.concatenate([_tone(27.0, rng), np.zeros(int(0.4 * SR), np.float32), _tone(10.0, rng)])
    chunks = plan_chunks(x, SR, 30.0)
    assert len(chunks) == 2
    cut = chunks[0][1]
    # The 100 ms window must lie wholly in the gap [27.0, 27.4) s; its centre is the cut.
    assert 27.0 * SR + 800 <= cut <= 27.4 * SR - 800
    # Latest of the equally silent windows: the one ending where the noise starts.
    assert cut == int(27.4 * SR) - 1600 + 800
    _assert_covers(chunks, len(x), 30 * SR)


def test_gap_after_the_limit_is_not_used() -> None:
    rng = np.random.default_rng(1)
    # Silence right after the 30 s limit must not be chosen (that chunk would be too long);
    # a quieter stretch inside the search window wins instead.
    quiet = 0.01 * rng.standard_normal(int(0.2 * SR)).astype(np.float32)
    x = np.concatenate([_tone(28.0, rng), quiet, _tone(1.9, rng),
                        np.zeros(2 * SR, np.float32), _tone(10.0, rng)])
    chunks = plan_chunks(x, SR, 30.0)
    _assert_covers(chunks, len(x), 30 * SR)
    assert 28.0 * SR + 800 <= chunks[0][1] <= 28.2 * SR - 800


def test_no_quiet_point_never_exceeds_the_limit() -> None:
    rng = np.random.default_rng(2)
    x = _tone(95.0, rng)
    chunks = plan_chunks(x, SR, 30.0)
    _assert_covers(chunks, len(x), 30 * SR)
    assert len(chunks) == 4
    # Each cut lies within the 5 s search window before its limit.
    for a, b in chunks[:-1]:
        assert b - a >= 25 * SR


def test_zero_search_cuts_exactly_at_the_limit() -> None:
    x = np.ones(25 * SR, dtype=np.float32)
    assert plan_chunks(x, SR, 10.0, search_s=0.0) == [(0, 10 * SR), (10 * SR, 20 * SR),
                                                       (20 * SR, 25 * SR)]


def test_long_speech_file_cuts_in_pauses() -> None:
    x, sr = sf.read(str(LONG), dtype="float32")
    assert sr == SR
    chunks = plan_chunks(x, sr, 12.0)
    _assert_covers(chunks, len(x), 12 * SR)
    assert len(chunks) == 4
    # Every cut lands in a pause between sentences: the 100 ms around it is digital silence.
    for _, cut in chunks[:-1]:
        assert float(np.max(np.abs(x[cut - 800 : cut + 800]))) < 1e-3


def test_rejects_bad_arguments() -> None:
    x = np.zeros(100, dtype=np.float32)
    with pytest.raises(ValueError):
        plan_chunks(np.zeros((10, 2), np.float32), SR, 1.0)
    with pytest.raises(ValueError):
        plan_chunks(x, SR, 0.0)
    with pytest.raises(ValueError):
        plan_chunks(x, 0, 1.0)


def test_an_hour_is_fast() -> None:
    rng = np.random.default_rng(3)
    # Tiling keeps the test's own set-up cheap; the planner still scans every search window.
    x = np.tile((0.1 * rng.standard_normal(7 * SR + 123)).astype(np.float32), 515)
    t0 = time.perf_counter()
    chunks = plan_chunks(x, SR, 30.0)
    elapsed = time.perf_counter() - t0
    _assert_covers(chunks, len(x), 30 * SR)
    assert elapsed < 2.0, f"{elapsed:.2f} s for one hour"
