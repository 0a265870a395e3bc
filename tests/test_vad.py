"""Speech-activity detection (pipeline/audio/vad.py) on built signals: the real Silero VAD ONNX
model from the silero-vad wheel, speech from the bundled synthetic recordings, hum, chords and
noise generated here. No engine: these run in about a second."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from pipeline.audio.stage import decode_batch
from pipeline.audio.vad import (
    FRAME_SAMPLES,
    VadOptions,
    detect_speech,
    model_path,
    plan_speech_chunks,
    speech_probabilities,
    speech_regions,
)
from pipeline.config import JobConfig

SR = 16000
SYNTH = Path(__file__).resolve().parent / "assets" / "synth"


def speech(name: str = "en_sent_001.flac") -> np.ndarray:
    import soxr

    x, sr = sf.read(SYNTH / name, dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, SR).astype(np.float32)


def hum(seconds: float, level: float = 0.1) -> np.ndarray:
    """Mains hum: 50 Hz with odd harmonics."""
    t = np.arange(int(seconds * SR)) / SR
    return (level * (np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t) + 0.3 * np.sin(2 * np.pi * 250 * t))).astype(np.float32)


def chords(seconds: float) -> np.ndarray:
    """Triads changing every half second (music without voice)."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    roots = [220.0, 196.0, 174.6, 261.6]
    for k in range(int(seconds * 2)):
        m = (t >= k * 0.5) & (t < k * 0.5 + 0.5)
        root = roots[k % len(roots)]
        for f in (root, root * 1.26, root * 1.5):
            out[m] += 0.08 * np.sin(2 * np.pi * f * t[m])
    return out.astype(np.float32)


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def test_the_model_is_the_wheels_onnx_file_and_torch_stays_out():
    assert model_path().endswith("silero_vad/data/silero_vad_16k_sequence.onnx")
    # A fresh interpreter: detecting speech must not import torch (the CPU stages never load it).
    code = (
        "import sys, numpy as np; from pipeline.audio.vad import detect_speech; "
        "detect_speech(np.zeros(16000, np.float32)); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"


def test_probabilities_are_per_32_ms_frame():
    x = np.concatenate([silence(1.0), speech()])
    probs = speech_probabilities(x)
    assert probs.dtype == np.float32 and probs.shape == (-(-len(x) // FRAME_SAMPLES),)
    assert probs.min() >= 0 and probs.max() <= 1
    assert probs[: SR // FRAME_SAMPLES].max() < 0.5 < probs.max()
    with pytest.raises(ValueError):
        speech_probabilities(np.zeros((2, 100), np.float32))
    assert speech_probabilities(np.zeros(0, np.float32)).shape == (0,)


@pytest.mark.parametrize("name, signal", [
    ("hum", lambda: hum(20)), ("chords", lambda: chords(20)), ("noise", lambda: noise(10)), ("silence", lambda: silence(5)),
])  # fmt: skip
def test_non_speech_has_no_speech(name, signal):
    assert detect_speech(signal()) == [], name


def test_speech_regions_sit_on_the_speech():
    clip = speech()
    x = np.concatenate([silence(4.0), clip, silence(4.0), clip, hum(20)])
    regions = detect_speech(x)
    starts = [4.0, 4.0 + len(clip) / SR + 4.0]
    assert len(regions) == 2
    for (s, e), t0 in zip(regions, starts):
        assert t0 - 0.1 <= s / SR and e / SR <= t0 + len(clip) / SR + 0.1
    # Every region lies on the speech: none in the silence before, between, or in the hum.
    assert all(s / SR >= 3.9 for s, _ in regions) and regions[-1][1] / SR <= starts[1] + len(clip) / SR + 0.1


def test_region_rules_follow_silero():
    # Frames: 10 speech, 2 quiet (64 ms < 100 ms min silence: bridged), 10 speech, 20 quiet, 5 speech (160 ms < 250 ms: dropped).
    probs = np.array([0.9] * 10 + [0.1] * 2 + [0.9] * 10 + [0.1] * 20 + [0.9] * 5 + [0.1] * 20, np.float32)
    n = len(probs) * FRAME_SAMPLES
    regions = speech_regions(probs, n, VadOptions(pad_s=0.0))
    assert regions == [(0, 22 * FRAME_SAMPLES)]
    # Hysteresis: 0.4 is below the 0.5 threshold but above 0.35 (threshold - 0.15): speech goes on.
    probs = np.array([0.9] * 10 + [0.4] * 10 + [0.1] * 10, np.float32)
    assert speech_regions(probs, len(probs) * FRAME_SAMPLES, VadOptions(pad_s=0.0)) == [(0, 20 * FRAME_SAMPLES)]
    # Padding is clipped to the recording.
    assert speech_regions(probs, len(probs) * FRAME_SAMPLES, VadOptions(pad_s=1.0)) == [(0, 30 * FRAME_SAMPLES)]


def test_chunks_merge_close_regions_and_leave_long_gaps_out():
    x = np.zeros(100 * SR, np.float32)
    regions = [(1 * SR, 3 * SR), (int(3.5 * SR), 6 * SR), (20 * SR, 22 * SR)]
    chunks, speech_s = plan_speech_chunks(x, regions, SR, max_chunk_s=30, max_gap_s=1.0)
    assert chunks == [(1 * SR, 6 * SR), (20 * SR, 22 * SR)]
    assert speech_s == pytest.approx([4.5, 2.0])
    # max_chunk_s bounds a merged chunk.
    chunks, _ = plan_speech_chunks(x, regions, SR, max_chunk_s=4, max_gap_s=1.0)
    assert chunks == [(1 * SR, 3 * SR), (int(3.5 * SR), 6 * SR), (20 * SR, 22 * SR)]
    # A region longer than max_chunk_s is cut inside, at its quietest point, into pieces <= max_chunk_s.
    long_region = np.concatenate([noise(3, seed=1), silence(0.2), noise(3, seed=2)])
    chunks, speech_s = plan_speech_chunks(long_region, [(0, len(long_region))], SR, max_chunk_s=4, max_gap_s=1.0)
    assert len(chunks) == 2 and chunks[0][0] == 0 and chunks[-1][1] == len(long_region)
    assert 3 * SR <= chunks[0][1] <= int(3.2 * SR) and all(e - s <= 4 * SR for s, e in chunks)
    assert plan_speech_chunks(x, [], SR, 30, 1.0) == ([], [])


def test_decode_stage_plans_chunks_on_speech(tmp_path):
    clip = speech()
    with_speech = np.concatenate([silence(4.0), clip, hum(20)])
    sf.write(tmp_path / "speech.wav", with_speech, SR)
    sf.write(tmp_path / "noise.wav", noise(5), SR)
    batch = pa.table({
        "id": ["speech", "noise"], "audio": [str(tmp_path / "speech.wav"), str(tmp_path / "noise.wav")],
        "error_stage": pa.nulls(2, pa.string()), "error": pa.nulls(2, pa.string()),
    })  # fmt: skip
    vad = JobConfig.model_validate({"input": {"manifest": "m.jsonl"}, "output": {"path": "o"}}).vad
    assert vad.enabled  # on by default
    rows = decode_batch(batch, max_chunk_s=60, vad=vad.model_dump()).to_pylist()
    speech_row, noise_row = rows
    assert speech_row["error"] is None and noise_row["error"] is None
    (start, end) = speech_row["chunks"]
    # Nothing of the silence, and of the hum only the model's release (its probability decays over
    # a few 32 ms frames after the voice stops) plus the padding.
    assert 3.9 * SR <= start and end <= (4.0 + len(clip) / SR + 0.3) * SR
    assert 0.5 * len(clip) / SR <= speech_row["speech_s"] <= len(clip) / SR + 0.1
    assert speech_row["chunk_speech_s"] == [pytest.approx(speech_row["speech_s"])]
    # No speech: a row with no chunks and speech_s 0, not a failure.
    assert noise_row["chunks"] == [] and noise_row["speech_s"] == 0.0
    # VAD off: the whole recording is one chunk and speech_s is unknown.
    rows = decode_batch(batch, max_chunk_s=60, vad={**vad.model_dump(), "enabled": False}).to_pylist()
    assert rows[0]["chunks"] == [0, len(with_speech)] and rows[0]["speech_s"] is None
