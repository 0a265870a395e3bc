"""Decode one recording (or one offset/duration segment of it) to mono float32 at a target rate.

Pure functions, no Ray: the decode stage wraps `decode_audio` and turns an `AudioError` into the
row's `error` / `error_stage` values. Every failure a bad input can cause is an `AudioError` with
a `category`, so the failed/ output can be grouped by cause; anything else is a bug and propagates.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf
import soxr

from pipeline.io import storage
from pipeline.redact import redact_url

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
    missing_audio, too_long, too_short, invalid_samples, silent_audio, unsupported_scheme,
    forbidden_url, forbidden_path, access_denied, storage_error.
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
    allowed_hosts: Sequence[str] = (),
    allow_local_paths: bool = True,
) -> DecodedAudio:
    """Decode `data` if given (embedded audio; `source` then only names it), else read `source`.

    `source` is anything fsspec opens: a local path, file://, s3://, gs://. With `offset_s` and/or
    `duration_s` only that span is decoded (seeking where the format allows). A duration that runs
    past the end of the file is clipped to the end; the returned `duration_s` is what was decoded.

    A span longer than `max_duration_s` is refused from the header, before any sample is read
    (or, for a stream of unknown length, as soon as it passes the limit), so one huge file cannot
    exhaust a worker's memory. Spans shorter than `min_duration_s`, NaN/Inf samples and (with
    `reject_silence`) digital silence are refused too.

    `source` usually comes from a manifest, i.e. from outside: before anything is opened it must
    pass `check_source` (its scheme, its host against `allowed_hosts`, local paths only with
    `allow_local_paths`). Messages name it without credentials (`redact_url`).
    """
    name = redact_url(source) if source else "<embedded audio>"
    if data is None and not source:
        raise AudioError("missing_audio", "row has no audio path and no embedded audio bytes")
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    _check_segment(name, offset_s, duration_s)
    if data is None:
        check_source(source, allowed_hosts=allowed_hosts, allow_local_paths=allow_local_paths)

    limit = max_duration_s
    try:
        if data is not None:
            _check_not_empty(name, len(data))
            frames, rate, channels = _decode_stream(io.BytesIO(data), name, offset_s, duration_s, limit)
        elif _is_local(source):
            # libsndfile's own file I/O: a Python file object costs a callback per read.
            path, size = _local_file(source)
            _check_not_empty(name, size)
            frames, rate, channels = _decode_stream(path, name, offset_s, duration_s, limit)
        else:
            fs, path = storage.fsspec_fs(source, _open_options(source, storage_options))
            with fs.open(path, "rb") as f:
                _check_not_empty(name, getattr(f, "size", None))
                fetch = _Fetch(f)
                try:
                    frames, rate, channels = _decode_stream(fetch, name, offset_s, duration_s, limit)
                finally:
                    fetch.raise_failure()
    except AudioError:
        raise
    except FileNotFoundError as e:
        if isinstance(e.__cause__, AudioError):  # a refused redirect, re-raised by fsspec's info()
            raise e.__cause__ from None
        raise AudioError("not_found", f"{name}: file not found") from e
    except PermissionError as e:
        raise AudioError("access_denied", f"{name}: access denied: {e}") from e
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
    except storage.transport_errors() as e:
        raise AudioError("storage_error", f"{name}: storage request failed after retries: {type(e).__name__}: {e}") from e
    except OSError as e:
        if data is None and not _is_local(source):
            # The clients retried 5xx replies, timeouts and dropped connections; this one outlasted them.
            raise AudioError("storage_error", f"{name}: storage request failed after retries: {e}") from e
        # A directory instead of a file, a disk error, ...
        raise AudioError("read_error", f"{name}: cannot read file: {e}") from e

    seconds = frames.shape[0] / rate
    if min_duration_s is not None and seconds < min_duration_s:
        raise AudioError("too_short", f"{name}: {seconds:.3f} s of audio, shorter than the {min_duration_s} s minimum")
    if reject_silence and float(np.abs(frames).max()) < SILENCE_PEAK:
        raise AudioError("silent_audio", f"{name}: the audio is digital silence (peak below {SILENCE_PEAK})")
    mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0]
    if rate != target_sr:
        mono = soxr.resample(mono, rate, target_sr, quality="HQ")
    samples = np.ascontiguousarray(mono, dtype=np.float32)
    if not _all_finite(samples):
        raise AudioError("invalid_samples", f"{name}: the audio holds NaN or infinite sample values")
    return DecodedAudio(
        samples=samples,
        source_sample_rate=rate,
        source_channels=channels,
        duration_s=frames.shape[0] / rate,
    )


# Schemes a manifest may name besides local paths. fsspec knows many more (memory://, zip://,
# ftp://, sftp://, "a::b" chains, ...): a manifest is data from outside and must not choose how,
# or from where, the workers read.
_STORAGE_SCHEMES = frozenset({"file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_HTTP_SCHEMES = frozenset({"http", "https"})
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
# Characters that URL parsers disagree on (a backslash before "@" is a classic way to make a
# checker and a client see different hosts): refused in the authority of an http(s) URL.
_AMBIGUOUS_AUTHORITY = re.compile(r"[\\\s\x00-\x1f\x7f]")


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """``host`` equals an entry, or ends in the suffix of a ``*.example.com`` entry (which does
    not match ``example.com`` itself). Case-insensitive; entries never match by IP range."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def check_source(source: str, *, allowed_hosts: Sequence[str] = (), allow_local_paths: bool = True) -> None:
    """Raise AudioError unless `source` may be read: a local path or file:// (with
    `allow_local_paths`), an object store (s3://, gs://, ...), or http(s):// whose host is in
    `allowed_hosts`. Nothing is opened or resolved here, so a refused URL costs no connection."""
    name = redact_url(source)
    if _is_local(source):
        if not allow_local_paths:
            raise AudioError(
                "forbidden_path", f"{name}: local paths are not allowed (input.allow_local_paths is false)"
            )
        return
    scheme, _, rest = source.partition("://")
    scheme = scheme.lower()
    if not _SCHEME.fullmatch(scheme) or "::" in source:
        raise AudioError("unsupported_scheme", f"{name}: not a plain URL (chained fsspec URLs are not read)")
    if scheme in _STORAGE_SCHEMES:
        return
    if scheme not in _HTTP_SCHEMES:
        readable = ", ".join(sorted(_STORAGE_SCHEMES | _HTTP_SCHEMES))
        raise AudioError("unsupported_scheme", f"{name}: scheme {scheme}:// is not read (readable: local paths, {readable})")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    try:
        host = urlsplit(source).hostname or ""
    except ValueError:  # a malformed port or IPv6 literal
        host = ""
    if not host or _AMBIGUOUS_AUTHORITY.search(authority) or authority.count("@") > 1:
        raise AudioError("forbidden_url", f"{name}: the URL's host cannot be read unambiguously")
    if not host_allowed(host, allowed_hosts):
        why = "no host is allowed" if not allowed_hosts else "not among input.allowed_hosts"
        raise AudioError("forbidden_url", f"{name}: host {host} is not allowed to be fetched ({why})")


async def _refuse_redirect(response: Any) -> None:
    # An allowed host must not send the worker on to one that is not (an internal address, the
    # cloud metadata server): redirects are refused, not followed.
    if 300 <= response.status < 400:
        target = redact_url(str(response.headers.get("Location", "")))
        raise AudioError(
            "forbidden_url", f"{redact_url(str(response.url))}: the server redirects ({response.status}) to {target}; redirects are not followed"
        )


def _open_options(source: str, storage_options: dict | None) -> dict:
    if source.partition("://")[0].lower() in _HTTP_SCHEMES:
        # The input's storage_options are for the object store (keys, endpoint): never sent to a
        # web host. Credentials for an allowed host go in the URL's userinfo.
        return {"allow_redirects": False, "client_kwargs": {"raise_for_status": _refuse_redirect}}
    return dict(storage_options or {})


class _Fetch:
    """A remote file as libsndfile reads it, keeping the error a read raised.

    libsndfile's I/O callbacks cannot raise: an exception there is printed and taken for the end
    of the file, so a fetch that failed after its retries would pass for a corrupt, unrecognised
    or (worse) shorter recording. The read ends instead and `raise_failure` raises the real error.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._error is None:
            try:
                return self._f.read(size)
            except Exception as e:
                self._error = e
        return b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def raise_failure(self) -> None:
        if self._error is not None:
            raise self._error


def _all_finite(samples: np.ndarray) -> bool:
    """No NaN or infinity among the samples (those of the input carry through downmix and resampling).

    A min and a max propagate NaN and infinities and read the samples without writing a temporary
    array; ``np.isfinite(x).all()`` writes one as large as the recording, about 2 % of a decode."""
    return samples.size == 0 or (math.isfinite(samples.min()) and math.isfinite(samples.max()))


def _check_not_empty(name: str, size: int | None) -> None:
    # libsndfile calls a 0-byte file an unknown format; the fix (re-upload it) is a different one.
    if size == 0:
        raise AudioError("empty_audio", f"{name}: the file is empty (0 bytes)")


def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def _local_file(source: str) -> tuple[str, int]:
    """(path, size in bytes); FileNotFoundError or PermissionError from one stat."""
    path = source[len("file://") :] if source.startswith("file://") else source
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a directory", path)  # libsndfile's message would be vague
    return path, st.st_size


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

