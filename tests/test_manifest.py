from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pytest

from pipeline.io.manifest import (
    CANONICAL_COLUMNS,
    NORMALIZED_SCHEMA,
    detect_format,
    find_duplicate_ids,
    normalize_manifest,
    resolve_audio_uri,
)

SPEECH = Path(__file__).parent / "assets" / "speech"


def _jsonl(text: str) -> pa.Table:
    return pjson.read_json(io.BytesIO(text.encode()))


def test_schema_order_and_types() -> None:
    assert CANONICAL_COLUMNS == ("id", "audio", "audio_bytes", "offset_s", "duration_hint_s",
                                 "reference", "language_hint", "context")
    out = normalize_manifest(pa.table({"audio": ["a.wav"]}), manifest_dir="/data")
    assert out.schema == NORMALIZED_SCHEMA


def test_canonical_jsonl_fields() -> None:
    t = _jsonl('{"id": "u1", "audio": "clips/a.wav", "text": "Hi there", "language": "en", '
               '"context": "names: Ada", "offset": 1.5, "duration": 2.25, "speaker": "s9"}\n')
    row = normalize_manifest(t, manifest_dir="/data/set").to_pylist()[0]
    assert row == {"id": "u1", "audio": "/data/set/clips/a.wav", "audio_bytes": None,
                   "offset_s": 1.5, "duration_hint_s": 2.25, "reference": "Hi there",
                   "language_hint": "en", "context": "names: Ada", "error_stage": None, "error": None}


def test_nemo_manifest() -> None:
    t = _jsonl('{"audio_filepath": "/abs/x.flac", "duration": 3.2, "text": "hallo", '
               '"lang": "de", "offset": 0}\n')
    row = normalize_manifest(t, manifest_dir="s3://bucket/m").to_pylist()[0]
    assert row["audio"] == "/abs/x.flac"
    assert row["id"] == "/abs/x.flac@0.000+3.200"  # a segment row: offset and duration
    assert (row["duration_hint_s"], row["offset_s"]) == (3.2, 0.0)
    assert (row["reference"], row["language_hint"]) == ("hallo", "de")


def test_common_voice_tsv() -> None:
    tsv = ("client_id\tpath\tsentence\tup_votes\tlocale\n"
           "abc\tcommon_voice_fr_1.mp3\tBonjour à tous.\t2\tfr\n"
           "def\tcommon_voice_fr_2.mp3\t\t0\t\n")
    t = pcsv.read_csv(io.BytesIO(tsv.encode()), parse_options=pcsv.ParseOptions(delimiter="\t"))
    out = normalize_manifest(t, manifest_dir="gs://cv/fr/clips").to_pylist()
    assert [r["id"] for r in out] == ["common_voice_fr_1.mp3", "common_voice_fr_2.mp3"]
    assert [r["audio"] for r in out] == ["gs://cv/fr/clips/common_voice_fr_1.mp3",
                                         "gs://cv/fr/clips/common_voice_fr_2.mp3"]
    assert [r["reference"] for r in out] == ["Bonjour à tous.", ""]
    assert [r["language_hint"] for r in out] == ["fr", None]


def test_hugging_face_audio_struct() -> None:
    wav = (SPEECH / "en_wav16k.wav").read_bytes()
    audio = pa.array([{"bytes": wav, "path": "sample_0.wav"}, {"bytes": b"xyz", "path": None}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    t = pa.table({"audio": audio, "text": ["one", "two"]})
    out = normalize_manifest(t, manifest_dir="s3://hf/data")
    rows = out.to_pylist()
    assert rows[0]["audio_bytes"] == wav
    assert rows[0]["audio"] == "s3://hf/data/sample_0.wav"
    assert rows[0]["id"] == "sample_0.wav"
    assert rows[1]["audio"] is None
    assert rows[1]["audio_bytes"] == b"xyz"
    # No path: the id comes from the bytes, so it is the same on every run.
    assert rows[1]["id"] == "sha1:" + __import__("hashlib").sha1(b"xyz").hexdigest()[:16]


def test_column_map_overrides_aliases() -> None:
    t = pa.table({"file": ["x.wav"], "text": ["wrong"], "transcript": ["right"], "utt": ["k1"]})
    out = normalize_manifest(
        t, manifest_dir="/m", column_map={"audio": "file", "reference": "transcript", "id": "utt"}
    ).to_pylist()[0]
    assert (out["id"], out["audio"], out["reference"]) == ("k1", "/m/x.wav", "right")


def test_column_map_errors_name_the_problem() -> None:
    t = pa.table({"audio": ["x.wav"]})
    with pytest.raises(ValueError, match="'wav_file'"):
        normalize_manifest(t, manifest_dir="/m", column_map={"audio": "wav_file"})
    with pytest.raises(ValueError, match="'transcript'"):
        normalize_manifest(t, manifest_dir="/m", column_map={"transcript": "audio"})


def test_uri_relative_paths_and_dotdot() -> None:
    assert resolve_audio_uri("a/b.wav", "s3://bucket/prefix") == "s3://bucket/prefix/a/b.wav"
    assert resolve_audio_uri("../b.wav", "s3://bucket/prefix/") == "s3://bucket/b.wav"
    assert resolve_audio_uri("gs://o/x.wav", "s3://bucket/p") == "gs://o/x.wav"
    assert resolve_audio_uri("/abs/x.wav", "s3://bucket/p") == "/abs/x.wav"
    assert resolve_audio_uri("x.wav", "file:///data/m") == "file:///data/m/x.wav"
    assert resolve_audio_uri("./c/x.wav", "/data/m") == "/data/m/c/x.wav"


def test_relative_local_dir_becomes_absolute() -> None:
    assert resolve_audio_uri("x.wav", "rel") == os.path.join(os.getcwd(), "rel", "x.wav")


def test_derived_id_includes_offset_and_is_stable() -> None:
    t = pa.table({"audio": ["clips/a.wav", "clips/a.wav", "clips/b.wav"],
                  "offset": [12.5, 30.0, None]})
    first = normalize_manifest(t, manifest_dir="/x")
    again = normalize_manifest(t, manifest_dir="s3://elsewhere")
    assert first.column("id").to_pylist() == ["clips/a.wav@12.500", "clips/a.wav@30.000",
                                              "clips/b.wav"]
    assert again.column("id").equals(first.column("id"))


def test_row_without_audio_is_kept() -> None:
    t = _jsonl('{"id": "a", "audio": "x.wav"}\n{"id": "b", "text": "hello"}\n'
               '{"audio": "", "text": "hi"}\n')
    out = normalize_manifest(t, manifest_dir="/m").to_pylist()
    assert len(out) == 3
    assert [r["audio"] for r in out] == ["/m/x.wav", None, None]
    assert out[1]["id"] == "b"
    assert out[2]["id"].startswith("noaudio:")
    assert out[2]["id"] == normalize_manifest(t, manifest_dir="/other").to_pylist()[2]["id"]


def test_numbers_as_strings_and_numeric_ids_are_cast() -> None:
    csv = "id,audio,offset,duration\n7,a.wav,1.25,\n8,b.wav,,3\n"
    t = pcsv.read_csv(io.BytesIO(csv.encode()),
                      convert_options=pcsv.ConvertOptions(column_types={"offset": pa.string(),
                                                                        "duration": pa.string()}))
    out = normalize_manifest(t, manifest_dir="/m").to_pylist()
    assert [r["id"] for r in out] == ["7", "8"]
    assert [r["offset_s"] for r in out] == [1.25, None]
    assert [r["duration_hint_s"] for r in out] == [None, 3.0]


def test_bad_number_fails_its_row_and_names_the_column() -> None:
    t = pa.table({"audio": ["a.wav", "b.wav"], "offset": ["soon", "2.5"]})
    out = normalize_manifest(t, manifest_dir="/m").to_pylist()
    assert out[0]["error_stage"] == "manifest"
    assert out[0]["error"] == "invalid_field: offset 'soon' is not a number of seconds"
    assert (out[1]["offset_s"], out[1]["error"]) == (2.5, None)


def test_overlong_fields_fail_their_row() -> None:
    from pipeline.io.manifest import MAX_FIELD_CHARS

    long_id = "x" * (MAX_FIELD_CHARS["id"] + 1)
    t = pa.table({"id": [long_id, "ok"], "audio": ["a.wav", "b.wav"], "language": ["en" * 40, "en"]})
    out = normalize_manifest(t, manifest_dir="/m").to_pylist()
    assert out[0]["error"].startswith("field_too_long: id has 1025 characters")
    assert len(out[0]["id"]) < 100 and out[0]["id"].startswith("x" * 64)
    assert out[1]["error"] is None
    t = pa.table({"audio": ["a.wav"], "language": ["en" * 40]})
    assert normalize_manifest(t, manifest_dir="/m").column("error")[0].as_py().startswith("field_too_long: language_hint")


def test_normalizing_twice_changes_nothing() -> None:
    t = _jsonl('{"audio": "clips/a.wav", "text": "x", "language": "fr", "offset": 2}\n')
    once = normalize_manifest(t, manifest_dir="/m")
    assert normalize_manifest(once, manifest_dir="/elsewhere").equals(once)


def test_empty_batch() -> None:
    t = pa.table({"audio": pa.array([], pa.string())})
    out = normalize_manifest(t, manifest_dir="/m")
    assert out.num_rows == 0
    assert out.schema == NORMALIZED_SCHEMA


def test_bundled_speech_manifest() -> None:
    t = pjson.read_json(SPEECH / "manifest.jsonl")
    out = normalize_manifest(t, manifest_dir=str(SPEECH))
    assert out.num_rows == 7
    for uri in out.column("audio").to_pylist():
        assert Path(uri).is_file()
    assert out.column("id").to_pylist()[-1] == "en_long_16k.flac"
    assert find_duplicate_ids(out.column("id").to_pylist()) == []


@pytest.mark.parametrize("uri,fmt", [("s3://b/m.jsonl", "jsonl"), ("m.JSON", "jsonl"),
                                     ("/x/m.ndjson", "jsonl"), ("train.csv", "csv"),
                                     ("gs://cv/validated.tsv", "tsv"),
                                     ("s3://hf/part-0.parquet", "parquet")])
def test_detect_format(uri: str, fmt: str) -> None:
    assert detect_format(uri) == fmt


@pytest.mark.parametrize("uri", ["m.txt", "s3://bucket/manifest", "m.jsonl.gz"])
def test_detect_format_rejects_unknown(uri: str) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        detect_format(uri)


def test_find_duplicate_ids() -> None:
    assert find_duplicate_ids(["b", "a", "b", "c", "a", "b"]) == ["a", "b"]
    assert find_duplicate_ids(iter(["x", "y"])) == []


def test_multi_chunk_table_and_null_struct() -> None:
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    a = pa.table({"audio": pa.array([{"bytes": b"1", "path": "p1.wav"}], struct)})
    b = pa.table({"audio": pa.array([None], struct)})
    t = pa.concat_tables([a, b])
    assert t.column("audio").num_chunks == 2
    rows = normalize_manifest(t, manifest_dir="/m").to_pylist()
    assert [(r["audio"], r["audio_bytes"]) for r in rows] == [("/m/p1.wav", b"1"), (None, None)]
    assert rows[1]["id"].startswith("noaudio:")


def test_unbalanced_accounting_is_a_loud_failure() -> None:
    from pipeline.transcribe import AccountingError, accounting, raise_if_unbalanced

    raise_if_unbalanced(accounting(5, 3, 2))
    record = accounting(5, 3, 1)
    assert record["balanced"] is False
    with pytest.raises(AccountingError, match=r"rows read \(5\) != rows written \(3\) \+ rows failed \(1\)"):
        raise_if_unbalanced(record)


def test_a_test_set_language_fills_rows_that_name_none():
    t = pa.table({"audio": ["a.wav", "b.wav"], "language": [None, "fr"]})
    out = normalize_manifest(t, manifest_dir="/m", default_language="de").column("language_hint").to_pylist()
    assert out == ["de", "fr"]


def test_segment_ids_hold_offset_and_duration() -> None:
    """Id-less segment rows of one file: the derived id holds offset and duration, so two rows at one
    offset with different durations differ; rows equal in both share an id (a real duplicate)."""
    t = _jsonl(
        '{"audio": "long.wav", "offset": 5, "duration": 2.5}\n'
        '{"audio": "long.wav", "offset": 5, "duration": 4}\n'
        '{"audio": "long.wav", "offset": 5}\n'
        '{"audio": "long.wav", "offset": 5, "duration": 4}\n'
        '{"audio": "long.wav", "duration": 60}\n'
    )
    ids = normalize_manifest(t, manifest_dir="/m").column("id").to_pylist()
    assert ids == ["long.wav@5.000+2.500", "long.wav@5.000+4.000", "long.wav@5.000", "long.wav@5.000+4.000", "long.wav"]
