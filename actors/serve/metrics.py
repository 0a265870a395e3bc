"""Prometheus metrics through Ray's metrics export (each node's metrics agent; names get Ray's
``ray_`` prefix there): requests by route and status, audio seconds, request latency, and each
engine replica's busy share."""

from __future__ import annotations

# Seconds; requests range from a short clip (tens of ms) to hour-long recordings.
LATENCY_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]


class ApiMetrics:
    """The API deployment's metrics (created in the replica: ray.util.metrics needs a worker)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.requests = Counter(
            "asr_requests_total", description="Requests answered, by route and HTTP status", tag_keys=("route", "status")
        )
        self.audio = Counter("asr_audio_seconds_total", description="Seconds of audio transcribed", tag_keys=("route",))
        self.latency = Histogram(
            "asr_request_latency_seconds", description="Time from request to answer",
            boundaries=LATENCY_BOUNDARIES, tag_keys=("route",),
        )  # fmt: skip

    def record(self, route: str, status: int, seconds: float, audio_s: float = 0.0) -> None:
        self.requests.inc(1, tags={"route": route, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})
        if audio_s > 0:
            self.audio.inc(audio_s, tags={"route": route})


class BusyGauge:
    """An engine replica's busy share: wall time with at least one request in the engine, over
    the time since the previous reading (0..1), from the batch actors' BusyClock."""

    def __init__(self, engine: str) -> None:
        import time

        from ray.util.metrics import Gauge

        from actors.asr_actor import BusyClock

        self.clock = BusyClock()
        self._gauge = Gauge("asr_engine_busy_share", description="Share of time the engine had work", tag_keys=("engine",))
        self._tags = {"engine": engine}
        self._time = time.perf_counter
        self._last = self._time()

    def update(self) -> float:
        now = self._time()
        share = min(1.0, self.clock.take() / max(1e-9, now - self._last))
        self._last = now
        self._gauge.set(share, tags=self._tags)
        return share
