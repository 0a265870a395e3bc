"""ProgressReporter: the arithmetic with a fake clock, and the streamed materialize on a real Ray
with a pipeline that needs no engine."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from pipeline.report.progress import MAX_SAMPLES, ProgressReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reporter(total: int, interval: float):
    clock, lines = FakeClock(), []
    return ProgressReporter(total, interval, clock=clock, log=lines.append), clock, lines


def test_lines_at_most_every_interval_with_rates_over_the_last_interval_and_eta():
    rep, clock, lines = _reporter(total=1000, interval=30)
    clock.now += 60  # engines loading: nothing committed yet
    rep.tick()
    assert len(lines) == 1 and "0/1000 rows (0.0%)" in lines[0] and "ETA ?" in lines[0]

    clock.now += 10
    rep.add(100, 3600.0)  # first commit, 10 s after the last line: no line yet
    assert len(lines) == 1
    clock.now += 20
    rep.add(100, 1800.0, failed=5)
    assert len(lines) == 2
    line = lines[-1]
    assert "200/1000 rows (20.0%), 5 failed" in line
    assert "audio 1.500 h" in line
    # 200 rows and 5400 audio s in the 30 s since the last line.
    assert "last 30 s: 6.67 rows/s, 180.0 audio s/s" in line
    # Since the first commit: 100 rows in 20 s -> 5 rows/s; 800 rows left -> 160 s.
    assert "elapsed 0:01:30, ETA 0:02:40" in line

    clock.now += 5
    rep.add(100, 0.0)
    rep.tick()
    assert len(lines) == 2  # 5 s after the last line

    clock.now += 25
    rep.tick()  # due, with or without new rows
    assert len(lines) == 3 and "300/1000 rows" in lines[-1] and "last 30 s: 3.33 rows/s" in lines[-1]


def test_final_line_and_samples():
    rep, clock, lines = _reporter(total=4, interval=3600)
    for _ in range(4):
        clock.now += 2
        rep.add(1, 5.0)
    rep.finish()
    assert len(lines) == 1
    assert re.search(r"4/4 rows \(100\.0%\), 0 failed; audio 0\.006 h; average 0\.50 rows/s, 2\.5 audio s/s; done in 0:00:08", lines[0])
    assert rep.samples() == [[0.0, 0, 0.0], [2.0, 1, 5.0], [4.0, 2, 10.0], [6.0, 3, 15.0], [8.0, 4, 20.0]]
    assert rep.eta(clock.now) == 0.0


def test_interval_zero_logs_every_commit():
    rep, clock, lines = _reporter(total=3, interval=0)
    for _ in range(3):
        rep.add(1, 1.0)
    assert len(lines) == 3


def test_samples_stay_bounded():
    rep, clock, _ = _reporter(total=10**6, interval=10**9)
    for _ in range(20 * MAX_SAMPLES):
        clock.now += 1
        rep.add(1, 1.0)
    rep.finish()
    samples = rep.samples()
    assert len(samples) <= MAX_SAMPLES + 1
    assert samples[0] == [0.0, 0, 0.0] and samples[-1][1] == 20 * MAX_SAMPLES
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)


@pytest.fixture
def ray_data(ray_session):
    return ray_session.data


def test_materialize_streams_counts_and_keeps_the_rows(ray_data):
    rows = [{"id": f"r{i}", "duration_s": 2.0, "error": None if i % 4 else "decode: not_found"} for i in range(40)]
    ds = ray_data.from_items(rows).map_batches(lambda b: b, batch_format="pyarrow", batch_size=8)
    rep, _, lines = _reporter(total=40, interval=0)
    out = rep.materialize(ds)
    assert out.count() == 40
    assert sorted(out.to_pandas()["id"]) == sorted(r["id"] for r in rows)
    assert (rep.rows, rep.failed, rep.audio_s) == (40, 10, 60.0)
    assert lines and "40/40 rows" in lines[-1]


def test_materialize_of_nothing_is_an_empty_dataset(ray_data):
    ds = ray_data.from_arrow(pa.table({"id": pa.array([], pa.string()), "error": pa.array([], pa.string())}))
    rep, _, _ = _reporter(total=0, interval=30)
    out = rep.materialize(ds.filter(lambda r: False))
    assert out.count() == 0
    assert "error" in out.schema().names


def test_a_20000_row_job_does_not_grow_the_driver(ray_data):
    import psutil

    text = "x" * 5000  # 100 MB of rows in all: on the driver it would show
    ds = ray_data.range(20_000, override_num_blocks=20).map_batches(
        lambda b: pa.table({"id": b["id"], "duration_s": pa.array([3.0] * len(b["id"])), "error": pa.nulls(len(b["id"]), pa.string()), "text": pa.array([text] * len(b["id"]))}),
        batch_format="pyarrow", batch_size=1000,
    )  # fmt: skip
    rep, _, _ = _reporter(total=20_000, interval=0)
    process = psutil.Process()
    before = process.memory_info().rss
    out = rep.materialize(ds)
    grown = process.memory_info().rss - before
    assert (rep.rows, rep.audio_s) == (20_000, 60_000.0)
    assert out.count() == 20_000
    assert grown < 40 * 2**20, f"driver grew by {grown / 2**20:.0f} MiB"
