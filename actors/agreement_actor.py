"""The agreement actor: a second Qwen3-ASR engine that transcribes each candidate utterance.

Used by the labeling job after the utterances are planned: every utterance that no cheaper
signal already rejected becomes one engine request, and its text is compared with the first
model's. A second model agreeing is the best label-quality signal short of a human, and the
cheap checks first keep the second model's cost on the utterances that may be kept.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pyarrow as pa

from actors.asr_actor import SAMPLE_RATE, AsrActor
from pipeline.io.schema import UTTERANCE, column_lists, waveforms, with_columns
from pipeline.languages import language_name

logger = logging.getLogger(__name__)


class AgreementActor(AsrActor):
    def __init__(self, model: str, **kwargs):
        super().__init__(model, keep_audio=True, **kwargs)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        from actors.asr_engine import EngineDeadError

        n = batch.num_rows
        flat, offsets = waveforms(batch)
        utterances, errors, hints, contexts = column_lists(batch, "utterances", "error", "language_hint", "context")

        requests = {}
        for i in range(n):
            if errors[i] is not None or not utterances[i]:
                continue
            samples = flat[offsets[i] : offsets[i + 1]]
            # The first model already refused unknown hints, so this cannot raise here.
            language = language_name(self.language or hints[i] or None)
            context = contexts[i] if contexts[i] is not None else self.context
            for k, u in enumerate(utterances[i]):
                if u["reasons"]:
                    continue
                audio = samples[int(round(u["start"] * SAMPLE_RATE)) : int(round(u["end"] * SAMPLE_RATE))]
                requests[(i, k)] = self._one_chunk(audio, context, language)
        try:
            results = await asyncio.gather(*requests.values())
        except EngineDeadError:
            logger.error("vLLM engine died; exiting the actor so Ray replaces it")
            os._exit(1)
        for (i, k), result in zip(requests.keys(), results):
            u = utterances[i][k]
            if "error" in result:
                u["reasons"].append(f"agreement_error: {result['error']}")
            else:
                u["agreement_text"] = result["text"]
                u["agreement_language"] = result["language"]

        busy = [0.0] * n
        if n:
            busy[0] = self.clock.take()
        return with_columns(
            batch,
            {
                "utterances": pa.array(utterances, pa.list_(UTTERANCE)),
                "agreement_busy_s": pa.array(busy, pa.float64()),
                "agreement_ready_at": pa.array([self.ready_at] * n, pa.float64()),
            },
        )
