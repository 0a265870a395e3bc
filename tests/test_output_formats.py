"""output.formats writers given result rows (pipeline/output/), each file read back by its standard
reader (json, csv for tsv), plus the case-safe file names and error_category."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.io.schema import OUTPUT_SCHEMA, conform, error_category
from pipeline.io.storage import safe_name
from pipeline.output.formats import nemo_line, to_tsv, to_txt, verbose_json
from pipeline.output.stage import write_output_files


def _word(text, start, end, repaired=False):
    return {"text": text, "start": start, "end": end, "repaired": repaired}


ALIGNED = {
    "id": "Rec/1",
    "audio": "s3://b/rec1.wav",
    "offset_s": None,
    "duration_s": 4.0,
    "language": "English",
    "language_hint": "en-US",
    "reference": "Hello there. How are you?",
    "text": "Hello there. How\tare you?",
    "segments": [
        {"start": 0.1, "end": 0.9, "text": "Hello there.", "language": "English",
         "words": [_word("Hello", 0.1, 0.5), _word("there.", 0.5, 0.9, True)]},
        {"start": 2.0, "end": 3.2345, "text": "How\tare you?", "language": "English",
         "words": [_word("How", 2.0, 2.3), _word("are", 2.3, 2.6), _word("you?", 2.6, 3.2345)]},
    ],
    "words": [_word("Hello", 0.1, 0.5), _word("there.", 0.5, 0.9, True), _word("How", 2.0, 2.3),
              _word("are", 2.3, 2.6), _word("you?", 2.6, 3.2345)],
    "model": "m", "errors": 1, "substitutions": 1, "deletions": 0, "insertions": 0, "ref_units": 5, "unit": "word",
}  # fmt: skip
# Not aligned (the align job's skipped rows look like this): no segments, no words, no reference.
PLAIN = {"id": "rec/1", "audio": "/a/b.flac", "offset_s": 12.5, "duration_s": 2.0, "language": None, "text": "مرحبا"}


def _table(rows: list[dict]) -> pa.Table:
    return conform(pa.Table.from_pylist(rows, schema=pa.schema([f for f in OUTPUT_SCHEMA if f.name in rows[0]])))


def test_every_writer_reads_back(tmp_path: Path):
    out = write_output_files(_table([ALIGNED, PLAIN]), output_path=str(tmp_path), formats=["jsonl", "txt", "json", "tsv"])
    assert out.column("output_files").to_pylist() == [4, 4]

    [jsonl] = list((tmp_path / "jsonl").iterdir())
    lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["Rec/1", "rec/1"]
    first, second = lines
    assert (first["audio_filepath"], first["duration"], first["offset"]) == ("s3://b/rec1.wav", 4.0, None)
    assert first["text"] == ALIGNED["reference"] and first["pred_text"] == ALIGNED["text"]
    assert first["language"] == "English" and first["errors"] == 1 and first["unit"] == "word"
    assert [s["text"] for s in first["segments"]] == ["Hello there.", "How\tare you?"]
    assert first["words"][1] == {"text": "there.", "start": 0.5, "end": 0.9, "repaired": True}
    assert (second["offset"], second["text"], second["pred_text"], second["words"]) == (12.5, None, "مرحبا", None)

    # Two ids differing only in case (and a "/") get names that differ on case-insensitive disks.
    names = {safe_name("Rec/1"), safe_name("rec/1")}
    assert len({n.lower() for n in names}) == 2
    for fmt in ("txt", "json", "tsv"):
        assert {p.name for p in (tmp_path / fmt).iterdir()} == {f"{n}.{fmt}" for n in names}

    doc = json.loads((tmp_path / "json" / f"{safe_name('Rec/1')}.json").read_text(encoding="utf-8"))
    assert doc["task"] == "transcribe" and doc["language"] == "english" and doc["duration"] == 4.0
    assert doc["text"] == ALIGNED["text"]
    assert doc["segments"] == [
        {"id": 0, "start": 0.1, "end": 0.9, "text": "Hello there."},
        {"id": 1, "start": 2.0, "end": 3.2345, "text": "How\tare you?"},
    ]
    assert doc["words"][0] == {"word": "Hello", "start": 0.1, "end": 0.5}
    plain = json.loads((tmp_path / "json" / f"{safe_name('rec/1')}.json").read_text(encoding="utf-8"))
    assert plain["language"] is None and "words" not in plain
    assert plain["segments"] == [{"id": 0, "start": 0.0, "end": 2.0, "text": "مرحبا"}]

    tsv = (tmp_path / "tsv" / f"{safe_name('Rec/1')}.tsv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(tsv), delimiter="\t"))
    assert rows == [["start", "end", "text"], ["100", "900", "Hello there."], ["2000", "3234", "How are you?"]]

    txt = (tmp_path / "txt" / f"{safe_name('Rec/1')}.txt").read_text(encoding="utf-8")
    assert txt.splitlines() == ["Hello there.", "How are you?"]


def test_jsonl_part_is_named_by_its_rows_and_rewritten(tmp_path: Path):
    table = _table([ALIGNED])
    for _ in range(2):  # a retried task writes the same file again
        write_output_files(table, output_path=str(tmp_path), formats=["jsonl"])
    [part] = list((tmp_path / "jsonl").iterdir())
    assert part.name.startswith("part-") and len(part.read_text().splitlines()) == 1
    assert not (tmp_path / "txt").exists()
    with pytest.raises(ValueError, match="unknown output formats"):
        write_output_files(table, output_path=str(tmp_path), formats=["docx"])


def test_renderers_on_their_own():
    assert json.loads(nemo_line(PLAIN))["audio_filepath"] == "/a/b.flac"
    assert verbose_json({"text": "", "duration_s": 1.0})["segments"] == []
    assert to_txt({"text": "  "}) == ""
    assert to_tsv({"segments": []}) == "start\tend\ttext\n"


@pytest.mark.parametrize(
    ("row_id", "name"),
    [("Foo", "!foo"), ("foo", "foo"), ("FOO", "!f!o!o"), ("Spk1/Utt 01", "!spk1%2F!utt 01"), ("a!b", "a%21b")],
)
def test_safe_name_case_encoding(row_id, name):
    assert safe_name(row_id) == name


def test_error_category_follows_the_error_text():
    assert error_category("not_found: s3://b/x.wav: gone") == "not_found"
    assert error_category("no colon here") == "no colon here"
    assert error_category(None) is None
    table = conform(pa.table({"id": ["a", "b"], "error": [None, "decode_error: bad"], "error_category": ["stale", "x"]}))
    assert table.column("error_category").to_pylist() == [None, "decode_error"]
    assert table.schema == OUTPUT_SCHEMA
