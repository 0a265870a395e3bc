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
    # Formats only FFmpeg reads are written with PyAV, read back by the plain PyAV loop.
    from pipeline.benchmark import decoders

    other = make_corpus(tmp_path / "ffmpeg", formats=["m4a", "webm"], rates=[22050, 48000], files_per_kind=1, clip_s=1.5)
    assert {(f.format, f.sample_rate) for f in other} == {("m4a", 22050), ("m4a", 48000), ("webm", 48000)}
    for f in other:
        assert f.duration_s == pytest.approx(1.5, abs=0.05)
        assert len(decoders.plain(f.path)) == pytest.approx(1.5 * 16000, abs=0.05 * 16000)
    for f in files:
        info = sf.info(f.path)
        assert info.samplerate == f.sample_rate and info.channels == 2
        assert os.path.isabs(f.path)
        assert f.duration_s == pytest.approx(1.5, abs=0.1)
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [m["audio"] for m in manifest] == [f.path for f in files]
    # Listed twice, every row keeps an id of its own (a repeated id would fail as a duplicate).
    from pipeline.benchmark.corpus import write_manifest

    twice = [json.loads(line) for line in Path(write_manifest(files[:3], tmp_path / "twice.jsonl", repeat=2)).read_text().splitlines()]
    assert [m["audio"] for m in twice] == [f.path for f in files[:3]] * 2 and len({m["id"] for m in twice}) == 6
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
            "--set", "repeats=1",  # the median over rounds: test_ratios_are_medians_of_per_round_ratios
            "--set", "per_format_pass_s=0.2",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "benchmark.json").read_text())
    markdown = (out / "benchmark.md").read_text()
    assert "# Benchmark" in proc.stdout and markdown in proc.stdout
    assert report["corpus"]["files"] == 2 * (2 + 2 + 1)
    assert report["machine"]["cores"] >= 1 and report["versions"]["ray"]
    assert set(report["pipeline_decode"]) == {"1", "2"} and set(report["plain_loops"]) == {"1", "2"}
    assert len(report["rounds"]) == 1  # pipeline and plain loops alternated, ratios taken per round
    for rd in report["rounds"]:
        assert set(rd["pipeline_decode"]) == set(rd["plain_loops"]) == {"1", "2"}
        for run in rd["pipeline_decode"].values():  # every row decoded, counted from the blocks
            assert run["rows"] == 10 and run["failed"] == 0 and run["audio_s"] > 15
    from jobs.benchmark import speed

    for c, run in report["pipeline_decode"].items():  # the median round, with every round's speed
        assert len(run["rounds"]) == 1 and min(run["rounds"]) <= speed(run) <= max(run["rounds"]), c
    ratios = report["ratios"]
    for key in (
        "decode_pipeline_1core_vs_plain_loop", "decode_pipeline_per_core_vs_plain_loop", "decode_scaling_efficiency",
        "ours_vs_plain", "ours_vs_librosa.load", "ours_vs_ffmpeg", "e2e_vs_engine_direct", "e2e_vs_decode_limit", "e2e_vs_slower_limit",
        "plain_loop_scaling_efficiency", "decode_pipeline_vs_parallel_plain_loops",
    ):  # fmt: skip
        assert ratios[key] is not None and ratios[key] > 0, key
        assert f"| {key} |" in markdown
    assert report["pipeline_e2e"]["rows"] == 10 and report["pipeline_e2e"]["failed"] == 0
    assert report["engine_direct"]["throughput"] > 0
    # Confidence's cost (log-probabilities on vs off, same engine) and speech detection's (per core).
    assert report["engine_direct"]["throughput_logprobs"] > 0 and report["engine_direct"]["logprobs_cost"] > -1
    v = report["vad_cost"]
    assert 0 < v["decode_per_core_vad_on"] < v["decode_per_core_vad_off"] and v["vad_alone_per_core"] > 0
    assert report["memory_mb"]["driver"] > 0 and report["memory_mb"]["largest_worker"] > 0
    # Each format alone through the decode stage next to its library's plain loop.
    per_format = report["per_format"]
    assert set(per_format) == {"wav", "mp3", "opus"}
    assert per_format["opus"]["files"] == 2 and per_format["wav"]["decoder"] == "libsndfile" and per_format["opus"]["decoder"] == "FFmpeg"
    for d in per_format.values():
        assert d["pipeline"] > 0 and d["plain"] > 0 and d["ratio"] == pytest.approx(d["rounds"][0])
        assert d["repeat"] >= 1 and d["audio_s"] == pytest.approx(d["repeat"] * d["files"] * 2, rel=0.05)
    opus = per_format["opus"]
    assert f"| opus | FFmpeg | 2 x {opus['repeat']} |" in markdown and "## Pipeline decode stage per format" in markdown
    for kind in ("wav@16000", "mp3@44100", "opus@16000"):
        assert f"| {kind} |" in markdown


def test_ratios_are_medians_of_per_round_ratios():
    from jobs.benchmark import _median_run, ratios, speed

    # From the first output block on where the pass had more than one; else the whole pass.
    assert speed({"throughput": 1.0, "steady_throughput": 2.0}) == 2.0
    assert speed({"throughput": 1.0, "steady_throughput": None}) == 1.0

    def run(thr: float) -> dict:
        return {"throughput": thr, "wall_s": 1.0, "rows": 1, "failed": 0, "audio_s": thr}

    # The machine slows by half in round 2: each ratio is taken within its round, so it holds.
    rounds = [
        {"pipeline_decode": {"1": run(900), "2": run(1700)}, "plain_loops": {"1": 1000, "2": 2000}},
        {"pipeline_decode": {"1": run(450), "2": run(850)}, "plain_loops": {"1": 500, "2": 1000}},
        {"pipeline_decode": {"1": run(800), "2": run(1200)}, "plain_loops": {"1": 1000, "2": 2000}},
    ]
    report = {
        "rounds": rounds,
        "pipeline_decode": {c: _median_run([rd["pipeline_decode"][c] for rd in rounds]) for c in ("1", "2")},
        "decoders": {"plain (soundfile+soxr)": {"speed": 1000.0}, "ours (pipeline.audio.decode.decode_audio)": {"speed": 950.0}},
        "pipeline_e2e": {"throughput": 50.0, "throughput_after_engine_start": 60.0},
        "engine_direct": {"throughput": 75.0},
    }
    r = ratios(report)
    assert r["decode_pipeline_1core_vs_plain_loop"] == pytest.approx(0.9)  # 0.9, 0.9, 0.8
    assert r["decode_scaling_efficiency"] == pytest.approx(1700 / 900 / 2)  # 0.944, 0.944, 0.75
    assert r["plain_loop_scaling_efficiency"] == pytest.approx(1.0)
    assert r["decode_pipeline_vs_parallel_plain_loops"] == pytest.approx(0.85)
    assert r["ours_vs_plain"] == pytest.approx(0.95)
    assert report["pipeline_decode"]["2"]["throughput"] == 1200 and report["pipeline_decode"]["2"]["rounds"] == [1700, 850, 1200]
    decode_limit = 1200  # the median round's speed on all cores
    assert r["e2e_vs_decode_limit"] == pytest.approx(60 / decode_limit)
    assert r["e2e_vs_engine_direct"] == pytest.approx(60 / 75)
    assert r["e2e_vs_slower_limit"] == pytest.approx(60 / 75)  # the engine is the slower limit here


def test_decode_workers_keep_freed_memory():
    import platform

    from pipeline.audio.worker_malloc import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process, then a no-op
