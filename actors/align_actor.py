"""The aligner actor: one vLLM Qwen3-ForcedAligner engine per actor, several Ray batches in flight.

Runs after the ASR actor (transcribe job, aligning each ASR chunk with the text recognised in it)
or straight after decoding (align job, aligning the manifest's text). Every piece of audio is one
engine request; all pieces of all rows in a batch are in flight together.

Per row, one of:
- ``words`` = the units of the text with times (``[]`` for a text with no words), every word with
  ``end > start`` (piled-up slots spread, those words marked ``repaired``), and ``segments`` =
  those words cut into sentences (pipeline/align/sentences.py); the ASR chunks the words were
  aligned in stay in ``asr_chunks``;
- ``words = null`` and ``align_skip_reason`` set: the language is one the aligner does not
  support; the row keeps its transcript and is not an error;
- an error on the row (``error_stage = "align"``): no text to align (align job), a language tag
  that names no language (``unsupported_language``, naming the tag), or the engine rejected the
  input. A dead engine kills the actor so Ray replaces it and retries the batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from actors.asr_actor import BusyClock
from actors.asr_confidence import carry_confidences, mean_log_confidence
from pipeline.align.plan import Span, align_span, spans_for_row
from pipeline.align.sentences import sentence_segments
from pipeline.align.timestamps import enforce_invariants, spread_piled_words
from pipeline.align.units import Unit, build_aligner_text, resolve_language, split_units
from pipeline.io.schema import SEGMENT, WORD, column_lists, waveforms, with_columns
from pipeline.languages import language_name

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AlignActor:
    def __init__(
        self,
        model: str,
        *,
        model_cache_dir: str,
        storage_options: dict | None = None,
        engine: dict | None = None,
        max_chunk_s: float = 180.0,
        language: str | None = None,
        text_column: str = "text",
        keep_audio: bool = False,
        sentences: dict | None = None,
    ):
        from actors.align_engine import AlignEngine
        from actors.model_source import resolve_model

        start = time.perf_counter()
        self.model_name = model
        local = resolve_model(model, model_cache_dir, storage_options)
        engine = dict(engine or {})
        extra = engine.pop("extra", {}) or {}
        self.engine = AlignEngine(local, max_audio_s=max_chunk_s, engine_kwargs=extra, **engine)
        self.max_chunk_s = max_chunk_s
        self.language = language
        # "text": align the ASR transcript (transcribe job); "reference": the manifest's text.
        self.text_column = text_column
        # The labeling job cuts utterance audio after this stage.
        self.keep_audio = keep_audio
        # max_pause_s / max_duration_s of sentence segments (AlignConfig.sentences).
        self.sentences = dict(sentences or {})
        self.clock = BusyClock()
        logger.info("aligner engine for %s ready in %.1fs", model, time.perf_counter() - start)

    async def _one_row(self, samples: np.ndarray, spans: list[Span], language: str | None):
        """(words per span, engine seconds summed over this row's requests)."""
        engine_s = 0.0

        async def align(audio: np.ndarray, units: Sequence[Unit]) -> tuple[list[int], float]:
            nonlocal engine_s
            self.clock.enter()
            try:
                result = await self.engine.align(audio, build_aligner_text(units))
            finally:
                self.clock.leave()
            engine_s += result["engine_s"]
            return result["slot_classes"], result["segment_time_s"]

        parts = await asyncio.gather(
            *(
                align_span(samples, span, split_units(span.text, language), align, self.max_chunk_s)
                for span in spans
            )
        )
        return parts, engine_s

    async def __call__(self, batch: pa.Table) -> pa.Table:
        from actors.align_engine import EngineDeadError, RowError

        n = batch.num_rows
        flat, offsets = waveforms(batch)
        texts, chunks, segments, languages, hints, durations, error_stage, error = column_lists(
            batch, self.text_column, "asr_chunks", "segments", "language", "language_hint", "duration_s", "error_stage", "error"
        )
        if self.text_column != "text":  # the align job's own text has no ASR chunks to follow
            chunks = [None] * n
        else:  # rows from before asr_chunks existed carry their chunks in segments only
            chunks = [c if c is not None else s for c, s in zip(chunks, segments)]
        segments_out = list(segments)

        words: list[list[dict] | None] = [None] * n
        skip: list[str | None] = [None] * n
        language_out = list(languages)
        align_s: list[float | None] = [None] * n
        jobs: dict[int, Any] = {}
        for i in range(n):
            if error[i] is not None:
                continue
            text = texts[i]
            if text is None:
                error_stage[i], error[i] = "align", "missing_text: the row has no text to align"
                continue
            tag = self.language or languages[i] or hints[i]
            try:
                language_name(tag)
            except ValueError as e:
                # A tag that names no language is the manifest's mistake: the row fails, naming it
                # (a known language the aligner lacks is only skipped, below).
                error_stage[i], error[i] = "align", f"unsupported_language: {e}"
                continue
            name, reason = resolve_language(text, tag)
            if reason is not None:
                skip[i] = reason
                continue
            if language_out[i] is None:
                language_out[i] = name
            samples = flat[offsets[i] : offsets[i + 1]]
            jobs[i] = self._one_row(samples, spans_for_row(len(samples), text, chunks[i]), name)

        results = await asyncio.gather(*jobs.values(), return_exceptions=True)
        for i, result in zip(jobs.keys(), results):
            if isinstance(result, EngineDeadError):
                # Exit hard so Ray restarts the actor and retries the batch.
                logger.error("vLLM aligner engine died; exiting the actor so Ray replaces it")
                os._exit(1)
            if isinstance(result, RowError):
                error_stage[i], error[i] = "align", f"engine_error: {result}"
            elif isinstance(result, BaseException):  # a bug must fail its row, not the batch
                error_stage[i], error[i] = "align", f"align_error: {type(result).__name__}: {result}"
            else:
                parts, engine_s = result
                duration = float(durations[i] or 0.0)
                if self.text_column == "text":  # each ASR chunk's word confidences onto its aligned words
                    chunk_words = [(c or {}).get("words") for c in (chunks[i] or [])]
                    parts = [
                        carry_confidences(part, chunk_words[k] if k < len(chunk_words) else None)
                        for k, part in enumerate(parts)
                    ]
                flat_words = [w for part in parts for w in part]
                # Pieces are repaired one by one; this guards the seams between them.
                words[i] = spread_piled_words(enforce_invariants(flat_words, duration), 0.0, duration)
                # Each word's language: the one its ASR chunk detected, else the row's.
                chunk_languages = [(c or {}).get("language") for c in (chunks[i] or [])] or [None]
                word_languages = [
                    chunk_languages[k] if k < len(chunk_languages) else None for k, part in enumerate(parts) for _ in part
                ]
                segments_out[i] = [
                    dict(seg, avg_logprob=mean_log_confidence(seg["words"]))
                    for seg in sentence_segments(words[i], language=language_out[i], word_languages=word_languages, **self.sentences)
                ]
                align_s[i] = engine_s

        busy = [0.0] * n
        if n:
            busy[0] = self.clock.take()
        spent = ("chunks",) if self.keep_audio else ("samples", "chunks")
        out = batch.drop_columns([c for c in spent if c in batch.column_names])
        columns = {
            "words": pa.array(words, pa.list_(WORD)),
            "segments": pa.array(segments_out, pa.list_(SEGMENT)),
            "align_s": pa.array(align_s, pa.float64()),
            "align_skip_reason": pa.array(skip, pa.string()),
            "align_busy_s": pa.array(busy, pa.float64()),
            "language": pa.array(language_out, pa.string()),
            "error_stage": pa.array(error_stage, pa.string()),
            "error": pa.array(error, pa.string()),
        }
        if self.text_column != "text":  # align job: the aligned transcript is the row's text
            columns["text"] = pa.array(texts, pa.string())
            columns["model"] = pa.array([self.model_name] * n, pa.string())
        return with_columns(out, columns)
