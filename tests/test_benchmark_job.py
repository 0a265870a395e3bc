"""A smoke run of `python -m jobs.benchmark` on a small corpus: the table is produced (the ratios
are measured, not asserted: this machine is shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.benchmark.corpus import make_corpus, supported

REPO = Path(__file__).resolve().parents[1]


def test_corpus_covers_formats_and_rates(tmp_path):
    import soundfile as sf

    files = make_corpus(tmp_path, formats=["wav", "flac", "mp3", "opus"], rates=[8000, 22050, 48000], files_per_kind=2, clip_s=1.5, channels=2)
    kinds = {(f.format, f.sample_rate) for f in files}
    assert ("opus", 22050) not in kinds and not supported("opus", 22050)  # opus has no 22.05 kHz
    assert len(files) == 2 * (3 + 3 + 3 + 2)
    for f in files:
        info = sf.info(f.path)
        assert info.samplerate == f.sample_rate and info.channels == 2
        assert os.path.isabs(f.path)
        assert f.duration_s == pytest.approx(1.5, abs=0.1)
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [m["audio"] for m in manifest] == [f.path for f in files]
    # A second call reuses the files.
    mtimes = [os.path.getmtime(f.path) for f in files]
    make_corpus(tmp_path, formats=["wav", "flac", "mp3", "opus"], rates=[8000, 22050, 48000], files_per_kind=2, clip_s=1.5, channels=2)
    assert mtimes == [os.path.getmtime(f.path) for f in files]


def test_decoders_agree_on_the_output(tmp_path):
    import numpy as np

    from pipeline.benchmark import decoders

    files = make_corpus(tmp_path, formats=["flac"], rates=[44100], files_per_kind=1, clip_s=2.0)
    found = decoders.available()
    ref = decoders.plain(files[0].path)
    assert ref.dtype == np.float32 and len(ref) == pytest.approx(32000, abs=2)
    for name, fn in found.items():
        assert callable(fn), f"{name}: {fn}"  # the test extra installs librosa and imageio-ffmpeg
        out = fn(files[0].path)
        n = min(len(out), len(ref))
        assert abs(len(out) - len(ref)) < 200, name
        # Same audio, resampled by different filters: strongly correlated.
        assert np.corrcoef(out[:n], ref[:n])[0, 1] > 0.95, name


@pytest.mark.engine
def test_benchmark_job_writes_its_table(tiny_asr_dir, tmp_path):
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [
            sys.executable, "-m", "jobs.benchmark", "--config", "configs/benchmark.yaml",
            "--set", f"corpus.dir={tmp_path / 'corpus'}",
            "--set", "corpus.formats=[wav, mp3, opus]",
            "--set", "corpus.rates=[16000, 44100]",
            "--set", "corpus.files_per_kind=2",
            "--set", "corpus.clip_s=2",
            "--set", f"output.path={out}",
            "--set", f"asr.model={tiny_asr_dir}",
            "--set", "asr.max_new_tokens=4",
            "--set", "asr.engine.max_model_len=2048",
            "--set", "ray.num_cpus=2",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "benchmark.json").read_text())
    markdown = (out / "benchmark.md").read_text()
    assert "# Benchmark" in proc.stdout and markdown in proc.stdout
    assert report["corpus"]["files"] == 2 * (2 + 2 + 1)
    assert report["machine"]["cores"] >= 1 and report["versions"]["ray"]
    assert set(report["pipeline_decode"]) == {"1", "2"} and set(report["plain_parallel"]) == {"2"}
    for run in report["pipeline_decode"].values():  # every row decoded, counted from the blocks
        assert run["rows"] == 10 and run["failed"] == 0 and run["audio_s"] > 15
    ratios = report["ratios"]
    for key in (
        "decode_pipeline_1core_vs_plain_loop", "decode_pipeline_per_core_vs_plain_loop", "decode_scaling_efficiency",
        "ours_vs_plain", "ours_vs_librosa.load", "ours_vs_ffmpeg", "e2e_vs_engine_direct", "e2e_vs_decode_limit",
        "plain_loop_scaling_efficiency", "decode_pipeline_vs_parallel_plain_loops",
    ):  # fmt: skip
        assert ratios[key] is not None and ratios[key] > 0, key
        assert f"| {key} |" in markdown
    assert report["pipeline_e2e"]["rows"] == 10 and report["pipeline_e2e"]["failed"] == 0
    assert report["engine_direct"]["throughput"] > 0
    assert report["memory_mb"]["driver"] > 0 and report["memory_mb"]["largest_worker"] > 0
    for kind in ("wav@16000", "mp3@44100", "opus@16000"):
        assert f"| {kind} |" in markdown
