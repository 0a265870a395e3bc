"""The output row schema (lhotse vocabulary, seconds as float) and helpers to keep it exact.

Every results/ and failed/ file has exactly this schema, so a reader never meets a column that
changes type between files (an all-null block would otherwise infer `null`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

# A word with its times; ``repaired``: its times were spread by the word-time repair
# (pipeline/align/timestamps.py), not read from the aligner's slots; ``confidence``: the ASR
# engine's probability for the word, 0-1 (actors/asr_confidence.py), null without log-probabilities.
WORD = pa.struct(
    [("text", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("repaired", pa.bool_()),
     ("confidence", pa.float64())]
)  # fmt: skip
# A segment: an ASR chunk (its ``words`` with confidences but no times) or, once aligned, a
# sentence with its words. ``avg_logprob``: mean natural-log probability of its tokens (an ASR
# chunk), or of its words' confidences (a sentence); null without log-probabilities.
SEGMENT = pa.struct(
    [
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("words", pa.list_(WORD)),
        ("avg_logprob", pa.float64()),
    ]
)

# One utterance of the labeling job, with every quality signal (pipeline/label/stage.py); the
# agreement actor fills its agreement_* fields.
UTTERANCE = pa.struct(
    [
        ("index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("speech_start", pa.float64()),
        ("speech_end", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("units", pa.int32()),
        ("units_per_s", pa.float64()),
        ("max_repeat", pa.int32()),
        ("compression_ratio", pa.float64()),
        ("rms_db", pa.float64()),
        ("empty", pa.bool_()),
        ("language_mismatch", pa.bool_()),
        # Mean ASR confidence of its words; share of it inside the speech the engine was given; its recording's flags.
        ("confidence", pa.float64()),
        ("speech_share", pa.float64()),
        ("flags", pa.list_(pa.string())),
        ("agreement_text", pa.string()),
        ("agreement_language", pa.string()),
        ("agreement_wer", pa.float64()),
        ("reasons", pa.list_(pa.string())),
        ("kept", pa.bool_()),
        ("audio_path", pa.string()),
        ("audio_bytes", pa.binary()),
    ]
)

OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("audio", pa.string()),
        ("offset_s", pa.float64()),
        ("source_sample_rate", pa.int64()),
        ("source_channels", pa.int64()),
        ("duration_s", pa.float64()),
        ("language_hint", pa.string()),
        ("context", pa.string()),
        ("reference", pa.string()),
        ("language", pa.string()),
        # Probability of the detected language (0-1, from its name's tokens); null when forced.
        ("language_probability", pa.float64()),
        ("text", pa.string()),
        # Seconds of detected speech (VAD); null when VAD is off.
        ("speech_s", pa.float64()),
        # Output guards that applied (actors/asr_guards.py: repetition, context_echo, ...); [] for none.
        ("flags", pa.list_(pa.string())),
        ("segments", pa.list_(SEGMENT)),
        ("asr_chunks", pa.list_(SEGMENT)),
        ("words", pa.list_(WORD)),
        ("model", pa.string()),
        ("decode_s", pa.float64()),
        # What a decode lost and kept anyway (damaged packets, a shortfall under on_truncation keep).
        ("decode_warnings", pa.list_(pa.string())),
        ("asr_s", pa.float64()),
        ("align_s", pa.float64()),
        ("align_skip_reason", pa.string()),
        ("errors", pa.int64()),
        ("substitutions", pa.int64()),
        ("deletions", pa.int64()),
        ("insertions", pa.int64()),
        ("ref_units", pa.int64()),
        ("unit", pa.string()),
        ("error_stage", pa.string()),
        ("error_category", pa.string()),
        ("error", pa.string()),
    ]
)

# Columns that exist only between stages and never reach the output.
INTERNAL_COLUMNS = ("audio_bytes", "samples", "chunks", "chunk_speech_s", "duration_hint_s", "engine_busy_s", "engine_ready_at", "align_busy_s")


def error_category(message: str | None) -> str | None:
    """The category of a row error: the text before the first ``": "`` of ``error``
    (``"not_found: s3://b/x.wav"`` -> ``"not_found"``); None for no error."""
    if message is None:
        return None
    return message.split(": ", 1)[0]


def conform(table: pa.Table, schema: pa.Schema = OUTPUT_SCHEMA) -> pa.Table:
    """Project `table` onto `schema`: missing columns become typed nulls, extras are dropped.

    ``error_category`` is always derived here from ``error`` (:func:`error_category`), so the two
    never disagree, whichever stage set the error.
    """
    if "error_category" in schema.names and "error" in table.column_names:
        categories = [error_category(m) for m in table.column("error").to_pylist()]
        table = with_columns(table, {"error_category": pa.array(categories, pa.string())})
    n = table.num_rows
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            columns.append(col)
        else:
            columns.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def with_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """`table` with these columns added, or replaced where a column of that name exists."""
    for name, column in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def column_lists(batch: pa.Table, *names: str) -> list[list]:
    """The named columns of ``batch`` as Python lists, one list per name; a column the batch does
    not have reads as ``[None] * num_rows`` (optional manifest columns such as ``context``)."""
    present = set(batch.column_names)
    return [batch.column(n).to_pylist() if n in present else [None] * batch.num_rows for n in names]


def waveforms(batch: pa.Table, name: str = "samples") -> tuple[Any, Any]:
    """The batch's waveform column, list<float32>, as one flat array and its row offsets.

    Returns ``(flat, offsets)``: float32 ``[total samples]`` and int ``[num_rows + 1]``; row i's
    samples are ``flat[offsets[i]:offsets[i + 1]]`` (views, no copy per row). A column of one
    chunk (a batch within one decode table) is read in place; several chunks are joined first.
    """
    col = batch.column(name)
    # A slice of a list array keeps its parent's values and absolute offsets, so the flat
    # array here may hold rows of other batches: the offsets pick this batch's out of it.
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return arr.values.to_numpy(zero_copy_only=False), arr.offsets.to_numpy()
