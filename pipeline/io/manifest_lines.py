"""JSONL manifests read line by line, so one bad line fails one row instead of the whole job.

A columnar JSON reader gives up on the first line that is not JSON, is not UTF-8 or holds a value
of another type than the lines before it. Here every non-blank line becomes one row: parsed, or
failed with its line number (``id = <file name>:<line>``, category ``invalid_manifest_line``).
Files are read in chunks and lines are cut into blocks, so memory stays bounded for any manifest
size; a single line over ``MAX_LINE_BYTES`` is failed without being held whole.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from pipeline.io.manifest import DEFAULT_ALIASES

MAX_LINE_BYTES = 16 * 1024 * 1024
_READ_BYTES = 8 * 1024 * 1024
_ROWS_PER_BLOCK = 10_000
LINES_SCHEMA = pa.schema([("path", pa.string()), ("line", pa.int64()), ("raw", pa.binary())])


def iter_lines(read, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, bytes) for every non-blank line of a stream read by ``read(n)``;
    ``None`` bytes for a line longer than ``max_line_bytes`` (skipped, not buffered)."""
    pending = b""
    number = 0
    oversized = False
    while True:
        chunk = read(_READ_BYTES)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            if oversized:
                oversized = False
                yield number, None
            elif line.strip():
                yield number, line
        if len(pending) > max_line_bytes:
            oversized, pending = True, b""
    if oversized:
        yield number + 1, None
    elif pending.strip():
        yield number + 1, pending


class JsonlLinesDatasource(FileBasedDatasource):
    """One row per non-blank line: the file's path, the line number and the raw bytes."""

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        paths, numbers, raws = [], [], []
        for number, raw in iter_lines(f.read):
            paths.append(path)
            numbers.append(number)
            raws.append(raw)
            if len(raws) >= _ROWS_PER_BLOCK:
                yield pa.table([paths, numbers, raws], schema=LINES_SCHEMA)
                paths, numbers, raws = [], [], []
        if raws:
            yield pa.table([paths, numbers, raws], schema=LINES_SCHEMA)


# Every name normalize_manifest looks for; other keys in a line are ignored.
_KNOWN_KEYS = {alias for aliases in DEFAULT_ALIASES.values() for alias in aliases}


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    # A list or object where text is expected: kept as its JSON so the row can say what it saw.
    return json.dumps(value, ensure_ascii=False)


def parse_lines(batch: pa.Table, *, column_map: dict[str, str] | None = None) -> pa.Table:
    """For ``map_batches(batch_format="pyarrow")``: raw lines -> one row of text columns each,
    plus ``manifest_error`` for lines that are not a JSON object in UTF-8."""
    keys = _KNOWN_KEYS | set((column_map or {}).values())
    records: list[dict] = []
    for path, number, raw in zip(*(batch.column(c).to_pylist() for c in ("path", "line", "raw"))):
        where = f"{posixpath.basename(path)}:{number}"
        error = None
        obj: dict = {}
        if raw is None:
            error = f"invalid_manifest_line: line {number} is longer than {MAX_LINE_BYTES} bytes"
        else:
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                error = f"invalid_manifest_line: line {number} is not UTF-8 (byte {e.start})"
            except json.JSONDecodeError as e:
                error = f"invalid_manifest_line: line {number} is not JSON: {e.msg} at column {e.colno}"
            else:
                if isinstance(parsed, dict):
                    obj = {k: _text(v) for k, v in parsed.items() if k in keys}
                else:
                    error = f"invalid_manifest_line: line {number} is a JSON {type(parsed).__name__}, not an object"
        if error is not None:
            obj = {"id": where}
        obj["manifest_error"] = error
        records.append(obj)
    names = sorted({k for r in records for k in r})
    return pa.table({k: pa.array([r.get(k) for r in records], pa.string()) for k in names})
