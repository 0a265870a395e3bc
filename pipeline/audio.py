"""Decode one recording (or one offset/duration segment of it) to mono float32 at a target rate.

Pure functions, no Ray: the decode stage wraps `decode_audio` and turns an `AudioError` into the
row's `error` / `error_stage` values. Every failure a bad input can cause is an `AudioError` with
a `category`, so the failed/ output can be grouped by cause; anything else is a bug and propagates.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import numpy as np
import soundfile as sf
import soxr

# libsndfile's SF_ERR_UNRECOGNISED_FORMAT: the bytes are not any container it knows, which is a
# different fix for the user (convert the file) than a truncated or corrupt file.
_SF_ERR_UNRECOGNISED_FORMAT = 1

# An offset that lands within this much of the end is rounding in the manifest, not a bad segment.
_END_TOLERANCE_S = 1e-3

# Peak below this (about -80 dBFS, under the noise floor of any 16-bit recording) is digital
# silence: nothing to transcribe, and a model given it tends to invent text.
SILENCE_PEAK = 1e-4


class AudioError(Exception):
    """A recording that cannot be turned into samples; `category` is a short machine-readable cause.

    Categories: not_found, read_error, decode_error, unsupported_format, empty_audio, bad_segment,
    missing_audio, too_long, too_short, invalid_samples, silent_audio.
    """

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the category when Ray pickles the exception across processes.
        return (type(self), (self.category, str(self)))


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, at the requested target rate, C-contiguous
    source_sample_rate: int
    source_channels: int
    duration_s: float  # of the decoded span, from source frames (exact, not from len(samples))


def decode_audio(
    source: str | None,
    data: bytes | None = None,
    *,
    offset_s: float | None = None,
    duration_s: float | None = None,
    target_sr: int = 16000,
    storage_options: dict | None = None,
    max_duration_s: float | None = None,
    min_duration_s: float | None = None,
    reject_silence: bool = False,
) -> DecodedAudio:
    """Decode `data` if given (embedded audio; `source` then only names it), else read `source`.

    `source` is anything fsspec opens: a local path, file://, s3://, gs://. With `offset_s` and/or
    `duration_s` only that span is decoded (seeking where the format allows). A duration that runs
    past the end of the file is clipped to the end; the returned `duration_s` is what was decoded.

    A span longer than `max_duration_s` is refused from the header, before any sample is read
    (or, for a stream of unknown length, as soon as it passes the limit), so one huge file cannot
    exhaust a worker's memory. Spans shorter than `min_duration_s`, NaN/Inf samples and (with
    `reject_silence`) digital silence are refused too.
    """
    name = source if source else "<embedded audio>"
    if data is None and not source:
        raise AudioError("missing_audio", "row has no audio path and no embedded audio bytes")
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    _check_segment(name, offset_s, duration_s)

    limit = max_duration_s
    try:
        if data is not None:
            _check_not_empty(name, len(data))
            frames, rate, channels = _decode_stream(io.BytesIO(data), name, offset_s, duration_s, limit)
        elif _is_local(source):
            # libsndfile's own file I/O: a Python file object costs a callback per read.
            path = _local_path(source)
            _check_not_empty(name, os.path.getsize(path))
            frames, rate, channels = _decode_stream(path, name, offset_s, duration_s, limit)
        else:
            with fsspec.open(source, "rb", **(storage_options or {})) as f:
                _check_not_empty(name, getattr(f, "size", None))
                frames, rate, channels = _decode_stream(f, name, offset_s, duration_s, limit)
    except AudioError:
        raise
    except FileNotFoundError as e:
        raise AudioError("not_found", f"{name}: file not found") from e
    except sf.LibsndfileError as e:
        if e.code == _SF_ERR_UNRECOGNISED_FORMAT:
            raise AudioError(
                "unsupported_format",
                f"{name}: not a recognised audio format (readable: wav, flac, mp3, ogg, opus)",
            ) from e
        raise AudioError("decode_error", f"{name}: cannot decode audio: {e.error_string}") from e
    except (RuntimeError, EOFError) as e:
        # soundfile raises plain RuntimeError (SoundFileRuntimeError) for some decoder failures.
        raise AudioError("decode_error", f"{name}: cannot decode audio: {e}") from e
    except OSError as e:
        # Permission denied, network failure, a directory instead of a file, ...
        raise AudioError("read_error", f"{name}: cannot read file: {e}") from e

    seconds = frames.shape[0] / rate
    if min_duration_s is not None and seconds < min_duration_s:
        raise AudioError("too_short", f"{name}: {seconds:.3f} s of audio, shorter than the {min_duration_s} s minimum")
    if not np.isfinite(frames).all():
        raise AudioError("invalid_samples", f"{name}: the audio holds NaN or infinite sample values")
    if reject_silence and float(np.abs(frames).max()) < SILENCE_PEAK:
        raise AudioError("silent_audio", f"{name}: the audio is digital silence (peak below {SILENCE_PEAK})")
    mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0]
    if rate != target_sr:
        mono = soxr.resample(mono, rate, target_sr, quality="HQ")
    samples = np.ascontiguousarray(mono, dtype=np.float32)
    return DecodedAudio(
        samples=samples,
        source_sample_rate=rate,
        source_channels=channels,
        duration_s=frames.shape[0] / rate,
    )


def _check_not_empty(name: str, size: int | None) -> None:
    # libsndfile calls a 0-byte file an unknown format; the fix (re-upload it) is a different one.
    if size == 0:
        raise AudioError("empty_audio", f"{name}: the file is empty (0 bytes)")


def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def _local_path(source: str) -> str:
    path = source[len("file://") :] if source.startswith("file://") else source
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory", path)  # libsndfile's message would be vague
    if not os.path.exists(path):
        raise FileNotFoundError(2, "no such file", path)
    return path


def _check_segment(name: str, offset_s: float | None, duration_s: float | None) -> None:
    if offset_s is not None and not (np.isfinite(offset_s) and offset_s >= 0):
        raise AudioError("bad_segment", f"{name}: offset must be >= 0 seconds, got {offset_s}")
    if duration_s is not None and not (np.isfinite(duration_s) and duration_s > 0):
        raise AudioError("bad_segment", f"{name}: duration must be > 0 seconds, got {duration_s}")


def _too_long(name: str, seconds: float, limit: float) -> AudioError:
    return AudioError(
        "too_long",
        f"{name}: {seconds:.1f} s of audio exceeds decode.max_audio_s ({limit:g} s); split the file or "
        "give offset/duration segments in the manifest",
    )


def _decode_stream(
    stream: BinaryIO | str,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int, int]:
    """Return (frames as float32 [n, channels], source rate, channels) for the requested span."""
    with sf.SoundFile(stream) as f:
        rate, channels, total = int(f.samplerate), int(f.channels), int(f.frames)
        if total <= 0:
            # Some streams report 0 frames up front yet decode fine; only reading tells. Read at
            # most one frame past the limit, so memory stays bounded either way.
            cap = -1 if max_duration_s is None else int(max_duration_s * rate) + 1
            frames = f.read(cap, dtype="float32", always_2d=True)
            total = frames.shape[0]
            if max_duration_s is not None and total >= cap:
                raise _too_long(name, total / rate, max_duration_s)
            if total == 0:
                raise AudioError("empty_audio", f"{name}: file contains no audio frames")
            return _slice(frames, rate, name, offset_s, duration_s), rate, channels

        start, count = _span(total, rate, name, offset_s, duration_s)
        if max_duration_s is not None and count / rate > max_duration_s:
            raise _too_long(name, count / rate, max_duration_s)
        if start == 0 and count == total:
            frames = f.read(dtype="float32", always_2d=True)
        elif f.seekable():
            f.seek(start)
            frames = f.read(count, dtype="float32", always_2d=True)
        else:
            frames = f.read(dtype="float32", always_2d=True)[start : start + count]
    if frames.shape[0] == 0:
        raise AudioError("empty_audio", f"{name}: file contains no audio frames")
    return frames, rate, channels


def _span(
    total: int, rate: int, name: str, offset_s: float | None, duration_s: float | None
) -> tuple[int, int]:
    """Frame range [start, start + count) for the segment, clipped to the file."""
    start = int(round((offset_s or 0.0) * rate))
    if start >= total:
        if offset_s is not None and offset_s - total / rate >= _END_TOLERANCE_S:
            raise AudioError(
                "bad_segment",
                f"{name}: offset {offset_s:.3f} s is beyond the end of the audio "
                f"({total / rate:.3f} s)",
            )
        # Offset is the end within rounding: nothing left to decode.
        raise AudioError("empty_audio", f"{name}: segment at {offset_s:.3f} s has no audio frames")
    count = total - start
    if duration_s is not None:
        count = min(count, max(1, int(round(duration_s * rate))))
    return start, count


def _slice(
    frames: np.ndarray, rate: int, name: str, offset_s: float | None, duration_s: float | None
) -> np.ndarray:
    start, count = _span(frames.shape[0], rate, name, offset_s, duration_s)
    return frames[start : start + count]

