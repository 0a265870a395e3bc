"""The load test's smoke run: two small manifests through the whole job, each in a driver process
of its own attached to the session's Ray; the table and the ratio are produced (the 2,000 vs
20,000-row figures come from running `python -m jobs.load_test` by hand)."""

from __future__ import annotations

import json

from pipeline.benchmark.load import LoadConfig
from tests.test_transcribe_e2e import REPO


def test_load_test_runs_each_size_and_reports_the_driver_memory_ratio(ray_session, tiny_asr_dir, tmp_path):
    from jobs.load_test import run_load_test

    cfg = LoadConfig(
        rows=[6, 18],
        clips=str(REPO / "tests" / "assets" / "speech" / "manifest.jsonl"),
        job_config=str(REPO / "configs" / "transcribe.yaml"),
        job_overrides=[f"asr.model={tiny_asr_dir}", f"asr.model_cache_dir={tmp_path / 'cache'}", "asr.max_new_tokens=8",
                       "asr.engine.max_model_len=1024", "asr.engine.enforce_eager=true", "score.enabled=false"],  # fmt: skip
        output=str(tmp_path / "load"),
    )
    report = run_load_test(cfg)
    assert report["ok"], [open(r["log"]).read()[-3000:] for r in report["runs"]]
    assert [r["rows"] for r in report["runs"]] == [6, 18]
    assert all(r["rows_written"] + r["rows_failed"] == r["rows"] and r["driver_peak_mb"] > 50 for r in report["runs"])
    assert report["driver_peak_ratio"] > 0
    assert json.loads((tmp_path / "load" / "load.json").read_text()) == report
    assert "Driver peak memory" in (tmp_path / "load" / "load.md").read_text()
