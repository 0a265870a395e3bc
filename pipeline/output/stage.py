"""Write result rows in the formats of ``output.formats`` (jsonl, txt, json, tsv) under the output.

A side-effect stage over result rows (``map_batches(batch_format="pyarrow")``), run over the
committed ``results/`` at the end of a job, so the files always match the Parquet results:
- ``jsonl``: ``<output>/jsonl/part-<hash of the batch's ids>.jsonl``, one line per recording
  (:func:`pipeline.output.formats.nemo_line`); the job empties ``jsonl/`` before writing, so every
  result row is in exactly one line;
- ``txt``, ``json``, ``tsv``: ``<output>/<format>/<name>.<format>`` per recording, ``<name>`` the
  row id made a safe file name (:func:`pipeline.io.storage.safe_name`); a re-run rewrites them.
SRT and VTT files come from ``pipeline.align.subtitle_stage`` (they need word times).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from pipeline.io import storage
from pipeline.output.formats import nemo_line, to_tsv, to_txt, verbose_json

FILE_FORMATS = ("jsonl", "txt", "json", "tsv")
JSONL_DIR = "jsonl"

_RENDER = {
    "txt": to_txt,
    "json": lambda row: json.dumps(verbose_json(row), ensure_ascii=False, indent=1) + "\n",
    "tsv": to_tsv,
}


def format_dir(output_path: str, fmt: str) -> str:
    """Where a format's files go: ``<output>/<format>`` (``jsonl`` included)."""
    return storage.join(output_path, fmt)


def write_output_files(
    batch: pa.Table, *, output_path: str, formats: list[str], storage_options: dict | None = None
) -> pa.Table:
    """Write the batch's rows in ``formats`` (a subset of :data:`FILE_FORMATS`); returns one row
    per input row with ``output_files`` (int64): the files (or jsonl lines) that row produced.
    Raises ValueError for a format not in :data:`FILE_FORMATS`."""
    unknown = sorted(set(formats) - set(FILE_FORMATS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; known: {list(FILE_FORMATS)}")
    rows = batch.to_pylist()
    written = [0] * len(rows)
    if not rows:
        return pa.table({"output_files": pa.array(written, pa.int64())})
    if "jsonl" in formats:
        fs, base = storage.fsspec_fs(format_dir(output_path, JSONL_DIR), storage_options)
        fs.makedirs(base, exist_ok=True)
        # Named by its rows: a retried task rewrites the same file instead of adding lines.
        digest = hashlib.sha1("\x00".join(str(r.get("id")) for r in rows).encode("utf-8", "surrogatepass")).hexdigest()
        with fs.open(f"{base}/part-{digest[:24]}.jsonl", "w", encoding="utf-8") as f:
            f.write("".join(nemo_line(r) + "\n" for r in rows))
        written = [w + 1 for w in written]
    for fmt in (f for f in formats if f != "jsonl"):
        fs, base = storage.fsspec_fs(format_dir(output_path, fmt), storage_options)
        fs.makedirs(base, exist_ok=True)
        for k, row in enumerate(rows):
            with fs.open(f"{base}/{storage.safe_name(row['id'])}.{fmt}", "w", encoding="utf-8") as f:
                f.write(_RENDER[fmt](row))
            written[k] += 1
    return pa.table({"output_files": pa.array(written, pa.int64())})
