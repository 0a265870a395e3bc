"""The laptop path: `python -m jobs.demo` (what `make demo` runs) on an embedded local Ray, and the
jobs' shared command line (model checks before anything starts, the console level).

The align job's command line is the transcribe job's (jobs/cli.py); its run is covered in-process
by tests/test_align_e2e.py."""

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
def test_demo_without_hub_runs_the_bundled_model_quietly(tmp_path):
    # What `make demo` runs on a machine that cannot reach the model hub (tests run offline):
    # one note, the bundled trained model on the bundled synthetic recordings, a summary and
    # transcripts next to their references, on one screen and without a traceback.
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--output", str(out), "--set", "input.limit=6", "--set", "ray.num_cpus=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]
    lines = console.splitlines()
    assert lines[0].startswith("note: Qwen/Qwen3-ASR-0.6B cannot be fetched"), lines[:3]
    assert "models/tiny-qwen3-asr-synth" in lines[0]
    assert "Traceback" not in console and "Exception ignored" not in console, console[-4000:]
    # Engine and Ray Data internals stay in the log files (log_level: info).
    assert "EngineCore" not in console and "logging_progress" not in console and "rope_parameters" not in console
    assert len(lines) <= 60, f"{len(lines)} console lines:\n{console}"
    assert "=== transcribe summary ===" in proc.stdout
    assert "rows read 6  written 6  failed 0" in proc.stdout
    assert proc.stdout.count("    reference:  ") == proc.stdout.count("    transcript: ") == 5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows_read"] == metrics["rows_written"] == 6
    table = pq.read_table(out / "results")
    assert table.schema.remove_metadata().equals(OUTPUT_SCHEMA)
    assert not (out / "failed").exists()
    # The bundled model knows these recordings: most words come back right.
    assert metrics["wer"]["corpus"]["word"]["error_rate"] < 0.5, metrics["wer"]


@pytest.mark.parametrize(
    ("job", "field", "model", "words"),
    [
        ("jobs.transcribe", "asr.model", "/nonexistent/qwen3-asr", "neither an existing directory"),
        ("jobs.transcribe", "asr.model", "Qwen/Qwen3-ASR-0.6B", "HF_HUB_OFFLINE is set"),
        ("jobs.align", "align.model", "models/no-such-aligner", "no local directory of that name"),
        ("jobs.demo", None, "/nonexistent/qwen3-asr", "neither an existing directory"),
    ],
)
def test_a_model_that_cannot_be_loaded_is_one_error_line_and_exit_2(job, field, model, words, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["HF_HUB_OFFLINE"] = "1"
    config = "configs/align.yaml" if job == "jobs.align" else "configs/transcribe.yaml"
    args = ["--model", model] if field is None else ["--config", config, "--set", f"{field}={model}"]
    args += ["--output" if field is None else "--set", str(tmp_path) if field is None else f"output.path={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", job, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {field or 'asr.model'} '{model}' cannot be loaded: ")
    assert words in errors[0] and "Try --set" in errors[0]
    assert "Traceback" not in proc.stderr
    # Nothing started: no Ray session, no output.
    assert not any(tmp_path.iterdir())


def test_console_level_decides_what_reaches_the_driver():
    from jobs import logs

    logs.configure("debug")
    assert logs.ray_init_kwargs() == {"log_to_driver": True}
    logs.configure("info")
    assert logs.ray_init_kwargs() == {"log_to_driver": False}
    with pytest.raises(ValueError, match="log_level"):
        logs.configure("loud")


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


def test_a_decode_only_benchmark_loads_no_model():
    from jobs.cli import models_of
    from pipeline.benchmark.config import BenchmarkConfig

    cfg = BenchmarkConfig.model_validate({"asr": {"model": "/nonexistent/qwen3-asr"}})
    assert models_of(cfg) == [("asr.model", "/nonexistent/qwen3-asr", {})]
    assert models_of(cfg.model_copy(update={"engine": False})) == []
