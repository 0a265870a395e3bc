"""GPU machines only: the same engine code on CUDA vLLM, with a fractional GPU share."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.engine]


def test_engine_on_gpu_with_half_the_memory(tiny_asr_dir):
    from actors.asr_engine import AsrEngine

    engine = AsrEngine(tiny_asr_dir, max_new_tokens=8, gpu_memory_utilization=0.4, max_model_len=2048, max_audio_s=30)
    try:
        rng = np.random.default_rng(0)
        clips = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3)]
        results = asyncio.run(_all(engine, clips))
    finally:
        engine.shutdown()
    assert len(results) == 3
    assert all(isinstance(r["text"], str) and r["engine_s"] > 0 for r in results)


async def _all(engine, clips):
    return await asyncio.gather(*(engine.transcribe(c) for c in clips))
