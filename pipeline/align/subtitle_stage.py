"""Write one subtitle file per aligned recording: ``<output>/subtitles/<id>.srt`` / ``.vtt``.

A side-effect stage over result rows: one output row per input row, holding the number of files
that row produced, so the job can report how many it wrote.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.align.subtitles import to_srt, to_vtt
from pipeline.io import storage

SUBTITLES_DIR = "subtitles"
_RENDER = {"srt": to_srt, "vtt": to_vtt}


def write_subtitles(
    batch: pa.Table,
    *,
    output_path: str,
    formats: list[str],
    options: dict,
    storage_options: dict | None = None,
) -> pa.Table:
    """For ``map_batches(batch_format="pyarrow")`` over rows with ``id``, ``words``, ``language``."""
    fs, base = storage.fsspec_fs(storage.join(output_path, SUBTITLES_DIR), storage_options)
    fs.makedirs(base, exist_ok=True)
    ids = batch.column("id").to_pylist()
    words = batch.column("words").to_pylist()
    languages = batch.column("language").to_pylist()
    written = []
    for row_id, row_words, language in zip(ids, words, languages):
        if row_words is None:  # not aligned (a language the aligner does not support)
            written.append(0)
            continue
        name = storage.safe_name(row_id)
        for fmt in formats:
            text = _RENDER[fmt](row_words, language=language, **options)
            with fs.open(f"{base}/{name}.{fmt}", "w", encoding="utf-8") as f:
                f.write(text)
        written.append(len(formats))
    return pa.table({"subtitle_files": pa.array(written, pa.int64())})
