"""Rows are committed to results/ and failed/ as they finish, so a killed job loses only the rows
in flight, and a re-run with the same output path resumes.

The last stage of the transcribe and align jobs writes every batch it gets as one Parquet file in
results/ (its rows without an error) and one in failed/ (the others), each file whole or absent
(see ``storage.write_parquet_atomic``). An id in a complete file is done; on resume the manifest
is filtered against those ids, and the rows of a job killed mid-write are simply processed again.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import storage
from pipeline.io.schema import conform, with_columns

# Long texts are in the committed files; what flows on to the metrics does not need them.
_NOT_FOR_METRICS = ("text", "reference", "context")


def commit_rows(batch: pa.Table, *, results_uri: str, failed_uri: str, storage_options: dict | None = None) -> pa.Table:
    """For ``map_batches(batch_format="pyarrow")``: write, then pass the rows on for metrics."""
    rows = conform(batch)
    ok = pc.is_null(rows.column("error"))
    # Named by the rows it holds: a retried task (its worker died after writing) rewrites the same
    # file instead of adding a second copy of its rows.
    digest = hashlib.sha1("\x00".join(rows.column("id").to_pylist()).encode("utf-8", "surrogatepass")).hexdigest()
    name = f"part-{digest[:24]}.parquet"
    for mask, uri in ((ok, results_uri), (pc.invert(ok), failed_uri)):
        part = rows.filter(mask)
        if part.num_rows:
            storage.write_parquet_atomic(part, storage.join(uri, name), storage_options)
    # The metrics count failures by the category conform() derived.
    passed = with_columns(batch, {"error_category": rows.column("error_category")})
    return passed.drop_columns([c for c in _NOT_FOR_METRICS if c in passed.column_names])


def committed_ids(uris: list[str], storage_options: dict | None = None) -> set[str]:
    """Ids in the complete files under these prefixes (held on the driver: about 100 bytes an id,
    so ~100 MB for a million rows)."""
    done: set[str] = set()
    for uri in uris:
        fs, _ = storage.fsspec_fs(uri, storage_options)
        for path in storage.parquet_files(uri, storage_options):
            with fs.open(path, "rb") as f:
                done.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return done


def committed_rows(uri: str, storage_options: dict | None = None) -> int:
    """Rows in the complete files under a prefix, from the Parquet footers only."""
    fs, _ = storage.fsspec_fs(uri, storage_options)
    total = 0
    for path in storage.parquet_files(uri, storage_options):
        with fs.open(path, "rb") as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def drop_done(batch: pa.Table, *, done: set[str]) -> pa.Table:
    """For ``map_batches``: the manifest rows not committed by an earlier run."""
    keep = pa.array([i not in done for i in batch.column("id").to_pylist()], pa.bool_())
    return batch.filter(keep)
