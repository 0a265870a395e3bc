"""Progress in the driver's log (what `ray job logs` shows): rows done of the total, audio hours,
throughput over the last interval, ETA.

The driver takes the committed stage's output as a stream of block references instead of one
``materialize()``: nothing of the rows comes to the driver. Each block's rows, failed rows and
audio seconds come from a zero-CPU task beside it (three numbers back). The references are kept,
so at the end they are the materialized dataset that the metrics and the subtitle writer read
(rows with their segments and words: too much to collect on the driver, which holds only a
reference per block).

A row counts as done when it is committed, i.e. ``output.rows_per_file`` rows at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import ray

logger = logging.getLogger(__name__)

# Samples kept for the report's throughput plot; beyond this every other one is dropped, so a
# job of any length keeps at most this many.
MAX_SAMPLES = 512


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressReporter:
    """Counts committed rows and audio seconds; logs a line at most every ``interval_s`` seconds
    (and, from ``start_heartbeat``, at least that often while the job runs), and a final one.

    ``clock`` and ``log`` are injectable so the arithmetic can be checked without waiting."""

    def __init__(
        self,
        total_rows: int,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.total_rows = total_rows
        self.interval_s = interval_s
        self._clock = clock
        self._log = log or logger.info
        self._lock = threading.Lock()
        self._start = clock()
        self.rows = 0
        self.failed = 0
        self.audio_s = 0.0
        self._first_done: tuple[float, int] | None = None  # (time, rows) at the first commit
        self._last_line = (self._start, 0, 0.0)  # (time, rows, audio_s) at the last line
        self._samples: list[tuple[float, int, float]] = [(0.0, 0, 0.0)]
        self._stride = 1  # record every n-th update (doubles whenever the samples are thinned)
        self._updates = 0

    def add(self, rows: int, audio_s: float, failed: int = 0) -> None:
        """Rows just committed (``failed`` of them to failed/) and their audio seconds."""
        with self._lock:
            now = self._clock()
            self.rows += rows
            self.failed += failed
            self.audio_s += audio_s
            if self._first_done is None and rows:
                self._first_done = (now, self.rows)
            self._updates += 1
            if self._updates % self._stride == 0:
                self._record(now)
            if now - self._last_line[0] >= self.interval_s:
                self._emit(now)

    def tick(self) -> None:
        """A line if one is due, whether or not rows came in since (the heartbeat's call)."""
        with self._lock:
            now = self._clock()
            if now - self._last_line[0] >= self.interval_s:
                self._emit(now)

    def finish(self) -> None:
        with self._lock:
            now = self._clock()
            self._record(now)
            self._emit(now, final=True)

    def samples(self) -> list[list[float]]:
        """``[seconds since start, rows done, audio seconds done]`` over the run (for the report)."""
        with self._lock:
            return [[round(t, 3), r, round(a, 3)] for t, r, a in self._samples]

    def line(self, now: float, *, final: bool = False) -> str:
        elapsed = now - self._start
        last_t, last_rows, last_audio = self._last_line
        window = now - last_t
        pct = f" ({100 * self.rows / self.total_rows:.1f}%)" if self.total_rows else ""
        parts = [
            f"progress: {self.rows}/{self.total_rows} rows{pct}, {self.failed} failed",
            f"audio {self.audio_s / 3600:.3f} h",
        ]
        if final:
            rate = self.rows / elapsed if elapsed > 0 else 0.0
            parts.append(f"average {rate:.2f} rows/s, {self.audio_s / elapsed if elapsed > 0 else 0.0:.1f} audio s/s")
            parts.append(f"done in {_clock_text(elapsed)}")
        else:
            rows_rate = (self.rows - last_rows) / window if window > 0 else 0.0
            audio_rate = (self.audio_s - last_audio) / window if window > 0 else 0.0
            parts.append(f"last {window:.0f} s: {rows_rate:.2f} rows/s, {audio_rate:.1f} audio s/s")
            parts.append(f"elapsed {_clock_text(elapsed)}, ETA {_clock_text(self.eta(now))}")
            if self.rows == 0:  # the first minute of a job on a cold cluster: say why nothing moves
                parts[-1] += " (no row done yet: engines loading)"
        return "; ".join(parts)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first commit (model loading and warm-up excluded),
        or since the start when only one commit came so far; None before any."""
        remaining = self.total_rows - self.rows
        if remaining <= 0:
            return 0.0
        if self._first_done is None:
            return None
        t0, rows0 = self._first_done
        if self.rows > rows0 and now > t0:
            rate = (self.rows - rows0) / (now - t0)
        else:
            rate = self.rows / (now - self._start) if now > self._start else 0.0
        return remaining / rate if rate > 0 else None

    def _emit(self, now: float, *, final: bool = False) -> None:
        self._log(self.line(now, final=final))
        self._last_line = (now, self.rows, self.audio_s)

    def _record(self, now: float) -> None:
        sample = (now - self._start, self.rows, self.audio_s)
        if self._samples[-1][1:] == sample[1:] and len(self._samples) > 1:
            self._samples[-1] = sample
        else:
            self._samples.append(sample)
        if len(self._samples) > MAX_SAMPLES:
            # Thin to every other sample, keeping the first and the latest.
            self._samples = self._samples[:-1:2] + [self._samples[-1]]
            self._stride *= 2

    def start_heartbeat(self) -> Callable[[], None]:
        """A daemon thread that calls ``tick`` every interval, so lines keep coming while no row
        is committed (engines loading, a long file filling); returns the function that stops it."""
        if self.interval_s <= 0:
            return lambda: None
        stop = threading.Event()

        def beat() -> None:
            # Wake when the next line is due, counted from the last one (an add() may have
            # written it), so lines come about every interval, not up to two apart.
            while not stop.wait(max(0.1, self._last_line[0] + self.interval_s - self._clock())):
                self.tick()

        thread = threading.Thread(target=beat, name="progress", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=5)

        return halt

    def materialize(self, ds: ray.data.Dataset) -> ray.data.MaterializedDataset:
        """Run ``ds`` (the committed stage's output), counting its rows as their blocks arrive;
        returns it materialized, as ``ds.materialize()`` would."""
        refs: list = []
        pending: dict = {}  # stats tasks not yet counted, in arrival order
        rows_before = self.rows
        stop = self.start_heartbeat()
        try:
            for bundle in ds.iter_internal_ref_bundles():
                for entry, part in zip(bundle.blocks, bundle.slices):
                    ref = entry.ref
                    if part is not None and part.num_rows != entry.metadata.num_rows:
                        # A bundle may hand out part of a block; only that part is this output.
                        ref = _slice_block.remote(ref, part.start_offset, part.end_offset)
                    refs.append(ref)
                    pending[_block_stats.remote(ref)] = None
                pending = self._collect(pending, timeout=0)
            self._collect(pending, timeout=None)
        finally:
            stop()
        if self.rows == rows_before:
            # Empty blocks may carry no schema; later stages look for the output columns.
            from pipeline.io.schema import conform

            return ray.data.from_arrow(conform(pa.table({})))
        return ray.data.from_arrow_refs(refs)

    def _collect(self, pending: dict, *, timeout: float | None) -> dict:
        if not pending:
            return pending
        ready, rest = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for rows, failed, audio_s in ray.get(ready):
            self.add(rows, audio_s, failed)
        return dict.fromkeys(rest)


def _arrow(block) -> pa.Table:
    if isinstance(block, pa.Table):
        return block
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_arrow()


@ray.remote(num_cpus=0)
def _slice_block(block, start: int, end: int) -> pa.Table:
    return _arrow(block).slice(start, end - start)


# Zero CPUs: the job's stages hold the cluster's cores, and a count must not wait behind them.
@ray.remote(num_cpus=0)
def _block_stats(block) -> tuple[int, int, float]:
    """(rows, failed rows, audio seconds of the rows without an error) of one committed block."""
    block = _arrow(block)
    n = block.num_rows
    names = block.column_names
    failed = pc.is_valid(block.column("error")) if "error" in names else pa.array([False] * n)
    audio = 0.0
    if "duration_s" in names and n:
        ok = pc.invert(failed)
        audio = float(pc.sum(pc.filter(block.column("duration_s"), ok)).as_py() or 0.0)
    return n, int(pc.sum(failed.cast(pa.int64())).as_py() or 0), audio
