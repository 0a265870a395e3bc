"""Accuracy that can be checked offline: the trained tiny checkpoints (models/, built by
training/train_tiny.py on espeak-ng speech) through the whole pipeline on held-out utterances.

The test set (tests/assets/synth) is on the loopback S3 server, at 8, 22.05, 44.1 and 48 kHz, mono
and stereo, as wav, flac, mp3 and opus, two recordings longer than one chunk. The evaluation job
runs it under the released models' protocol (no language given). These thresholds fail when the
resampler, the chunk offsets, the prompt or the output parsing break: a 48 kHz file read as 16 kHz
alone gave WER > 100 % and 35 % language accuracy when the model was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_transcribe_e2e import _upload_dir

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "tests" / "assets" / "synth"
ASR_MODEL = REPO / "models" / "tiny-qwen3-asr-synth"
ALIGNER_MODEL = REPO / "models" / "tiny-qwen3-aligner-synth"
ROWS = [json.loads(line) for line in (SYNTH / "manifest.jsonl").read_text().splitlines() if line.strip()]

MAX_WER = 0.20
MIN_LANGUAGE_ACCURACY = 0.95
MAX_BOUNDARY_ERROR_S = 0.110
# The tiny model follows recordings of up to about four sentences (training/README.md: Results),
# so it gets the pipeline's chunking at 5 s: the two long recordings (about 65 s) go through in
# 15-20 chunks each, every chunk offset on the way.
MAX_CHUNK_S = 5.0

needs_models = pytest.mark.skipif(
    not (ASR_MODEL / "config.json").exists() or not (ALIGNER_MODEL / "config.json").exists(),
    reason="the trained tiny checkpoints are not built: see training/README.md",
)


@pytest.fixture(scope="module")
def synth_on_s3(s3):
    fs = s3.fs()
    if not fs.exists("eval"):
        fs.mkdir("eval")
    _upload_dir(fs, SYNTH, "eval/synth")
    return "s3://eval/synth/manifest.jsonl"


def test_the_test_set_covers_rates_channels_formats_and_long_audio():
    rates = {r["sample_rate"] for r in ROWS}
    assert {8000, 22050, 44100, 48000} <= rates
    assert {r["audio"].rsplit(".", 1)[1] for r in ROWS} >= {"wav", "flac", "mp3", "opus"}
    assert any(r["channels"] == 2 for r in ROWS)
    assert sum(r["kind"] == "long" for r in ROWS) >= 2
    assert {r["language"] for r in ROWS} == {"English", "German", "French"}


@pytest.fixture(scope="module")
def evaluation(synth_on_s3, s3, ray_session, tmp_path_factory):
    from pipeline.evaluate import EvaluateConfig, run_evaluation

    out = tmp_path_factory.mktemp("evaluate")
    cfg = EvaluateConfig.model_validate({
        "test_sets": [{"name": "synth", "manifest": synth_on_s3, "storage_options": s3.storage_options}],
        "output": {"path": str(out)},
        "asr": {"model": str(ASR_MODEL), "max_chunk_s": MAX_CHUNK_S, "batch_size": 8, "max_in_flight_batches": 2,
                "engine": {"max_model_len": 2048, "enforce_eager": True}},
    })  # fmt: skip
    return {"result": run_evaluation(cfg), "out": out}


@needs_models
@pytest.mark.engine
def test_every_row_is_transcribed(evaluation):
    (s,) = evaluation["result"]["sets"]
    assert (s["rows_read"], s["rows_written"], s["rows_failed"]) == (len(ROWS), len(ROWS), 0)


@needs_models
@pytest.mark.engine
def test_word_error_rate(evaluation):
    (whole,) = [r for r in evaluation["result"]["table"] if r["language"] == "all"]
    assert whole["unit"] == "word" and whole["rows"] == len(ROWS)
    assert whole["error_rate"] <= MAX_WER, evaluation["result"]["table"]


@needs_models
@pytest.mark.engine
def test_language_identification_without_a_language_given(evaluation):
    (s,) = evaluation["result"]["sets"]
    assert s["language_id"]["rows"] == len(ROWS)
    assert s["language_id"]["accuracy"] >= MIN_LANGUAGE_ACCURACY, s["language_id"]


@needs_models
@pytest.mark.engine
def test_long_recordings_are_transcribed_across_chunks(evaluation):
    results = {r["id"]: r for r in _local_rows(evaluation["out"] / "synth" / "results")}
    for row in (r for r in ROWS if r["kind"] == "long"):
        got = results[row["id"]]
        assert len(got["segments"]) >= 3
        assert got["errors"] <= MAX_WER * 2 * got["ref_units"], (row["text"], got["text"])


@needs_models
@pytest.mark.engine
def test_the_table_is_written(evaluation):
    md = (evaluation["out"] / "evaluation.md").read_text()
    assert "| synth | all | WER" in md and "| synth | en |" in md and "| synth | de |" in md and "| synth | fr |" in md
    assert json.loads((evaluation["out"] / "evaluation.json").read_text())["protocol"]["language_given"] is False


@needs_models
@pytest.mark.engine
def test_confidence_tells_wrong_from_right(evaluation):
    """The model makes real mistakes here: its word confidence must rank them below the words it
    got right (AUROC), and rows whose language it got wrong must have a lower language_probability."""
    (s,) = evaluation["result"]["sets"]
    words, language = s["confidence"]["words"], s["confidence"]["language"]
    assert words["wrong"] >= 10 and words["right"] >= 100
    assert words["auroc"] >= 0.75, words
    assert words["mean_confidence_wrong"] < words["mean_confidence_right"]
    assert language["rows_right"] >= 1
    if language["rows_wrong"]:
        assert language["mean_probability_wrong"] < language["mean_probability_right"], language
    assert "word AUROC" in (evaluation["out"] / "evaluation.md").read_text()
    # Speech detection ran on every row (on by default) and the metrics count it.
    metrics = json.loads((evaluation["out"] / "synth" / "metrics.json").read_text())
    assert metrics["vad"]["rows"] == len(ROWS) and 0 < metrics["vad"]["speech_share"] < 1


def _local_rows(prefix: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for p in sorted(prefix.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
