"""The laptop path: `python -m jobs.transcribe` on local files, with an embedded local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.io.schema import OUTPUT_SCHEMA

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.engine
def test_transcribe_job_runs_on_embedded_local_ray(tiny_asr_dir, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [
            sys.executable, "-m", "jobs.transcribe", "--config", "configs/transcribe.yaml",
            "--set", f"asr.model={tiny_asr_dir}",
            "--set", f"output.path={out}",
            "--set", "input.limit=3",
            "--set", "asr.max_new_tokens=8",
            "--set", "ray.num_cpus=2",
            "--set", "asr.engine.enforce_eager=true",
            "--set", "asr.engine.max_model_len=2048",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "=== transcribe summary ===" in proc.stdout
    assert "rows read 3  written 3  failed 0" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows_read"] == metrics["rows_written"] == 3
    table = pq.read_table(out / "results")
    assert table.num_rows == 3
    assert table.schema.remove_metadata().equals(OUTPUT_SCHEMA)
    assert not (out / "failed").exists()


@pytest.mark.engine
def test_align_job_runs_on_embedded_local_ray(tiny_aligner_dir, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [
            sys.executable, "-m", "jobs.align", "--config", "configs/align.yaml",
            "--set", f"align.model={tiny_aligner_dir}",
            "--set", f"output.path={out}",
            "--set", "input.limit=3",
            "--set", "ray.num_cpus=2",
            "--set", "align.engine.max_model_len=2048",
            "--set", "align.max_chunk_s=30",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "=== align summary ===" in proc.stdout
    assert "rows read 3  written 3  failed 0" in proc.stdout
    assert "aligner: 3 rows" in proc.stdout
    table = pq.read_table(out / "results")
    assert table.schema.remove_metadata().equals(OUTPUT_SCHEMA)
    assert all(len(words) > 0 for words in table.column("words").to_pylist())
    assert len(list((out / "subtitles").glob("*.srt"))) == len(list((out / "subtitles").glob("*.vtt"))) == 3


_FETCHER = (
    "import jobs.transcribe\n"
    "from ray.data._internal.execution.metadata_fetcher import make_metadata_fetcher\n"
    "print(type(make_metadata_fetcher()).__name__)\n"
)


@pytest.mark.parametrize(("setting", "expected"), [(None, "InlineMetadataFetcher"), ("1", "ThreadedMetadataFetcher")])
def test_jobs_fetch_block_metadata_inline_unless_told_otherwise(setting, expected):
    # The jobs' executor must hand a finished decode task's successor out without the polling
    # thread's delay (see jobs/__init__.py); a user's own setting in the environment still wins.
    env = {k: v for k, v in os.environ.items() if k != "RAY_DATA_METADATA_PREFETCH_ON_THREAD"}
    if setting is not None:
        env["RAY_DATA_METADATA_PREFETCH_ON_THREAD"] = setting
    proc = subprocess.run([sys.executable, "-c", _FETCHER], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
