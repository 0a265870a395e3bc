"""report.html's edge cases (nothing written, everything failed, no references, credentials) from
Parquet written here. The report of a real job, opened in headless Chromium:
tests/test_transcribe_e2e.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import storage
from pipeline.io.schema import conform
from pipeline.report.page import REPORT_FILE, DurationHistogram, render_report, summarize_output, write_report

# --- edge cases, from Parquet written here ------------------------------------------------------


def _write(out: Path, rows: list[dict], name: str = "part-0.parquet") -> None:
    table = conform(pa.Table.from_pylist(rows))
    ok = pc.is_null(table.column("error"))
    for mask, folder in ((ok, "results"), (pc.invert(ok), "failed")):
        part = table.filter(mask)
        if part.num_rows:
            storage.write_parquet_atomic(part, str(out / folder / name))


def _metrics(**extra) -> dict:
    return {
        "job": "transcribe", "rows_read": 0, "rows_written": 0, "rows_failed": 0, "audio_s": 0.0, "audio_hours": 0.0,
        "wall_s": 1.0, "throughput_audio_s_per_s": 0.0, "engine_rtfx": None, "stage_s": {}, "model": "m",
        "versions": {"python": "3"}, "config": {}, **extra,
    }  # fmt: skip


def test_duration_histogram_is_exact_as_bins_widen():
    hist = DurationHistogram(bins=8, width=1.0)
    hist.add("a", np.array([0.5, 1.5, 1.7, 7.9]))
    hist.add("b", np.array([3.0, np.nan, -1.0]))
    assert hist.width == 1.0 and list(hist.series["a"]) == [1, 2, 0, 0, 0, 0, 0, 1]
    hist.add("a", np.array([30.0]))  # 8 -> 16 -> 32 s range
    assert hist.width == 4.0
    assert list(hist.series["a"]) == [3, 1, 0, 0, 0, 0, 0, 1]
    assert list(hist.series["b"]) == [1, 0, 0, 0, 0, 0, 0, 0]
    assert sum(v.sum() for v in hist.series.values()) == 6
    assert len(hist.trimmed()["a"]) == 8


def test_empty_output(tmp_path):
    assert write_report(str(tmp_path), _metrics()) is not None
    page = (tmp_path / REPORT_FILE).read_text()
    assert "<svg" not in page and 'data-plots="0"' in page
    assert "No row has a reference" in page and "No failed rows" in page


def test_all_failed_without_references(tmp_path):
    rows = [
        {"id": f"r{i}", "audio": f"/a/{i}.wav", "duration_s": 1.0 + i, "error_stage": "decode", "error": "not_found: /a/x.wav"}
        for i in range(3)
    ] + [{"id": "odd", "audio": "/a/odd.wav", "error_stage": "asr", "error": "no colon here $x$ <i>"}]
    _write(tmp_path, rows)
    summary = summarize_output(str(tmp_path))
    assert summary.rows_ok == 0 and summary.rows_failed == 4
    assert summary.reasons == {("decode", "not_found"): 3, ("asr", "no colon here $x$ <i>"): 1}
    page = render_report(_metrics(rows_read=4, rows_failed=4), summary)
    assert "No row has a reference" in page and "No scored rows" in page
    assert "&lt;i&gt;" in page and "<i>" not in page
    assert page.count("<svg") == 2  # durations, failures


def test_worst_rows_come_from_every_file_and_error_sums_per_language(tmp_path):
    for f in range(3):
        _write(
            tmp_path,
            [
                {"id": f"f{f}r{i}", "audio": f"/a/{f}/{i}.wav", "duration_s": 2.0, "language_hint": "de" if i % 2 else "en",
                 "reference": "a b c d", "text": "x", "errors": (f * 10 + i) % 4, "substitutions": (f * 10 + i) % 4,
                 "deletions": 0, "insertions": 0, "ref_units": 4, "unit": "word"}
                for i in range(10)
            ],
            name=f"part-{f}.parquet",
        )  # fmt: skip
    summary = summarize_output(str(tmp_path))
    assert summary.rows_ok == 30
    rates = [r["wer"] for r in summary.worst]
    assert len(rates) == 20 and rates == sorted(rates, reverse=True) and rates[0] == 0.75
    errors = sum(g["errors"] for g in summary.errors.values())
    assert errors == sum((f * 10 + i) % 4 for f in range(3) for i in range(10))
    assert set(summary.errors) == {("en", "word"), ("de", "word")}


def test_no_credentials_in_the_report(tmp_path, monkeypatch):
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    _write(
        tmp_path,
        [
            {"id": "a", "audio": "https://host/a.wav?X-Amz-Signature=sig0123456789abcdef", "duration_s": 1.0,
             "error_stage": "decode", "error": f"access_denied: secret={secret} via tok-0123456789abcdef"},
        ],
    )  # fmt: skip
    metrics = _metrics(
        rows_read=1, rows_failed=1, model="s3://AKIAIOSFODNN7EXAMPLE:pw@bucket/model",
        config={"output": {"storage_options": {"key": "AKIAIOSFODNN7EXAMPLE", "secret": secret}}},
    )
    write_report(str(tmp_path), metrics, {"secret": secret})
    page = (tmp_path / REPORT_FILE).read_text()
    for leak in (secret, "AKIAIOSFODNN7EXAMPLE", "sig0123456789abcdef", "tok-0123456789abcdef", ":pw@"):
        assert leak not in page
    assert "access_denied" in page and "&lt;redacted&gt;" in page
