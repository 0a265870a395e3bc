"""The ASR actor: one vLLM Qwen3-ASR engine per actor, several Ray batches in flight.

Ray Data runs `__call__` as a coroutine (async UDF) with up to `max_in_flight_batches` batches at
once per actor, and every chunk of every row becomes its own engine request, so the engine's
scheduler always has a queue to batch from while Ray fetches the next block.

Two error tiers: a row the engine rejects becomes an error value on that row; a dead engine
kills the actor process, Ray starts a new actor and retries the batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.io.schema import SEGMENT, column_lists, waveforms, with_columns
from pipeline.languages import language_name

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# The audio front end needs a minimum amount of signal; the reference implementation pads
# chunks shorter than this with silence.
MIN_CHUNK_S = 0.5
# Languages written without spaces between words: chunk texts are joined without a separator.
_UNSPACED = {"chinese", "japanese", "cantonese", "thai", "zh", "ja", "yue", "th"}


def join_texts(texts: list[str], language: str | None) -> str:
    sep = "" if (language or "").lower() in _UNSPACED else " "
    return sep.join(t.strip() for t in texts if t and t.strip())


def merge_languages(languages: list[str | None], durations: list[float]) -> str | None:
    """The language spoken longest across chunks; chunks without speech do not vote."""
    totals: dict[str, float] = {}
    for lang, dur in zip(languages, durations):
        if lang:
            totals[lang] = totals.get(lang, 0.0) + dur
    if not totals:
        return None
    return max(totals.items(), key=lambda kv: kv[1])[0]


class BusyClock:
    """Wall time during which the engine had at least one request: the denominator of RTFx."""

    def __init__(self) -> None:
        self.active = 0
        self.since = 0.0
        self.total = 0.0
        self.reported = 0.0

    def enter(self) -> None:
        if self.active == 0:
            self.since = time.perf_counter()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.total += time.perf_counter() - self.since

    def take(self) -> float:
        now_total = self.total + (time.perf_counter() - self.since if self.active else 0.0)
        delta, self.reported = now_total - self.reported, now_total
        return delta


class AsrActor:
    def __init__(
        self,
        model: str,
        *,
        model_cache_dir: str,
        storage_options: dict | None = None,
        max_new_tokens: int = 512,
        language: str | None = None,
        context: str = "",
        engine: dict | None = None,
        max_chunk_s: float = 60.0,
        keep_audio: bool = False,
        language_hints: bool = True,
    ):
        from actors.asr_engine import AsrEngine
        from actors.model_source import resolve_model

        start = time.perf_counter()
        self.model_name = model
        local = resolve_model(model, model_cache_dir, storage_options)
        engine = dict(engine or {})
        extra = engine.pop("extra", {}) or {}
        # The engine sizes its encoder cache for the longest chunk it will be sent.
        self.engine = AsrEngine(
            local,
            max_new_tokens=max_new_tokens,
            max_audio_s=max_chunk_s,
            engine_kwargs=extra,
            **engine,
        )
        self.language = language
        self.language_hints = language_hints
        self.context = context
        # The aligner stage after this one needs the waveform again.
        self.keep_audio = keep_audio
        self.clock = BusyClock()
        self.ready_at = time.time()  # wall clock: benchmarks measure throughput from here
        logger.info("ASR engine for %s ready in %.1fs", model, time.perf_counter() - start)

    async def _one_chunk(self, audio: np.ndarray, context: str, language: str | None) -> dict:
        from actors.asr_engine import EngineDeadError, RowError

        if len(audio) < MIN_CHUNK_S * SAMPLE_RATE:
            audio = np.pad(audio, (0, int(MIN_CHUNK_S * SAMPLE_RATE) - len(audio)))
        self.clock.enter()
        try:
            return await self.engine.transcribe(audio, context=context, language=language)
        except EngineDeadError:
            raise
        except RowError as e:
            return {"error": f"engine_error: {e}"}
        finally:
            self.clock.leave()

    async def _one_row(self, samples: np.ndarray, bounds: np.ndarray, context: str, language: str | None):
        pairs = bounds.reshape(-1, 2)
        results = await asyncio.gather(
            *(self._one_chunk(samples[s:e], context, language) for s, e in pairs)
        )
        return pairs, results

    async def __call__(self, batch: pa.Table) -> pa.Table:
        from actors.asr_engine import EngineDeadError

        n = batch.num_rows
        flat, offsets = waveforms(batch)
        chunks_col = batch.column("chunks").combine_chunks()
        error_stage, error, hints, contexts = column_lists(batch, "error_stage", "error", "language_hint", "context")
        if not self.language_hints:
            hints = [None] * n

        jobs: dict[int, Any] = {}
        for i in range(n):
            if error[i] is not None:
                continue
            samples = flat[offsets[i] : offsets[i + 1]]
            bounds = chunks_col[i].values.to_numpy()
            try:
                language = language_name(self.language or hints[i] or None)
            except ValueError as e:
                # Forcing a language the model does not know would only produce garbage.
                error_stage[i], error[i] = "asr", f"unsupported_language: {e}"
                continue
            context = contexts[i] if contexts[i] is not None else self.context
            jobs[i] = self._one_row(samples, bounds, context, language)
        try:
            done = await asyncio.gather(*jobs.values())
        except EngineDeadError:
            # Exit hard so Ray restarts the actor and retries the batch; a half-dead engine
            # would fail every later batch.
            logger.error("vLLM engine died; exiting the actor so Ray replaces it")
            os._exit(1)

        text: list[str | None] = [None] * n
        language_out: list[str | None] = [None] * n
        segments: list[list[dict] | None] = [None] * n
        asr_s: list[float | None] = [None] * n
        for i, (pairs, results) in zip(jobs.keys(), done):
            failures = [r["error"] for r in results if "error" in r]
            if failures:
                error_stage[i], error[i] = "asr", failures[0]
                continue
            segs = []
            for (s, e), r in zip(pairs, results):
                segs.append(
                    {
                        "start": s / SAMPLE_RATE,
                        "end": e / SAMPLE_RATE,
                        "text": r["text"],
                        "language": r["language"],
                    }
                )
            durations = [(e - s) / SAMPLE_RATE for s, e in pairs]
            language_out[i] = merge_languages([r["language"] for r in results], durations)
            text[i] = join_texts([r["text"] for r in results], language_out[i])
            segments[i] = segs
            asr_s[i] = float(sum(r["engine_s"] for r in results))

        busy = [0.0] * n
        if n:
            busy[0] = self.clock.take()
        spent = ["chunks", "error_stage", "error"] + ([] if self.keep_audio else ["samples"])
        out = batch.drop_columns(spent)
        columns = {
            "language": pa.array(language_out, pa.string()),
            "text": pa.array(text, pa.string()),
            "segments": pa.array(segments, pa.list_(SEGMENT)),
            # The chunks stay in their own column: the aligner turns `segments` into sentences.
            "asr_chunks": pa.array(segments, pa.list_(SEGMENT)),
            "model": pa.array([self.model_name] * n, pa.string()),
            "asr_s": pa.array(asr_s, pa.float64()),
            "engine_busy_s": pa.array(busy, pa.float64()),
            "engine_ready_at": pa.array([self.ready_at] * n, pa.float64()),
            "error_stage": pa.array(error_stage, pa.string()),
            "error": pa.array(error, pa.string()),
        }
        return with_columns(out, columns)
