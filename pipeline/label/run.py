"""The labeling job: unlabeled audio in, a filtered training set out.

  manifest -> decode -> ASR -> aligner -> [score] -> plan utterances + cheap signals (CPU)
  -> [agreement model on the candidates] -> decide, cut and write kept audio (CPU)
  -> results/ + failed/ (one row per recording) + utterances/ (one row per utterance, kept or not)
  -> dataset/ (kept, audio embedded) + train.jsonl (kept, Qwen3-ASR fine-tuning format) + metrics.json

Recordings are accounted for as in the transcribe job (read == results + failed); utterances as
planned == utterances/ rows, and kept == dataset/ rows == train.jsonl lines.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.expressions import col

from pipeline.align.subtitle_stage import SUBTITLES_DIR
from pipeline.output.stage import FILE_FORMATS
from pipeline.config import LabelJobConfig
from pipeline.io import storage
from pipeline.label.quality import reason_key
from pipeline.label.stage import (
    AUDIO_DIR,
    DATASET_DIR,
    JSONL_FILE,
    UTTERANCES_DIR,
    explode_utterances,
    finetune_line,
    finish_batch,
    plan_batch,
)  # fmt: skip
from pipeline.report.page import write_report
from pipeline.report.progress import ProgressReporter
from pipeline.score.metrics import collect_metrics, print_summary
from pipeline.transcribe import (
    FAILED_DIR,
    LIGHT_CPUS,
    METRICS_FILE,
    RESULTS_DIR,
    AccountingError,
    RunResult,
    accounting,
    actor_gpus,
    actor_pool,
    build_pipeline,
    engine_cpus,
    engine_options,
    fail_duplicate_ids,
    raise_if_unbalanced,
    read_manifest,
    restarts,
    write_format_files,
    write_rows,
    write_subtitle_files,
)  # fmt: skip

logger = logging.getLogger(__name__)


def build_label_pipeline(cfg: LabelJobConfig, manifest: ray.data.Dataset) -> ray.data.Dataset:
    engines = 3 if cfg.agreement.enabled else 2
    ds = build_pipeline(cfg, manifest, keep_audio=True, engines=engines)
    ds = ds.map_batches(
        plan_batch,
        fn_kwargs={"segment": cfg.segment.model_dump(), "filter": cfg.filter.model_dump()},
        batch_format="pyarrow",
        batch_size=cfg.asr.batch_size,
        num_cpus=LIGHT_CPUS,
    )
    if cfg.agreement.enabled:
        from actors.agreement_actor import AgreementActor

        a = cfg.agreement
        gpus = actor_gpus(a.gpus_per_actor, round(1.0 / engines, 3))
        ds = ds.map_batches(
            AgreementActor,
            fn_constructor_kwargs={
                "model": a.model,
                "model_cache_dir": a.model_cache_dir,
                "storage_options": dict(cfg.input.storage_options),
                "max_new_tokens": a.max_new_tokens,
                "language": a.language,
                "context": a.context,
                "engine": engine_options(a.engine, gpus),
                # Candidates are at most segment.max_s long plus their padding.
                "max_chunk_s": cfg.segment.max_s + 2 * cfg.segment.pad_s,
            },
            batch_format="pyarrow",
            batch_size=a.batch_size,
            compute=actor_pool(a.pool.min_size, a.pool.max_size, a.max_in_flight_batches),
            **restarts(a.pool),
            num_gpus=gpus,
            num_cpus=engine_cpus(a.cpus_per_actor, engines),
        )
    return ds.map_batches(
        finish_batch,
        fn_kwargs={
            "filter": cfg.filter.model_dump(),
            "output_path": cfg.output.path,
            "audio_format": cfg.export.audio_format,
            "storage_options": dict(cfg.output.storage_options),
        },
        batch_format="pyarrow",
        batch_size=cfg.asr.batch_size,
        num_cpus=LIGHT_CPUS,
        max_retries=3,
    )


def _write_table(ds: ray.data.Dataset, uri: str, storage_options: dict) -> int:
    count = ds.count()
    if count:
        fs, path = storage.arrow_fs(uri, storage_options)
        ds.write_parquet(path, filesystem=fs)
    return count


def _write_jsonl(kept: ray.data.Dataset, uri: str, storage_options: dict) -> int:
    """One file, streamed from the driver batch by batch (bounded memory at any corpus size)."""
    fs, path = storage.fsspec_fs(uri, storage_options)
    lines = 0
    with fs.open(path, "w", encoding="utf-8") as f:
        for batch in kept.select_columns(["audio_path", "text", "language"]).iter_batches(
            batch_format="pyarrow", batch_size=4096
        ):
            for audio_path, text, language in zip(*(batch.column(c).to_pylist() for c in batch.column_names)):
                f.write(finetune_line(audio_path, text, language) + "\n")
                lines += 1
    return lines


def _label_summary(utterances: ray.data.Dataset | None) -> dict:
    counts: Counter = Counter()
    reasons: Counter = Counter()
    kept_s = 0.0
    wers = []
    columns = ["kept", "reject_reasons", "duration_s", "agreement_wer"]
    batches = utterances.select_columns(columns).iter_batches(batch_format="pyarrow", batch_size=8192) if utterances else []
    for batch in batches:
        for kept, why, duration, wer in zip(*(batch.column(c).to_pylist() for c in columns)):
            counts["kept" if kept else "rejected"] += 1
            if kept:
                kept_s += duration
            for key in sorted({reason_key(r) for r in why or []}):
                reasons[key] += 1
            if wer is not None:
                wers.append(wer)
    return {
        "utterances": counts["kept"] + counts["rejected"],
        "kept": counts["kept"],
        "rejected": counts["rejected"],
        # An utterance rejected for two reasons counts under both.
        "rejected_by_reason": dict(sorted(reasons.items())),
        "kept_audio_s": kept_s,
        "kept_hours": kept_s / 3600,
        "agreement_wer_mean": sum(wers) / len(wers) if wers else None,
    }


def run_label(cfg: LabelJobConfig) -> RunResult:
    started = time.time()
    phase: dict[str, float] = {}
    out, so = cfg.output.path, cfg.output.storage_options

    t = time.perf_counter()
    manifest, _ = fail_duplicate_ids(read_manifest(cfg).materialize())
    manifest = manifest.materialize()
    rows_read = manifest.count()
    phase["read_manifest_s"] = time.perf_counter() - t
    logger.info("manifest: %d recordings", rows_read)

    if cfg.output.overwrite:
        for name in (RESULTS_DIR, FAILED_DIR, UTTERANCES_DIR, DATASET_DIR, AUDIO_DIR, JSONL_FILE, SUBTITLES_DIR, *FILE_FORMATS):
            storage.remove_prefix(storage.join(out, name), so)

    t = time.perf_counter()
    progress = ProgressReporter(rows_read, cfg.progress.interval_s)
    processed = progress.materialize(build_label_pipeline(cfg, manifest))
    progress.finish()
    phase["process_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ok = processed.filter(expr=col("error").is_null())
    rows_written = write_rows(ok, storage.join(out, RESULTS_DIR), so)
    rows_failed = write_rows(processed.filter(expr=col("error").is_not_null()), storage.join(out, FAILED_DIR), so)
    raise_if_unbalanced(accounting(rows_read, rows_written, rows_failed))

    planned = int(ok.map_batches(_count_utterances, batch_format="pyarrow").sum("n") or 0) if rows_written else 0
    utterances = ok.map_batches(explode_utterances, batch_format="pyarrow").materialize() if rows_written else None
    written = _write_table(utterances, storage.join(out, UTTERANCES_DIR), so) if utterances is not None else 0
    if written != planned:
        raise AccountingError(f"utterances planned ({planned}) != utterances written ({written})")
    summary = _label_summary(utterances)
    exported: dict[str, int] = {}
    if cfg.export.dataset and summary["kept"]:
        kept = ok.map_batches(explode_utterances, fn_kwargs={"kept_only": True, "with_audio": True}, batch_format="pyarrow")
        exported["dataset_rows"] = _write_table(kept, storage.join(out, DATASET_DIR), so)
    if cfg.export.jsonl and summary["kept"]:
        kept_rows = utterances.filter(expr=col("kept"))
        exported["jsonl_lines"] = _write_jsonl(kept_rows, storage.join(out, JSONL_FILE), so)
    for name, count in exported.items():
        if count != summary["kept"]:
            raise AccountingError(f"utterances kept ({summary['kept']}) != {name} ({count})")
    subtitle_files = write_subtitle_files(cfg, ok) if cfg.output.subtitle_formats and rows_written else 0
    output_files = write_format_files(cfg, storage.join(out, RESULTS_DIR)) if cfg.output.file_formats and rows_written else 0
    phase["write_s"] = time.perf_counter() - t

    metrics = collect_metrics(
        cfg, processed, rows_read=rows_read, rows_written=rows_written, rows_failed=rows_failed,
        wall_s=time.time() - started, phases=phase, subtitle_files=subtitle_files,
    )  # fmt: skip
    metrics["job"] = "label"
    metrics["output_files"] = output_files
    metrics["progress"] = progress.samples()
    metrics["accounting"] = accounting(rows_read, rows_written, rows_failed)
    metrics["label"] = {
        **summary,
        **exported,
        "agreement_model": cfg.agreement.model if cfg.agreement.enabled else None,
        "agreement_engine_busy_s": float(processed.sum("agreement_busy_s") or 0.0) if cfg.agreement.enabled else None,
    }
    storage.write_json(storage.join(out, METRICS_FILE), metrics, so)
    write_report(out, metrics, so)
    print_summary(metrics)
    s = metrics["label"]
    print(
        f"utterances {s['utterances']}: kept {s['kept']} ({s['kept_audio_s']:.1f} s), rejected {s['rejected']}"
        + ("".join(f"\n  {k} x{v}" for k, v in s["rejected_by_reason"].items())),
        flush=True,
    )
    return RunResult(rows_read, rows_written, rows_failed, metrics)


def _count_utterances(batch: pa.Table) -> pa.Table:
    lengths = pc.list_value_length(batch.column("utterances")).fill_null(0)
    return pa.table({"n": lengths.cast(pa.int64())})

