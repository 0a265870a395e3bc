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

from actors.asr_guards import NO_SPEECH
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


def transcript_units(text: str, language: str | None) -> list[str]:
    """The words a chunk's transcript is scored and aligned by: the forced aligner's units
    (pipeline/align/units.py; script based for a language it does not handle)."""
    from pipeline.align.units import split_units

    try:
        return [u.text for u in split_units(text, language)]
    except ValueError:
        return [u.text for u in split_units(text, None)]


def row_language_probability(
    language: str | None, languages: list[str | None], probabilities: list[float | None], durations: list[float]
) -> float | None:
    """A row's ``language_probability``: over the chunks that detected a language, the
    duration-weighted mean of each chunk's probability for the row's language, where a chunk that
    detected another language counts 0 (its answer gave that language, not this one). None when
    the row has no language or no chunk reported a probability."""
    if language is None:
        return None
    total = weighted = 0.0
    seen = False
    for lang, p, d in zip(languages, probabilities, durations):
        if not lang:
            continue
        total += d
        if lang == language:
            if p is None:
                continue
            seen = True
            weighted += d * p
    return weighted / total if seen and total > 0 else None


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
        guards: dict | None = None,
        logprobs: bool = True,
    ):
        from actors.asr_engine import AsrEngine
        from actors.asr_guards import GuardOptions
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
        # Every chunk goes through the output guards (token budget, loops, context echo).
        self.guards = GuardOptions(**(guards or {}))
        self.logprobs = logprobs
        self.language = language
        self.language_hints = language_hints
        self.context = context
        # The aligner stage after this one needs the waveform again.
        self.keep_audio = keep_audio
        self.clock = BusyClock()
        self.ready_at = time.time()  # wall clock: benchmarks measure throughput from here
        logger.info("ASR engine for %s ready in %.1fs", model, time.perf_counter() - start)

    async def _one_chunk(
        self, audio: np.ndarray, context: str, language: str | None, speech_s: float | None = None
    ) -> dict:
        from actors.asr_engine import EngineDeadError, RowError

        if speech_s is None:  # no VAD: the whole chunk may be speech
            speech_s = len(audio) / SAMPLE_RATE
        if len(audio) < MIN_CHUNK_S * SAMPLE_RATE:
            audio = np.pad(audio, (0, int(MIN_CHUNK_S * SAMPLE_RATE) - len(audio)))
        self.clock.enter()
        try:
            return await self.engine.transcribe_guarded(
                audio, context=context, language=language, speech_s=speech_s, guards=self.guards,
                logprobs=self.logprobs, units=transcript_units,
            )  # fmt: skip
        except EngineDeadError:
            raise
        except RowError as e:
            return {"error": f"engine_error: {e}"}
        finally:
            self.clock.leave()

    async def _one_row(
        self, samples: np.ndarray, bounds: np.ndarray, context: str, language: str | None, speech: list[float] | None
    ):
        pairs = bounds.reshape(-1, 2)
        speech = speech if speech is not None and len(speech) == len(pairs) else [None] * len(pairs)
        results = await asyncio.gather(
            *(self._one_chunk(samples[s:e], context, language, sp) for (s, e), sp in zip(pairs, speech))
        )
        return pairs, results

    async def __call__(self, batch: pa.Table) -> pa.Table:
        from actors.asr_engine import EngineDeadError

        n = batch.num_rows
        flat, offsets = waveforms(batch)
        chunks_col = batch.column("chunks").combine_chunks()
        error_stage, error, hints, contexts, chunk_speech, speech_s = column_lists(
            batch, "error_stage", "error", "language_hint", "context", "chunk_speech_s", "speech_s"
        )
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
            jobs[i] = self._one_row(samples, bounds, context, language, chunk_speech[i])
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
        flags: list[list[str] | None] = [None] * n
        language_p: list[float | None] = [None] * n
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
                        # The chunk's words with their confidence; times come from the aligner.
                        "words": [{"text": w["text"], "confidence": w["confidence"]} for w in r["words"]],
                        "avg_logprob": r["avg_logprob"],
                    }
                )
            durations = [(e - s) / SAMPLE_RATE for s, e in pairs]
            languages = [r["language"] for r in results]
            language_out[i] = merge_languages(languages, durations)
            language_p[i] = row_language_probability(
                language_out[i], languages, [r["language_probability"] for r in results], durations
            )
            text[i] = join_texts([r["text"] for r in results], language_out[i])
            segments[i] = segs
            asr_s[i] = float(sum(r["engine_s"] for r in results))
            row_flags = {f for r in results for f in r["flags"]}
            if speech_s[i] is not None and not len(pairs):
                row_flags.add(NO_SPEECH)  # VAD found nothing: a result with empty text, not a failure
            flags[i] = sorted(row_flags)

        busy = [0.0] * n
        if n:
            busy[0] = self.clock.take()
        spent = ["chunks", "chunk_speech_s", "error_stage", "error"] + ([] if self.keep_audio else ["samples"])
        out = batch.drop_columns([c for c in spent if c in batch.column_names])
        columns = {
            "language": pa.array(language_out, pa.string()),
            "language_probability": pa.array(language_p, pa.float64()),
            "flags": pa.array(flags, pa.list_(pa.string())),
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
