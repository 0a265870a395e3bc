"""The scheduled ETL run: transcribe what arrived under a prefix since the last committed run.

Layout under the ETL root (`output.path`):

  _etl/lock.json                         the run lock (pipeline/etl/lock.py) while a run is active
  _etl/runs/<run_id>.parquet             one committed record per run (pipeline/etl/record.py)
  date=YYYY-MM-DD/run=<run_id>/          one partition per run, the transcribe job's output:
      manifest.jsonl results/ failed/ [subtitles/] metrics.json _SUCCESS

One run, under the lock:
  1. recover: delete partitions without a committed record (a run that crashed or failed before
     its commit; their files were never recorded, so this run takes them again), and write a
     missing `_SUCCESS` where a run committed but died before writing it;
  2. list the prefix, subtract the committed records: the new files (oldest first, capped);
  3. write the partition's manifest, run the transcribe pipeline into the partition;
  4. confirm the lock is still ours, write the run record (the commit), then `_SUCCESS`.
Readers take only partitions with `_SUCCESS` (`committed_partitions`).
"""

from __future__ import annotations

import json
import logging
import posixpath
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pipeline.etl.config import EtlConfig
from pipeline.etl.lock import RunLock, open_store
from pipeline.etl.record import (
    ETL_DIR,
    DoneSet,
    SourceFile,
    list_source,
    load_done,
    record_bytes,
    record_uri,
    select_new,
)
from pipeline.io import storage
from pipeline.redact import redact_url

if TYPE_CHECKING:
    from pipeline.config import JobConfig
    from pipeline.transcribe import RunResult

logger = logging.getLogger(__name__)

LOCK_FILE = "lock.json"
MANIFEST_FILE = "manifest.jsonl"
SUCCESS_FILE = "_SUCCESS"
FAILED_DIR = "failed"  # the transcribe job's failed rows (pipeline.transcribe.FAILED_DIR)


# Left-out files named in a run's record (all are counted).
LEFT_OUT_NAMED = 100


class EtlError(RuntimeError):
    """The run cannot be committed (its partition stays an orphan for the next run to remove)."""


@dataclass
class EtlResult:
    status: str  # done | nothing_new | busy
    run_id: str
    partition: str | None = None
    files_listed: int = 0
    files_done_before: int = 0
    files_new: int = 0
    files_deferred: int = 0  # new, left for later runs by max_files_per_run
    rows_written: int = 0
    rows_failed: int = 0
    holder: dict | None = None  # busy: who holds the lock
    took_over: dict | None = None  # the stale holder this run replaced
    orphans_removed: list[str] = field(default_factory=list)
    files_left_out: list[dict] = field(default_factory=list)  # {"path", "reason"} the source filter passed over


# What runs the transcription: pipeline.transcribe.run, after the caller has connected to Ray.
Transcribe = Callable[["JobConfig"], "RunResult"]


def new_run_id(now: float) -> str:
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def partition_uri(root: str, run_id: str) -> str:
    date = datetime.strptime(run_id[:8], "%Y%m%d").strftime("%Y-%m-%d")
    return storage.join(root, f"date={date}", f"run={run_id}")


def committed_partitions(root: str, storage_options: dict | None = None) -> list[str]:
    """URIs of the partitions readers should read: those with `_SUCCESS`, oldest run first."""
    fs, path = storage.fsspec_fs(root, storage_options)
    fs.invalidate_cache(path)
    markers = fs.glob(storage.join(path.rstrip("/"), "date=*", "run=*", SUCCESS_FILE))
    scheme = root.split("://", 1)[0] + "://" if "://" in root else ""
    parts = [scheme + posixpath.dirname(m) for m in markers]
    return sorted(parts, key=lambda p: p.rsplit("run=", 1)[-1])


def run_etl(cfg: EtlConfig, transcribe: Transcribe) -> EtlResult:
    """One scheduled run. `transcribe(job_config)` runs the pipeline (pipeline.transcribe.run)."""
    started = time.time()
    root = cfg.output.path
    so = cfg.output_storage_options
    run_id = new_run_id(started)
    store, lock_path = open_store(storage.join(root, ETL_DIR, LOCK_FILE), so)
    lock = RunLock(
        store, lock_path, run_id=run_id, stale_after_s=cfg.lock.stale_after_s,
        heartbeat_s=cfg.lock.heartbeat_s, poll_s=cfg.lock.poll_s,
    )  # fmt: skip
    if not lock.acquire(cfg.lock.wait_s):
        return EtlResult("busy", run_id, holder=lock.holder)
    try:
        result = EtlResult("done", run_id, took_over=lock.took_over)
        done = load_done(root, so, track_changes=cfg.source.track_changes)
        result.orphans_removed = _recover(root, so, done)
        left_out: list[dict] = []
        listed = list_source(cfg.source, skip_under=root, left_out=left_out)
        new, deferred = select_new(listed, done, cfg.source)
        result.files_listed, result.files_new, result.files_deferred = len(listed), len(new), deferred
        result.files_left_out = left_out
        if left_out:
            logger.warning(
                "%s: %d file(s) not processed by the source filter, e.g. %s",
                cfg.source.prefix, len(left_out), "; ".join(f"{f['path']} ({f['reason']})" for f in left_out[:5]),
            )  # fmt: skip
        result.files_done_before = len(listed) - len(new) - deferred
        logger.info(
            "%s: %d audio files listed, %d already processed, %d new this run%s",
            cfg.source.prefix, len(listed), result.files_done_before, len(new),
            f", {deferred} left for later runs (source.max_files_per_run)" if deferred else "",
        )  # fmt: skip
        if not new:
            result.status = "nothing_new"
            return result
        result.partition = partition = partition_uri(root, run_id)
        logger.info("run %s writes %s", run_id, partition)
        manifest = storage.join(partition, MANIFEST_FILE)
        _write_manifest(manifest, new, so)

        t = time.perf_counter()
        outcome = transcribe(cfg.job_config(manifest, partition))
        transcribe_s = time.perf_counter() - t
        failed = _failed_rows(partition, so)
        _check_accounting(new, outcome, failed)
        result.rows_written, result.rows_failed = outcome.rows_written, outcome.rows_failed

        summary = {
            "run_id": run_id,
            "partition": partition,
            "source": redact_url(cfg.source.prefix),  # the record is read by anyone with the output
            "host": socket.gethostname(),
            "started_at": _iso(started),
            "committed_at": None,
            "transcribe_s": round(transcribe_s, 3),
            "files_listed": len(listed),
            "files_new": len(new),
            "files_deferred": deferred,
            # Files under the prefix the source filter passed over, and why (the first ones by name).
            "files_left_out": len(left_out),
            "left_out": left_out[:LEFT_OUT_NAMED],
            "rows_written": outcome.rows_written,
            "rows_failed": outcome.rows_failed,
            "audio_s": (outcome.metrics or {}).get("audio_s"),
            "took_over": lock.took_over,
        }
        if left_out:
            _note_left_out(partition, so, summary)
        # The commit. Confirming first means a run that was (wrongly) judged dead and replaced
        # learns it here, before recording files the new holder may be processing too.
        lock.confirm()
        summary["committed_at"] = _iso(time.time())
        data = record_bytes(new, failed, summary)
        rec_store, rec_path = open_store(record_uri(root, run_id), so)
        if rec_store.create(rec_path, data) is None:
            raise EtlError(f"a record for run {run_id} exists already")
        storage.write_json(storage.join(partition, SUCCESS_FILE), summary, so)
        logger.info(
            "run %s committed: %d results, %d failed rows in %s",
            run_id, outcome.rows_written, outcome.rows_failed, partition,
        )  # fmt: skip
        return result
    finally:
        lock.release()


def _note_left_out(partition: str, storage_options: dict, summary: dict) -> None:
    """Add the source files this run's filter passed over to the partition's metrics.json and
    report.html (the job wrote both without knowing the source listing), so whoever reads the
    run's report sees them. A report that cannot be remade is logged, never a failed run."""
    from pipeline.report.page import write_report
    from pipeline.transcribe import METRICS_FILE

    uri = storage.join(partition, METRICS_FILE)
    try:
        metrics = storage.read_json(uri, storage_options)
    except FileNotFoundError:
        return
    metrics["etl"] = {k: summary[k] for k in ("run_id", "files_listed", "files_new", "files_deferred", "files_left_out", "left_out")}
    storage.write_json(uri, metrics, storage_options)
    write_report(partition, metrics, storage_options)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _write_manifest(uri: str, files: list[SourceFile], storage_options: dict) -> None:
    fs, path = storage.fsspec_fs(uri, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    # The relative path is the row id: unique within the prefix, stable across runs, and what
    # the record keys on.
    lines = [json.dumps({"id": f.path, "audio": f.uri}) for f in files]
    fs.pipe_file(path, ("\n".join(lines) + "\n").encode())


def _failed_rows(partition: str, storage_options: dict) -> dict[str, str]:
    """id -> "stage: error" of the rows the run wrote to failed/."""
    import io

    import pyarrow.parquet as pq

    fs, path = storage.fsspec_fs(storage.join(partition, FAILED_DIR), storage_options)
    fs.invalidate_cache(path)
    names = fs.glob(storage.join(path, "*.parquet"))
    failed = {}
    for blob in (fs.cat(names) if names else {}).values():
        cols = pq.read_table(io.BytesIO(blob), columns=["id", "error_stage", "error"]).to_pydict()
        for row_id, stage, error in zip(cols["id"], cols["error_stage"], cols["error"]):
            failed[row_id] = f"{stage}: {error}"
    return failed


def _check_accounting(new: list[SourceFile], outcome, failed: dict[str, str]) -> None:
    if outcome.rows_read != len(new) or outcome.rows_written + outcome.rows_failed != len(new):
        raise EtlError(
            f"the run read {outcome.rows_read} rows and wrote {outcome.rows_written} + "
            f"{outcome.rows_failed} failed for {len(new)} files"
        )
    unknown = set(failed) - {f.path for f in new}
    if len(failed) != outcome.rows_failed or unknown:
        raise EtlError(
            f"failed/ holds {len(failed)} rows ({sorted(unknown)[:5]} unknown), expected {outcome.rows_failed}"
        )


def _recover(root: str, storage_options: dict, done: DoneSet) -> list[str]:
    """Remove partitions no record commits; finish the `_SUCCESS` of a run that committed.

    Safe under the lock: the only run that could be writing a partition is this one, or one that
    lost the lock and so can no longer commit. Every run does this before its own commit, so only
    the latest committed runs can lack `_SUCCESS`: those are the ones checked.
    """
    fs, path = storage.fsspec_fs(root, storage_options)
    path = path.rstrip("/")
    # Everything: a child listing cached by this process (the partition written before a crash)
    # would make the recursive removal below miss files another writer added.
    fs.invalidate_cache()
    scheme = root.split("://", 1)[0] + "://" if "://" in root else ""
    removed = []
    for part in fs.glob(storage.join(path, "date=*", "run=*")):
        run_id = part.rsplit("run=", 1)[-1]
        if run_id in done.run_ids:
            continue
        logger.warning(
            "removing %s: its run never committed (crashed or failed); its files go to this run", scheme + part
        )
        fs.rm(part, recursive=True)
        removed.append(scheme + part)
        _remove_empty_dir(fs, posixpath.dirname(part))
    committed = [s for s in done.summaries.values() if s.get("partition")]
    latest = sorted(committed, key=lambda s: s.get("committed_at") or "")[-3:]
    for summary in latest:
        marker = storage.join(summary["partition"], SUCCESS_FILE)
        mfs, mpath = storage.fsspec_fs(marker, storage_options)
        if not mfs.exists(mpath):
            logger.info("run %s committed without _SUCCESS (it stopped right after); writing it", summary["run_id"])
            storage.write_json(marker, summary, storage_options)
    return removed


def _remove_empty_dir(fs, path: str) -> None:
    # Object stores have no empty folders; a local date=... folder would otherwise stay behind.
    try:
        if not fs.ls(path):
            fs.rmdir(path)
    except (FileNotFoundError, OSError):
        pass
