"""The benchmark corpus: the bundled speech re-encoded per format and sample rate.

Speech (not noise or tones) so that every codec works as it does on real data; each file is a
``clip_s`` slice of the bundled recordings, at a different offset per file, resampled to the rate
and written with libsndfile. Opus only exists at 8/12/16/24/48 kHz, so it skips other rates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from pipeline.audio.decode import decode_audio

SPEECH_DIR = Path(__file__).resolve().parents[2] / "tests" / "assets" / "speech"
FORMATS = {  # name -> (extension, libsndfile format, subtype)
    "wav": ("wav", "WAV", "PCM_16"),
    "flac": ("flac", "FLAC", "PCM_16"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
    "opus": ("opus", "OGG", "OPUS"),
}
OPUS_RATES = {8000, 12000, 16000, 24000, 48000}


@dataclass(frozen=True)
class BenchFile:
    path: str
    format: str
    sample_rate: int
    duration_s: float


def supported(fmt: str, rate: int) -> bool:
    return fmt != "opus" or rate in OPUS_RATES


def speech_bank(source_dir: Path = SPEECH_DIR) -> np.ndarray:
    """All bundled recordings, decoded to 16 kHz mono and concatenated."""
    parts = [decode_audio(str(p), target_sr=16000).samples for p in sorted(source_dir.iterdir()) if p.suffix != ".jsonl"]
    return np.concatenate(parts)


def make_corpus(
    out_dir: str | os.PathLike,
    *,
    formats: list[str],
    rates: list[int],
    files_per_kind: int,
    clip_s: float,
    channels: int = 1,
) -> list[BenchFile]:
    """Write the corpus (reusing files already there) and a ``manifest.jsonl`` listing it.

    Files are listed kinds interleaved (one of each kind, then the next of each), as a real
    manifest mixes them: listed kind by kind, a decode task of opus files would cost many times
    one of 16 kHz wav, and a run's last tasks would leave cores idle for that reason alone."""
    out = Path(out_dir).resolve()  # the manifest lists absolute paths
    out.mkdir(parents=True, exist_ok=True)
    bank = speech_bank()
    n = int(clip_s * 16000)
    entries: list[tuple[int, int, BenchFile]] = []
    k = 0
    for fmt in formats:
        ext, container, subtype = FORMATS[fmt]
        for rate in rates:
            if not supported(fmt, rate):
                continue
            for i in range(files_per_kind):
                path = out / f"{fmt}_{rate}_{channels}ch_{clip_s:g}s_{i:03d}.{ext}"
                if not path.exists():
                    start = (k * 7919 * 16) % max(1, len(bank) - n)
                    clip = np.resize(bank[start:], n) if len(bank) - start < n else bank[start : start + n]
                    audio = soxr.resample(clip, 16000, rate, quality="HQ") if rate != 16000 else clip
                    audio = np.clip(audio, -0.99, 0.99).astype(np.float32)
                    if channels > 1:
                        audio = np.repeat(audio[:, None], channels, axis=1)
                    tmp = path.with_suffix(".tmp" + path.suffix)
                    sf.write(tmp, audio, rate, format=container, subtype=subtype)
                    os.replace(tmp, path)
                info = sf.info(str(path))
                entries.append((i, k, BenchFile(str(path), fmt, rate, info.frames / info.samplerate)))
                k += 1
    files = [b for _, _, b in sorted(entries, key=lambda e: e[:2])]
    write_manifest(files, out / "manifest.jsonl")
    return files


def write_manifest(files: list[BenchFile], path: str | os.PathLike) -> str:
    """A JSONL manifest of ``files`` (ids from the file names); returns its absolute path."""
    with open(path, "w") as f:
        for b in files:
            f.write(json.dumps({"id": Path(b.path).stem, "audio": b.path}) + "\n")
    return os.path.abspath(path)
