"""Ways to turn a file into 16 kHz mono float32: the plain loop the pipeline is measured against,
and the alternatives users would otherwise write. Each returns the samples, so outputs can be
compared, and each is timed over the same files in one process."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

TARGET_SR = 16000


# Extensions the pipeline reads with libsndfile (the benchmark's own corpus names its files by
# format); Ogg Opus goes to FFmpeg (pipeline/audio/decode.py, FAST_PATH), so its plain loop is PyAV's.
SNDFILE_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


def plain(path: str) -> np.ndarray:
    """The baseline, in the simplest form, with the library that reads the format in the
    pipeline: soundfile + soxr for libsndfile's formats, a PyAV decode loop + soxr for the others."""
    import soxr

    if path.lower().endswith(SNDFILE_EXTENSIONS):
        import soundfile as sf

        frames, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    else:
        mono, rate = plain_pyav(path)
    return soxr.resample(mono, rate, TARGET_SR, quality="HQ") if rate != TARGET_SR else mono


def plain_pyav(path: str) -> tuple[np.ndarray, int]:
    """(mono float32 [n], rate): every frame of the first audio stream, planar float as FFmpeg's
    AAC, Opus and WMA decoders give it, downmixed by mean."""
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        parts = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    x = np.concatenate(parts, axis=1)
    if x.dtype != np.float32:  # ALAC: planar integers
        x = x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    return (x[0] if x.shape[0] == 1 else x.mean(axis=0, dtype=np.float32)), rate


def librosa_load(path: str) -> np.ndarray:
    import librosa

    samples, _ = librosa.load(path, sr=TARGET_SR, mono=True)
    return samples


def ours(path: str) -> np.ndarray:
    """What the pipeline's decode stage runs."""
    from pipeline.audio.decode import decode_audio

    return decode_audio(path, target_sr=TARGET_SR).samples


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str | None:
    """A system ffmpeg, else the static one of the imageio-ffmpeg package, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return None


def ffmpeg_subprocess(path: str) -> np.ndarray:
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-threads", "1", "-i", path, "-f", "f32le", "-ac", "1", "-ar", str(TARGET_SR), "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.float32)


def available() -> dict[str, Callable[[str], np.ndarray] | str]:
    """Decoder name -> function, or the reason it cannot run here."""
    found: dict[str, Callable[[str], np.ndarray] | str] = {"plain (soundfile or PyAV, +soxr)": plain}
    try:
        import librosa  # noqa: F401

        found["librosa.load"] = librosa_load
    except ImportError:
        found["librosa.load"] = "librosa is not installed (pip install '.[bench]')"
    found["ffmpeg subprocess"] = ffmpeg_subprocess if ffmpeg_binary() else "no ffmpeg (pip install '.[bench]' for imageio-ffmpeg)"
    found["ours (pipeline.audio.decode.decode_audio)"] = ours
    return found


def decode_all(fn: Callable[[str], np.ndarray], paths: Sequence[str]) -> int:
    """Output samples for decoding every path once (a process pool's unit of work)."""
    return sum(len(fn(p)) for p in paths)


def time_loop(fn: Callable[[str], np.ndarray], paths: Sequence[str]) -> tuple[float, int]:
    """(seconds, output samples) for decoding every path once, in this process."""
    fn(paths[0])  # imports, codec initialisation
    t0 = time.perf_counter()
    total = decode_all(fn, paths)
    return time.perf_counter() - t0, total
