"""The measurements. Each returns plain numbers; jobs/benchmark.py puts them side by side."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow.compute as pc
import ray

from pipeline.benchmark.corpus import BenchFile
from pipeline.benchmark.decoders import time_loop
from pipeline.transcribe import LIGHT_CPUS

SAMPLE_RATE = 16000


def decoder_speeds(decoders: dict[str, Callable], files: Sequence[BenchFile]) -> dict[str, dict]:
    """Per decoder, per (format, rate): audio seconds decoded per second of one core."""
    kinds: dict[tuple[str, int], list[BenchFile]] = defaultdict(list)
    for f in files:
        kinds[(f.format, f.sample_rate)].append(f)
    out: dict[str, dict] = {}
    for name, fn in decoders.items():
        per_kind = {}
        total_s = total_audio = 0.0
        for (fmt, rate), group in sorted(kinds.items()):
            seconds, _ = time_loop(fn, [f.path for f in group])
            audio = sum(f.duration_s for f in group)
            per_kind[f"{fmt}@{rate}"] = audio / seconds
            total_s += seconds
            total_audio += audio
        out[name] = {"per_kind": per_kind, "seconds": total_s, "audio_s": total_audio, "speed": total_audio / total_s}
    return out


def _project(batch):
    keep = [c for c in ("duration_s", "error", "engine_ready_at") if c in batch.column_names]
    return batch.select(keep)


def consume(ds: ray.data.Dataset) -> dict:
    """Run a pipeline to the end, timing the whole run and its steady part (first output to last).

    Only ``duration_s`` and ``error`` reach the driver: a light task per block reads the stage's
    output from the object store (as the next stage of a real job would) and keeps those two.
    """
    t0 = time.perf_counter()
    wall0 = time.time()
    ready_at = None
    first = None
    audio = audio_first = 0.0
    rows = failed = 0
    light = ds.map_batches(_project, batch_format="pyarrow", batch_size=None, num_cpus=LIGHT_CPUS)
    for batch in light.iter_batches(batch_format="pyarrow", batch_size=None):
        now = time.perf_counter()
        ok = pc.is_null(batch.column("error"))
        seconds = float(pc.sum(pc.if_else(ok, batch.column("duration_s"), 0.0)).as_py() or 0.0)
        if first is None:
            first, audio_first = now, seconds
        if "engine_ready_at" in batch.column_names:
            r = pc.min(batch.column("engine_ready_at")).as_py()
            if r is not None:
                ready_at = r if ready_at is None else min(ready_at, r)
        audio += seconds
        rows += batch.num_rows
        failed += batch.num_rows - int(pc.sum(ok).as_py() or 0)
    end = time.perf_counter()
    steady_s = end - first if first is not None else 0.0
    # With an engine: time from the first engine being ready (its start-up is not the
    # pipeline's speed; a long job pays it once).
    after_ready_s = (end - t0) - (ready_at - wall0) if ready_at is not None else None
    return {
        "rows": rows,
        "failed": failed,
        "audio_s": audio,
        "wall_s": end - t0,
        "first_output_s": (first - t0) if first is not None else None,
        "throughput": audio / (end - t0),
        # After the first output: engines are up, the pipeline is full.
        "steady_throughput": (audio - audio_first) / steady_s if steady_s > 0 else None,
        "engine_start_s": (ready_at - wall0) if ready_at is not None else None,
        "throughput_after_engine_start": audio / after_ready_s if after_ready_s and after_ready_s > 0 else None,
    }


def direct_engine(model_path: str, asr_cfg, engine_options: dict, clips: list[np.ndarray], concurrency: int) -> dict:
    """The ASR engine called in a loop on pre-decoded 16 kHz audio, ``concurrency`` requests in flight."""
    from actors.asr_engine import AsrEngine

    options = dict(engine_options)
    extra = options.pop("extra", {}) or {}

    async def run() -> dict:
        engine = AsrEngine(
            model_path, max_new_tokens=asr_cfg.max_new_tokens, max_audio_s=asr_cfg.max_chunk_s,
            engine_kwargs=extra, **options,
        )  # fmt: skip
        try:
            await engine.transcribe(clips[0])  # warm-up, as the pipeline's actors are warm
            gate = asyncio.Semaphore(concurrency)

            async def one(clip: np.ndarray) -> None:
                async with gate:
                    await engine.transcribe(clip)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(c) for c in clips))
            seconds = time.perf_counter() - t0
        finally:
            engine.shutdown()
        audio = sum(len(c) for c in clips) / SAMPLE_RATE
        return {"audio_s": audio, "seconds": seconds, "throughput": audio / seconds, "start_s": engine.start_s}

    return asyncio.run(run())
