"""CPU stage: per-row word/char errors against references, on normalized text.

Raw texts stay in the row; normalization happens here only (pipeline.score.wer), so a re-score
with another normalizer never needs a re-run of the model.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.io.schema import with_columns
from pipeline.languages import is_detect
from pipeline.score.wer import score_row

_FIELDS = ("errors", "substitutions", "deletions", "insertions", "ref_units")


def score_batch(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    refs = batch.column("reference").to_pylist() if "reference" in batch.column_names else [None] * n
    hyps = batch.column("text").to_pylist()
    hints = batch.column("language_hint").to_pylist() if "language_hint" in batch.column_names else [None] * n
    detected = batch.column("language").to_pylist()
    errors = batch.column("error").to_pylist()
    values: dict[str, list] = {f: [None] * n for f in _FIELDS}
    unit: list[str | None] = [None] * n
    for i in range(n):
        if refs[i] is None or errors[i] is not None:
            continue
        # The reference's language decides word vs char; the hint is what the data claims.
        score = score_row(refs[i], hyps[i] or "", detected[i] if is_detect(hints[i]) else hints[i])
        for f in _FIELDS:
            values[f][i] = getattr(score, f)
        unit[i] = score.unit
    columns = {f: pa.array(values[f], pa.int64()) for f in _FIELDS}
    columns["unit"] = pa.array(unit, pa.string())
    return with_columns(batch, columns)
