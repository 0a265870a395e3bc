"""The engine deployments: one vLLM engine per replica, the same adapters as the batch actors.

Each method takes one piece of work (one ASR chunk, one recording's aligner spans) so that many
requests are in flight in a replica at once and vLLM batches them. A problem with the input
comes back as ``{"error": ...}`` for the API to answer 400; a dead engine fails the replica's
health check, and Serve replaces the replica.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from ray import serve

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class _EngineHealth:
    """Readiness and Serve's health check for a deployment holding ``self.engine`` (an adapter
    with ``is_dead``), ``self.model_name``, ``self.busy`` (a BusyGauge) and ``ENGINE`` (its name
    in the message)."""

    ENGINE = "vLLM engine"

    def ready(self) -> dict:
        """``{"model", "busy_share"}`` while the engine lives; raises once it is dead."""
        self.check_health()
        return {"model": self.model_name, "busy_share": round(self.busy.update(), 3)}

    def check_health(self) -> None:
        """Called by Serve every ``health_check_period_s``: raises once the engine is dead."""
        self.busy.update()
        if self.engine.is_dead:
            raise RuntimeError(f"the {self.ENGINE} is dead")


@serve.deployment(name="asr", health_check_period_s=10, health_check_timeout_s=30)
class AsrEngineDeployment(_EngineHealth):
    """Holds an :class:`actors.asr_engine.AsrEngine`."""

    def __init__(self, model: str, model_cache_dir: str, max_new_tokens: int, max_chunk_s: float, engine: dict) -> None:
        from actors.asr_engine import AsrEngine
        from actors.model_source import resolve_model
        from actors.serve.metrics import BusyGauge

        start = time.perf_counter()
        self.model_name = model
        engine = dict(engine)
        extra = engine.pop("extra", {}) or {}
        local = resolve_model(model, model_cache_dir, None)
        # The engine sizes its encoder cache for the longest chunk the API sends.
        self.engine = AsrEngine(local, max_new_tokens=max_new_tokens, max_audio_s=max_chunk_s, engine_kwargs=extra, **engine)
        self.busy = BusyGauge("asr")
        logger.info("ASR engine for %s ready in %.1fs", model, time.perf_counter() - start)

    async def transcribe(
        self, audio: np.ndarray, context: str = "", language: str | None = None, prefix: str = "", guarded: bool = False
    ) -> dict:
        """One chunk (float32 [n] at 16 kHz, at most ``max_chunk_s``), or ``{"error": message}``.

        ``guarded``: through the batch path's output guards with confidences
        (``AsrEngine.transcribe_guarded``: ``{"language", "text", "language_probability",
        "flags", ...}``); else one plain decode continuing ``prefix`` (streaming:
        ``{"language", "text", "raw", ...}``)."""
        from actors.asr_engine import RowError

        self.busy.clock.enter()
        try:
            if guarded:
                return await self.engine.transcribe_guarded(audio, context=context, language=language)
            return await self.engine.transcribe(audio, context=context, language=language, prefix=prefix)
        except RowError as e:
            return {"error": str(e)}
        finally:
            self.busy.clock.leave()


@serve.deployment(name="align", health_check_period_s=10, health_check_timeout_s=30)
class AlignEngineDeployment(_EngineHealth):
    """Holds an :class:`actors.align_engine.AlignEngine`; aligns recordings span by span as the
    batch aligner actor does (pipeline/align/plan.py)."""

    ENGINE = "vLLM aligner engine"

    def __init__(self, model: str, model_cache_dir: str, max_chunk_s: float, engine: dict) -> None:
        from actors.align_engine import AlignEngine
        from actors.model_source import resolve_model
        from actors.serve.metrics import BusyGauge

        start = time.perf_counter()
        engine = dict(engine)
        extra = engine.pop("extra", {}) or {}
        local = resolve_model(model, model_cache_dir, None)
        self.model_name = model
        self.engine = AlignEngine(local, max_audio_s=max_chunk_s, engine_kwargs=extra, **engine)
        self.max_chunk_s = max_chunk_s
        self.busy = BusyGauge("align")
        logger.info("aligner engine for %s ready in %.1fs", model, time.perf_counter() - start)

    async def align(self, samples: np.ndarray, spans: list[tuple[int, int, str]], language: str | None) -> dict:
        """Word times for a recording (float32 [n], 16 kHz) whose spans ``(start, end)`` in
        samples were recognised as ``text`` (the ASR chunks). ``language``: a model name the
        aligner supports, or None (split by script).

        Returns ``{"words": [{"text", "start", "end", "repaired"}] (seconds from the start,
        sound: start < end, in order), "align_s"}`` or ``{"error": message}``."""
        import asyncio

        from actors.align_engine import RowError
        from pipeline.align.plan import Span, align_span
        from pipeline.align.timestamps import enforce_invariants, spread_piled_words
        from pipeline.align.units import build_aligner_text, split_units

        engine_s = 0.0

        async def align(audio: np.ndarray, units: Any) -> tuple[list[int], float]:
            nonlocal engine_s
            self.busy.clock.enter()
            try:
                result = await self.engine.align(audio, build_aligner_text(units))
            finally:
                self.busy.clock.leave()
            engine_s += result["engine_s"]
            return result["slot_classes"], result["segment_time_s"]

        try:
            parts = await asyncio.gather(
                *(align_span(samples, Span(s, e, text), split_units(text, language), align, self.max_chunk_s) for s, e, text in spans)
            )
        except (RowError, ValueError) as e:
            return {"error": str(e)}
        duration = len(samples) / SAMPLE_RATE
        flat = [w for part in parts for w in part]
        # Pieces are repaired one by one; this guards the seams between them (as the batch actor).
        words = spread_piled_words(enforce_invariants(flat, duration), 0.0, duration)
        return {"words": words, "align_s": engine_s}
