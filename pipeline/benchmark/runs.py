"""The measurements. Each returns plain numbers; jobs/benchmark.py puts them side by side."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import pyarrow.compute as pc
import ray

from pipeline.benchmark.corpus import BenchFile
from pipeline.benchmark.decoders import decode_all, time_loop

SAMPLE_RATE = 16000


def decoder_speeds(decoders: dict[str, Callable], files: Sequence[BenchFile]) -> dict[str, dict]:
    """Per decoder, per (format, rate): audio seconds decoded per second of one core.

    The decoders take turns on each kind, in an order that rotates from kind to kind, so a drift
    in the machine's speed over the minutes of the run falls on all of them alike."""
    kinds: dict[tuple[str, int], list[BenchFile]] = defaultdict(list)
    for f in files:
        kinds[(f.format, f.sample_rate)].append(f)
    names = list(decoders)
    per_kind: dict[str, dict[str, float]] = {name: {} for name in names}
    seconds_total = dict.fromkeys(names, 0.0)
    audio_total = 0.0
    for k, ((fmt, rate), group) in enumerate(sorted(kinds.items())):
        audio = sum(f.duration_s for f in group)
        audio_total += audio
        for name in names[k % len(names) :] + names[: k % len(names)]:
            seconds, _ = time_loop(decoders[name], [f.path for f in group])
            per_kind[name][f"{fmt}@{rate}"] = audio / seconds
            seconds_total[name] += seconds
    return {
        name: {
            "per_kind": per_kind[name],
            "seconds": seconds_total[name],
            "audio_s": audio_total,
            "speed": audio_total / seconds_total[name],
        }
        for name in names
    }


def plain_loop_parallel(fn: Callable, paths: Sequence[str], processes: int, chunk: int = 8) -> float:
    """Seconds for ``processes`` plain loops to decode ``paths`` between them, handing out
    ``chunk`` files at a time so no loop idles while another has a backlog: what the machine
    itself gives from more cores (shared caches, memory bandwidth, a busy host), the ceiling for
    any pipeline's scaling."""
    from multiprocessing import get_context

    parts = [list(paths[i : i + chunk]) for i in range(0, len(paths), chunk)]
    with get_context("spawn").Pool(processes) as pool:
        pool.starmap(decode_all, [(fn, paths[:2])] * processes)  # imports, codecs
        t0 = time.perf_counter()
        for _ in pool.imap_unordered(partial(decode_all, fn), parts):
            pass
        return time.perf_counter() - t0


def _tally(block) -> tuple[int, int, float]:
    """(rows, failed rows, audio seconds of the rows that did not fail) of one output block."""
    ok = pc.is_null(block.column("error"))
    seconds = float(pc.sum(pc.if_else(ok, block.column("duration_s"), 0.0)).as_py() or 0.0)
    return block.num_rows, block.num_rows - int(pc.sum(ok).as_py() or 0), seconds


@ray.remote
def _count(*blocks) -> list[tuple[int, int, float]]:
    return [_tally(b) for b in blocks]


def _timed(rows: int, failed: int, audio: float, t0: float, first: float | None, end: float) -> dict:
    return {
        "rows": rows,
        "failed": failed,
        "audio_s": audio,
        "wall_s": end - t0,
        "first_output_s": (first - t0) if first is not None else None,
        "throughput": audio / (end - t0),
    }


def consume_blocks(ds: ray.data.Dataset) -> dict:
    """Run the decode stage to the end; the driver only takes each output block's reference.

    Waveforms stay in the object store, where the next stage of a real job reads them: pulling
    them into the driver (or adding a stage that reads them) would time that, not decoding.
    Rows, failures and audio seconds are counted from the blocks once the clock has stopped, so
    the decoded corpus must fit in the object store (64 KB per audio second).

    ``throughput`` is over the whole run; ``steady_throughput`` from the first output block to the
    last (the audio of the blocks after the first), without the executor's start-up: Ray Data
    plans the run, and its resource reservation starts the stage with one task and adds the
    others as the first finishes (on 2 cores the second core's first batch began as the first
    task ended, about a second in). A job over a corpus pays that once; a benchmark pass of
    seconds would count it as a fifth of its time.
    """
    t0 = time.perf_counter()
    first = None
    refs: list = []
    first_blocks = 0
    for bundle in ds.iter_internal_ref_bundles():
        if first is None:
            first = time.perf_counter()
            first_blocks = len(bundle.block_refs)
        refs += bundle.block_refs
    end = time.perf_counter()
    tallies = ray.get(_count.remote(*refs)) if refs else []
    rows, failed, audio = (sum(t[i] for t in tallies) for i in range(3))
    out = _timed(rows, failed, float(audio), t0, first, end)
    after_first = sum(t[2] for t in tallies[first_blocks:])
    window = end - first if first is not None else 0.0
    out["steady_throughput"] = after_first / window if after_first > 0 and window > 0 else None
    return out


def consume(ds: ray.data.Dataset) -> dict:
    """Run the whole pipeline to the end, timing the whole run and the part after the first
    engine was ready (its start-up is not the pipeline's speed; a long job pays it once).

    Its output rows carry no waveform, so they come to the driver as they are.
    """
    t0 = time.perf_counter()
    wall0 = time.time()
    ready_at = None
    first = None
    audio = 0.0
    rows = failed = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if first is None:
            first = time.perf_counter()
        n, bad, seconds = _tally(batch)
        rows, failed, audio = rows + n, failed + bad, audio + seconds
        if "engine_ready_at" in batch.column_names:
            r = pc.min(batch.column("engine_ready_at")).as_py()
            if r is not None:
                ready_at = r if ready_at is None else min(ready_at, r)
    end = time.perf_counter()
    after_ready_s = (end - t0) - (ready_at - wall0) if ready_at is not None else None
    return {
        **_timed(rows, failed, audio, t0, first, end),
        "engine_start_s": (ready_at - wall0) if ready_at is not None else None,
        "throughput_after_engine_start": audio / after_ready_s if after_ready_s and after_ready_s > 0 else None,
    }


def vad_cost(paths: Sequence[str], rounds: int = 3) -> dict:
    """Decode-stage speed on one core with speech detection on and off, same files, same process.

    Each file is decoded and resampled (pipeline/audio/decode.py), then run through Silero VAD
    (pipeline/audio/vad.py); the best of ``rounds`` passes of each part counts. Returns audio
    seconds, seconds per part, and audio seconds per second of one core without and with VAD.
    """
    from pipeline.audio.decode import decode_audio
    from pipeline.audio.vad import detect_speech

    decoded = [decode_audio(p).samples for p in paths]  # warm: codecs loaded, files cached
    detect_speech(decoded[0])  # warm: the ONNX session built
    audio = sum(len(x) for x in decoded) / SAMPLE_RATE
    decode_s = vad_s = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for p in paths:
            decode_audio(p)
        decode_s = min(decode_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for x in decoded:
            detect_speech(x)
        vad_s = min(vad_s, time.perf_counter() - t0)
    return {
        "audio_s": audio,
        "decode_s": decode_s,
        "vad_s": vad_s,
        "decode_per_core_vad_off": audio / decode_s,
        "decode_per_core_vad_on": audio / (decode_s + vad_s),
        "vad_alone_per_core": audio / vad_s,
    }


def direct_engine(model_path: str, asr_cfg, engine_options: dict, clips: list[np.ndarray], concurrency: int) -> dict:
    """The ASR engine called in a loop on pre-decoded 16 kHz audio, ``concurrency`` requests in flight.

    Passes alternate between plain requests and requests that ask for the chosen tokens'
    log-probabilities (what confidence costs), two of each on the same warm engine; the faster pass
    of each kind counts. ``throughput`` is the plain one, ``throughput_logprobs`` the other.
    """
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

            async def one(clip: np.ndarray, logprobs: bool) -> None:
                async with gate:
                    await engine.transcribe(clip, logprobs=logprobs)

            best = {False: float("inf"), True: float("inf")}
            for logprobs in (False, True, False, True):
                t0 = time.perf_counter()
                await asyncio.gather(*(one(c, logprobs) for c in clips))
                best[logprobs] = min(best[logprobs], time.perf_counter() - t0)
        finally:
            engine.shutdown()
        audio = sum(len(c) for c in clips) / SAMPLE_RATE
        return {
            "audio_s": audio, "seconds": best[False], "throughput": audio / best[False], "start_s": engine.start_s,
            "seconds_logprobs": best[True], "throughput_logprobs": audio / best[True],
            "logprobs_cost": best[True] / best[False] - 1,
        }  # fmt: skip

    return asyncio.run(run())
