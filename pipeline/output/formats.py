"""One result row (a dict with the results schema's fields) rendered in other tools' formats.

- :func:`nemo_line`: a NeMo-style manifest line (``audio_filepath``, ``offset``, ``duration``,
  ``text`` = the reference, ``pred_text`` = the hypothesis: the fields NeMo's
  ``transcribe_speech.py`` and ``speech_to_text_eval.py`` read and write), plus this pipeline's.
- :func:`verbose_json`: shaped like OpenAI's transcription ``response_format="verbose_json"``:
  ``task``, ``language`` (lower-case name, as OpenAI gives it), ``duration``, ``text``,
  ``segments`` (``id``, ``start``, ``end``, ``text``), and ``words`` (``word``, ``start``, ``end``)
  when the row has word times. Token ids and log-probabilities are not kept, so those segment
  fields are absent.
- :func:`to_txt` and :func:`to_tsv`: as Whisper's ``WriteTXT`` and ``WriteTSV`` write them: one
  segment's text per line; ``start<TAB>end<TAB>text`` with times in integer milliseconds under a
  header line.

Segments are the row's ``segments`` (sentences once aligned, ASR chunks otherwise); a row without
any (the align job's rows the aligner skipped) counts as one segment spanning its duration.
Times are seconds from the row's start (from the segment's start in the source for rows with an
``offset_s``), as in the Parquet results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# The results' columns a NeMo-style line carries besides NeMo's own fields.
_NEMO_EXTRA = (
    "id", "language", "language_hint", "model", "errors", "substitutions", "deletions", "insertions",
    "ref_units", "unit",
)  # fmt: skip


def segments_of(row: Mapping) -> list[dict]:
    """The row's segments as ``[{"start", "end", "text", "language"}]`` (see the module docstring)."""
    segments = row.get("segments")
    if segments:
        return [
            {"start": s["start"], "end": s["end"], "text": s.get("text") or "", "language": s.get("language")}
            for s in segments
        ]
    text = row.get("text") or ""
    if not text.strip():
        return []
    return [{"start": 0.0, "end": row.get("duration_s") or 0.0, "text": text, "language": row.get("language")}]


def _words(row: Mapping) -> list[dict] | None:
    words = row.get("words")
    if words is None:
        return None
    return [{"text": w["text"], "start": w["start"], "end": w["end"], "repaired": bool(w.get("repaired"))} for w in words]


def nemo_line(row: Mapping) -> str:
    """One JSON line (no newline) for a NeMo-style manifest: ``audio_filepath`` (the resolved audio
    URI), ``offset`` (seconds, null for a whole file), ``duration`` (seconds), ``text`` (the
    reference, null without one), ``pred_text`` (the hypothesis), then ``id``, ``language``,
    ``language_hint``, ``model``, the error counts and ``unit``, ``segments``
    (``[{"start", "end", "text", "language"}]``) and ``words`` (``[{"text", "start", "end",
    "repaired"}]``, null unless aligned). Non-ASCII text is written as is (UTF-8)."""
    line = {
        "audio_filepath": row.get("audio"),
        "offset": row.get("offset_s"),
        "duration": row.get("duration_s"),
        "text": row.get("reference"),
        "pred_text": row.get("text"),
        **{k: row.get(k) for k in _NEMO_EXTRA},
        "segments": segments_of(row),
        "words": _words(row),
    }
    return json.dumps(line, ensure_ascii=False)


def verbose_json(row: Mapping) -> dict:
    """The row as OpenAI's ``verbose_json`` transcription object (fields in the module docstring);
    ``words`` only when the row has word times. Seconds as floats."""
    language = row.get("language")
    out: dict = {
        "task": "transcribe",
        "language": language.lower() if language else None,
        "duration": row.get("duration_s"),
        "text": row.get("text") or "",
        "segments": [
            {"id": k, "start": s["start"], "end": s["end"], "text": s["text"]} for k, s in enumerate(segments_of(row))
        ],
    }
    words = row.get("words")
    if words is not None:
        out["words"] = [{"word": w["text"], "start": w["start"], "end": w["end"]} for w in words]
    return out


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def to_txt(row: Mapping) -> str:
    """Whisper's txt: each segment's text, stripped, on its own line (empty for no segments)."""
    return "".join(_one_line(s["text"]) + "\n" for s in segments_of(row) if s["text"].strip())


def to_tsv(row: Mapping) -> str:
    """Whisper's tsv: the header ``start\\tend\\ttext``, then one line per segment with start and
    end in integer milliseconds (rounded) and the text with tabs and newlines made spaces."""
    lines = ["start\tend\ttext\n"]
    for s in segments_of(row):
        lines.append(f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{_one_line(s['text'])}\n")
    return "".join(lines)
