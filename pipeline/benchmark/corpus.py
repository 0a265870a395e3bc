"""The benchmark corpus: the bundled speech re-encoded per format and sample rate.

Speech (not noise or tones) so that every codec works as it does on real data; each file is a
``clip_s`` slice of the bundled recordings, at a different offset per file, resampled to the rate
and written with libsndfile (wav, flac, mp3, ogg, opus) or FFmpeg through PyAV (m4a: AAC, alac,
webm: Opus, wma). Opus only exists at 8/12/16/24/48 kHz, so it skips other rates.
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
    "ogg": ("ogg", "OGG", "VORBIS"),
    "opus": ("opus", "OGG", "OPUS"),
}
# Formats only FFmpeg reads, written with PyAV: name -> (extension, FFmpeg muxer, encoder).
FFMPEG_FORMATS = {
    "m4a": ("m4a", "mp4", "aac"),
    "alac": ("m4a", "mp4", "alac"),
    "webm": ("webm", "webm", "libopus"),
    "wma": ("wma", "asf", "wmav2"),
}
OPUS_RATES = {8000, 12000, 16000, 24000, 48000}
# Rates FFmpeg's AAC and WMA encoders take.
_AAC_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}


@dataclass(frozen=True)
class BenchFile:
    path: str
    format: str
    sample_rate: int
    duration_s: float


def supported(fmt: str, rate: int) -> bool:
    if fmt in ("opus", "webm"):
        return rate in OPUS_RATES
    if fmt in ("m4a", "wma"):
        return rate in _AAC_RATES and (fmt != "wma" or rate >= 16000)
    return True


def _write_ffmpeg(path: Path, audio: np.ndarray, rate: int, fmt: str) -> None:
    """``audio`` float32 [n] or [n, channels] encoded with FFmpeg (PyAV) as ``fmt``."""
    from fractions import Fraction

    import av

    _, muxer, codec = FFMPEG_FORMATS[fmt]
    x = audio.reshape(len(audio), -1)
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec == "wmav2":
            stream.bit_rate = 64000
        ctx = stream.codec_context
        resampler = av.AudioResampler(format=ctx.format, layout=layout, rate=rate, frame_size=ctx.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


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
        ext = FORMATS[fmt][0] if fmt in FORMATS else FFMPEG_FORMATS[fmt][0]
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
                    if fmt in FORMATS:
                        sf.write(tmp, audio, rate, format=FORMATS[fmt][1], subtype=FORMATS[fmt][2])
                    else:
                        _write_ffmpeg(tmp, audio, rate, fmt)
                    os.replace(tmp, path)
                seconds = decode_audio(str(path), target_sr=rate).duration_s
                entries.append((i, k, BenchFile(str(path), fmt, rate, seconds)))
                k += 1
    files = [b for _, _, b in sorted(entries, key=lambda e: e[:2])]
    write_manifest(files, out / "manifest.jsonl")
    return files


def write_manifest(files: list[BenchFile], path: str | os.PathLike, repeat: int = 1) -> str:
    """A JSONL manifest of ``files`` (ids from the file names), the whole list ``repeat`` times
    (ids of the copies suffixed ``-r1``, ``-r2``, ...: a repeated id would fail as a duplicate);
    returns its absolute path."""
    with open(path, "w") as f:
        for k in range(repeat):
            for b in files:
                row_id = Path(b.path).stem + (f"-r{k}" if k else "")
                f.write(json.dumps({"id": row_id, "audio": b.path}) + "\n")
    return os.path.abspath(path)
