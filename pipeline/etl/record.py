"""What the ETL has processed: the source listing, file identity and the committed run records.

A file's identity is (path relative to the source prefix, size, version), where version is the
object's ETag on S3 and its modification time elsewhere: the same bytes re-listed are recognised,
and a file re-uploaded under the same name (new ETag) counts as new. With
`source.track_changes: false` the identity is the path alone.

Each committed run leaves one Parquet record, `<root>/_etl/runs/<run_id>.parquet`: one row per
file it processed (identity, status ok|failed, error), the run's summary as JSON in the file's
metadata. The record is written in one conditional PUT (or a hard link locally): it exists
completely or not at all, which makes it the run's commit point. The set of processed files is the
union of all records.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.etl.config import SourceConfig
from pipeline.io import storage

ETL_DIR = "_etl"
RUNS_DIR = "runs"
RECORD_SUFFIX = ".parquet"
SUMMARY_KEY = b"etl_run"

RECORD_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # relative to source.prefix; the row id
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("version", pa.string(), nullable=False),  # ETag, or mtime where there is none
        pa.field("modified", pa.float64()),  # epoch seconds
        pa.field("status", pa.string(), nullable=False),  # ok | failed
        pa.field("error", pa.string()),  # failed rows: "stage: category: message"
    ]
)


@dataclass(frozen=True)
class SourceFile:
    path: str
    uri: str
    size: int
    version: str
    modified: float


def identity(path: str, size: int, version: str, track_changes: bool) -> tuple:
    return (path, size, version) if track_changes else (path,)


def _version(info: dict) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    return f"mtime:{_modified(info):.6f}"


def _modified(info: dict) -> float:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or 0.0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def list_source(
    cfg: SourceConfig, *, skip_under: str | None = None, now: float | None = None, left_out: list[dict] | None = None
) -> list[SourceFile]:
    """Every audio file under the prefix that the config selects, sorted oldest first.

    ``left_out``, where given, receives ``{"path", "reason"}`` for each file the selection passed
    over (its extension is not in ``source.extensions``, or a ``source.exclude`` pattern matched),
    so a run can say what it did not process instead of skipping it without a word."""
    fs, base = storage.fsspec_fs(cfg.prefix, cfg.storage_options)
    base = base.rstrip("/")
    scheme = cfg.prefix.split("://", 1)[0] if "://" in cfg.prefix else None
    skip = None
    if skip_under is not None:
        out_fs, out_path = storage.fsspec_fs(skip_under, cfg.storage_options)
        if type(out_fs) is type(fs):
            skip = out_path.rstrip("/") + "/"
    now = time.time() if now is None else now
    # A long-lived process (a scheduler, the tests) must see files that other processes added.
    fs.invalidate_cache(base)
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        found = {}
    files = []
    extensions = set(cfg.extensions)
    for path, info in found.items():
        if info.get("type", "file") != "file" or not path.startswith(base + "/"):
            continue
        if skip is not None and path.startswith(skip):
            continue
        rel = path[len(base) + 1 :]
        ext = posixpath.splitext(rel)[1].lower().lstrip(".")
        pattern = next((p for p in cfg.exclude if fnmatch.fnmatchcase(rel, p)), None)
        if ext not in extensions or pattern is not None:
            if left_out is not None:
                why = f"matches source.exclude {pattern!r}" if pattern else f"extension {ext or '(none)'!r} not in source.extensions"
                left_out.append({"path": rel, "reason": why})
            continue
        modified = _modified(info)
        if cfg.min_age_s and now - modified < cfg.min_age_s:
            continue
        uri = f"{scheme}://{path}" if scheme else path
        files.append(SourceFile(rel, uri, int(info.get("size") or 0), _version(info), modified))
    files.sort(key=lambda f: (f.modified, f.path))
    return files


@dataclass
class DoneSet:
    """The union of committed records: identities processed, and those that only ever failed."""

    ok: set[tuple]
    failed: set[tuple]
    run_ids: set[str]
    summaries: dict[str, dict]

    def is_done(self, key: tuple, retry_failed: bool) -> bool:
        return key in self.ok or (not retry_failed and key in self.failed)

    def __len__(self) -> int:
        return len(self.ok | self.failed)


def runs_dir(root: str) -> str:
    return storage.join(root, ETL_DIR, RUNS_DIR)


def record_uri(root: str, run_id: str) -> str:
    return storage.join(runs_dir(root), run_id + RECORD_SUFFIX)


def load_done(root: str, storage_options: dict, *, track_changes: bool) -> DoneSet:
    """Read every committed record.

    One small object per run, fetched concurrently (s3fs `cat` batches the GETs): a few thousand
    runs take seconds. Beyond that, merging old records into one file is the next step.
    """
    fs, path = storage.fsspec_fs(runs_dir(root), storage_options)
    fs.invalidate_cache(path)
    try:
        names = [p for p in fs.ls(path, detail=False) if p.endswith(RECORD_SUFFIX)]
    except FileNotFoundError:
        names = []
    blobs = fs.cat(names) if names else {}
    done = DoneSet(set(), set(), set(), {})
    for name in sorted(blobs):
        table = pq.read_table(io.BytesIO(blobs[name]))
        run_id = posixpath.basename(name)[: -len(RECORD_SUFFIX)]
        done.run_ids.add(run_id)
        meta = table.schema.metadata or {}
        done.summaries[run_id] = json.loads(meta.get(SUMMARY_KEY, b"{}"))
        cols = table.select(["path", "size", "version", "status"]).to_pydict()
        for p, s, v, status in zip(cols["path"], cols["size"], cols["version"], cols["status"]):
            (done.ok if status == "ok" else done.failed).add(identity(p, s, v, track_changes))
    return done


def select_new(
    listed: list[SourceFile], done: DoneSet, cfg: SourceConfig
) -> tuple[list[SourceFile], int]:
    """The files this run takes (oldest first, at most max_files_per_run) and how many wait."""
    new = [
        f for f in listed
        if not done.is_done(identity(f.path, f.size, f.version, cfg.track_changes), cfg.retry_failed)
    ]  # fmt: skip
    limit = cfg.max_files_per_run or len(new)
    return new[:limit], max(0, len(new) - limit)


def record_bytes(files: list[SourceFile], failed: dict[str, str], summary: dict) -> bytes:
    table = pa.table(
        {
            "path": [f.path for f in files],
            "uri": [f.uri for f in files],
            "size": [f.size for f in files],
            "version": [f.version for f in files],
            "modified": [f.modified for f in files],
            "status": ["failed" if f.path in failed else "ok" for f in files],
            "error": [failed.get(f.path) for f in files],
        },
        schema=RECORD_SCHEMA,
    ).replace_schema_metadata({SUMMARY_KEY: json.dumps(summary, default=str).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
