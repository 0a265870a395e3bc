"""Turn one batch of any supported manifest into the canonical manifest columns.

Works on a pyarrow Table so it runs unchanged inside Ray Data's `map_batches(batch_format=
"pyarrow")`. Every input row gives exactly one output row, in order: a row with no audio keeps its
slot (audio null) so the decode stage can fail it with a reason instead of it vanishing.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.redact import redact_url

ManifestFormat = Literal["jsonl", "csv", "tsv", "parquet"]

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("audio", pa.string()),  # absolute URI or absolute local path; null if none given
        pa.field("audio_bytes", pa.binary()),  # embedded audio (HF Parquet); null otherwise
        pa.field("offset_s", pa.float64()),
        pa.field("duration_hint_s", pa.float64()),  # as the manifest states it, not measured
        pa.field("reference", pa.string()),
        pa.field("language_hint", pa.string()),
        pa.field("context", pa.string()),
    ]
)
CANONICAL_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
# What normalize_manifest returns: the canonical columns plus a row's manifest-level failure
# (a line that is not JSON, a field that is not a number or too long), which later stages carry
# to failed/ instead of processing.
NORMALIZED_SCHEMA = pa.schema(list(MANIFEST_SCHEMA) + [pa.field("error_stage", pa.string()), pa.field("error", pa.string())])

# Longest accepted value per text field, in characters: beyond these a value is a broken export
# (a whole file pasted into a column), not data, and would bloat every later stage.
MAX_FIELD_CHARS = {"id": 1024, "audio": 8192, "language_hint": 64, "context": 65536, "reference": 1_000_000}

# Source names tried in order for each canonical column: the canonical name itself first (so that
# normalizing twice is harmless), then our JSONL fields, NeMo, Common Voice. First present wins.
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "audio": ("audio", "audio_filepath", "path"),
    "audio_bytes": ("audio_bytes",),
    "offset_s": ("offset_s", "offset"),
    "duration_hint_s": ("duration_hint_s", "duration"),
    "reference": ("reference", "text", "sentence"),
    "language_hint": ("language_hint", "language", "lang", "locale"),
    "context": ("context",),
}

_FORMATS: dict[str, ManifestFormat] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}


def detect_format(uri: str) -> ManifestFormat:
    path = uri.split("?", 1)[0].rstrip("/")
    ext = posixpath.splitext(path)[1].lower()
    if ext not in _FORMATS:
        known = ", ".join(sorted(_FORMATS))
        raise ValueError(
            f"cannot tell the manifest format of {uri!r} from its extension "
            f"{ext or '(none)'!r}; expected one of {known}"
        )
    return _FORMATS[ext]


def find_duplicate_ids(ids: Iterable[str]) -> list[str]:
    """Ids that occur more than once, each listed once, sorted (for a stable error message)."""
    counts = Counter(ids)
    return sorted(i for i, n in counts.items() if n > 1)


def resolve_audio_uri(path: str, manifest_dir: str) -> str:
    """A manifest's audio path as an absolute URI / path.

    URIs (`scheme://...`) and absolute local paths are kept as written. Relative paths join onto
    `manifest_dir`: posix-style under a URI (so s3://bucket/prefix + ../x.wav stays in the bucket's
    key space), os-style and made absolute for a local directory.
    """
    if "://" in path or os.path.isabs(path):
        return path
    if "://" in manifest_dir:
        scheme, rest = manifest_dir.split("://", 1)
        # normpath on the part after the scheme: on the whole URI it would fold "//" to "/".
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return os.path.abspath(os.path.join(manifest_dir, path))


def normalize_manifest(
    table: pa.Table,
    *,
    manifest_dir: str,
    column_map: Mapping[str, str] | None = None,
    default_language: str | None = None,
) -> pa.Table:
    """Canonical columns (see MANIFEST_SCHEMA), one row per input row, extra columns dropped.

    `column_map` maps canonical name -> source column and overrides the default aliases.
    `manifest_dir` is where relative audio paths live (pass an absolute path or a URI: a relative
    one resolves against the current directory of whichever worker runs the batch).
    A row without an id gets one derived from its audio path as written, plus `@offset` for a
    segment row and `+duration` when that row also gives one (`a.wav@12.000+3.500`), so ids are
    the same on every run and machine and two segments of one file differ (see ``_derived_id``).
    """
    sources = _source_columns(table, column_map or {})
    n = table.num_rows
    errors: list[str | None] = (
        table.column("manifest_error").to_pylist() if "manifest_error" in table.column_names else [None] * n
    )

    def fail(i: int, message: str) -> None:
        if errors[i] is None:
            errors[i] = message

    audio_paths: pa.Array = pa.nulls(n, pa.string())
    audio_bytes: pa.Array = pa.nulls(n, pa.binary())
    if "audio" in sources:
        audio_paths, embedded = _split_audio_column(_column(table, sources["audio"]))
        if embedded is not None:
            audio_bytes = embedded
    if "audio_bytes" in sources:
        source = sources["audio_bytes"]
        audio_bytes = _cast(_column(table, source), pa.binary(), source)

    def text(name: str, *, empty_is_null: bool = True) -> pa.Array:
        if name not in sources:
            return pa.nulls(n, pa.string())
        arr = _cast(_column(table, sources[name]), pa.string(), sources[name])
        return _empty_to_null(arr) if empty_is_null else arr

    def seconds(name: str) -> pa.Array:
        if name not in sources:
            return pa.nulls(n, pa.float64())
        arr = _column(table, sources[name])
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return _cast(arr, pa.float64(), sources[name])
        # Text (CSV, JSONL): one unreadable value fails its row, not the batch.
        values: list[float | None] = []
        for i, raw in enumerate(_cast(arr, pa.string(), sources[name]).to_pylist()):
            value = None
            if raw is not None and raw.strip():
                try:
                    value = float(raw)
                except ValueError:
                    fail(i, f"invalid_field: {sources[name]} {raw[:40]!r} is not a number of seconds")
            values.append(value)
        return pa.array(values, pa.float64())

    def limited(name: str, arr: pa.Array) -> pa.Array:
        limit = MAX_FIELD_CHARS[name]
        lengths = pc.utf8_length(arr).to_pylist()
        for i, length in enumerate(lengths):
            if length is not None and length > limit:
                fail(i, f"field_too_long: {name} has {length} characters (at most {limit})")
        return arr

    written_paths = _empty_to_null(limited("audio", audio_paths)).to_pylist()
    offsets = seconds("offset_s")
    explicit_ids = limited("id", text("id")).to_pylist()
    resolved = [None if p is None else resolve_audio_uri(p, manifest_dir) for p in written_paths]

    columns = {
        "audio": pa.array(resolved, pa.string()),
        "audio_bytes": audio_bytes,
        "offset_s": offsets,
        "duration_hint_s": seconds("duration_hint_s"),
        # An empty reference is meaningful (no speech expected), so it stays "" rather than null.
        "reference": limited("reference", text("reference", empty_is_null=False)),
        "language_hint": pc.coalesce(limited("language_hint", text("language_hint")), pa.scalar(default_language, pa.string()))
        if default_language
        else limited("language_hint", text("language_hint")),
        "context": limited("context", text("context")),
    }
    offset_values = offsets.to_pylist()
    duration_values = columns["duration_hint_s"].to_pylist()
    bytes_values = audio_bytes.to_pylist() if audio_bytes.null_count < n else [None] * n
    ids = [
        explicit_ids[i]
        if explicit_ids[i] is not None
        else _derived_id(written_paths[i], offset_values[i], duration_values[i], bytes_values[i], columns, i)
        for i in range(n)
    ]
    for i, row_id in enumerate(ids):
        if len(row_id) > MAX_FIELD_CHARS["id"]:
            # Kept recognisable and unique, but short enough to be written and read back.
            ids[i] = f"{row_id[:64]}...#sha1:{hashlib.sha1(row_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            **columns,
            "error_stage": pa.array(["manifest" if e is not None else None for e in errors], pa.string()),
            "error": pa.array(errors, pa.string()),
        },
        schema=NORMALIZED_SCHEMA,
    )


def _source_columns(table: pa.Table, column_map: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(column_map) - set(CANONICAL_COLUMNS))
    if unknown:
        raise ValueError(
            f"column_map has unknown canonical names {unknown}; known: {list(CANONICAL_COLUMNS)}"
        )
    present = set(table.column_names)
    sources: dict[str, str] = {}
    for canonical in CANONICAL_COLUMNS:
        if canonical in column_map:
            source = column_map[canonical]
            if source not in present:
                raise ValueError(
                    f"column_map[{canonical!r}] names column {source!r}, which the manifest "
                    f"does not have; its columns are {table.column_names}"
                )
            sources[canonical] = source
            continue
        for alias in DEFAULT_ALIASES[canonical]:
            if alias in present:
                sources[canonical] = alias
                break
    return sources


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _cast(arr: pa.Array, to: pa.DataType, source: str) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type == to:
        return arr
    try:
        return pc.cast(arr, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"manifest column {source!r} cannot be read as {to}: {e}") from e


def _empty_to_null(arr: pa.Array) -> pa.Array:
    # CSV readers give "" for a missing value; for these fields "" means "not given".
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


def _split_audio_column(arr: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """(paths as string, embedded bytes or None) from a path column, a bytes column, or the
    Hugging Face `{"bytes": binary, "path": string}` struct."""
    n = len(arr)
    if pa.types.is_struct(arr.type):
        names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
        # The struct being null must null both fields, whatever the children hold.
        valid = pc.is_valid(arr)
        paths = pa.nulls(n, pa.string())
        data: pa.Array | None = None
        if "path" in names:
            paths = pc.if_else(valid, _cast(arr.field("path"), pa.string(), "audio.path"), None)
        if "bytes" in names:
            data = pc.if_else(valid, _cast(arr.field("bytes"), pa.binary(), "audio.bytes"), None)
        return paths, data
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return pa.nulls(n, pa.string()), _cast(arr, pa.binary(), "audio")
    return _cast(arr, pa.string(), "audio"), None


def _derived_id(
    path: str | None,
    offset: float | None,
    duration: float | None,
    data: bytes | None,
    columns: dict[str, pa.Array],
    row: int,
) -> str:
    """Stable id from what identifies the row: the audio path as written, else the audio bytes,
    else the row's content. Never from position in the batch, which depends on how Ray splits.

    A segment row (``offset`` given) adds ``@<offset>`` and, when it gives a duration,
    ``+<duration>`` (seconds, 3 decimals: ``a.wav@12.000+3.500``), so two segments of one file at
    one offset with different durations get different ids. A whole-file row's duration (NeMo
    manifests give every row one) is not part of its id. Rows equal in all of these share an id
    and fail as ``duplicate_id``.
    """
    if path is not None:
        # Without credentials: a presigned URL's signature must not become a name in the output.
        base = redact_url(path)
    elif data is not None:
        base = "sha1:" + hashlib.sha1(data).hexdigest()[:16]
    else:
        content = {k: columns[k][row].as_py() for k in ("reference", "language_hint", "context",
                                                          "duration_hint_s")}
        content["offset_s"] = offset
        digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return f"noaudio:{digest}"
    if offset is None:
        return base
    return f"{base}@{offset:.3f}" + (f"+{duration:.3f}" if duration is not None else "")
