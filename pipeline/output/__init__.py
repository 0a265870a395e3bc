"""Result files in the shapes other tools read, beside the Parquet results (which stay the source
of truth): ``formats`` (one row as a NeMo manifest line, OpenAI ``verbose_json``, Whisper's txt and
tsv; SRT/VTT come from ``align.subtitles``) and ``stage`` (the stage that writes them per batch of
result rows under ``<output>/<format>/``).

Imports ``io`` and ``align.subtitles``. Job runs use ``stage``; ``formats`` is a pure helper.
"""
