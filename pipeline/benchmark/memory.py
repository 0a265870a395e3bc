"""Peak resident memory of the driver and of Ray's worker processes, sampled while work runs."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.driver_mb``, ``m.worker_mb`` (largest single
    worker), ``m.workers_total_mb`` (all workers at once)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.driver_mb = self.worker_mb = self.workers_total_mb = 0.0
        self._stop = threading.Event()
        self._me = psutil.Process()

    def _workers(self) -> list[psutil.Process]:
        procs = []
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
            except (psutil.Error, TypeError):
                continue
            if "ray::" in (p.info["name"] or "") or cmd.startswith("ray::") or "default_worker.py" in cmd:
                procs.append(p)
        return procs

    def sample(self) -> None:
        mb = 1024 * 1024
        self.driver_mb = max(self.driver_mb, self._me.memory_info().rss / mb)
        total = 0.0
        for p in self._workers():
            try:
                rss = p.memory_info().rss / mb
            except psutil.Error:
                continue
            total += rss
            self.worker_mb = max(self.worker_mb, rss)
        self.workers_total_mb = max(self.workers_total_mb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
