"""Decode one recording (or one offset/duration segment of it) to mono float32 at a target rate.

Pure functions, no Ray: the decode stage wraps `decode_audio` and turns an `AudioError` into the
row's `error` / `error_stage` values. Every failure a bad input can cause is an `AudioError` with
a `category`, so the failed/ output can be grouped by cause; anything else is a bug and propagates.

Two decoders, chosen by the bytes (``probe.sniff``), never by the file name: libsndfile
(``sndfile_decode``) for WAV, FLAC, MP3, Ogg Vorbis, AIFF, where it decodes correctly and
fastest; FFmpeg through PyAV (``av_decode``) for Ogg Opus (faster), everything else and the files
libsndfile reads only in part. Every decode is held against the length the container declares (or, where it
declares none, an estimate from the byte size and bit rate): a shortfall libsndfile leaves is
decoded again with FFmpeg, and one that remains is never an ordinary result (``truncated_audio``,
or a row with ``decode_warnings`` under ``decode.on_truncation: keep``).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

from pipeline.audio import ogg
from pipeline.audio.av_decode import decode_av
from pipeline.audio.errors import AudioError, too_long
from pipeline.audio.mono import DecodePass, MonoSink
from pipeline.audio.probe import HEAD_BYTES, Probe, after_id3, sniff
from pipeline.audio.reader import Fetch, Input
from pipeline.audio.sndfile_decode import decode_sndfile
from pipeline.io import storage
from pipeline.redact import redact_url

__all__ = ["AudioError", "DecodedAudio", "check_source", "decode_audio", "host_allowed"]

# Peak below this (about -80 dBFS, under the noise floor of any 16-bit recording) is digital
# silence: nothing to transcribe, and a model given it tends to invent text.
SILENCE_PEAK = 1e-4

# Which decoder reads each codec libsndfile also reads, from the benchmark (README, "Decoding"):
# libsndfile where it is at least as fast, FFmpeg where it is faster: Ogg Opus decoded at
# 570-600 audio s/s per core with FFmpeg against 405-425 with libsndfile (10-s clips at 16 and
# 48 kHz; the same samples at 48 kHz, within 0.006 at 16 kHz where libsndfile decodes at the
# file's input rate and FFmpeg at 48 kHz before the resampler).
FAST_PATH: dict[str, str] = {"wav": "libsndfile", "flac": "libsndfile", "mp3": "libsndfile", "vorbis": "libsndfile", "opus": "ffmpeg"}

# A decode may fall short of the declared length by this much before it counts as lost audio:
# codecs end on whole frames, encoders trim or pad (an MP3 encoder's delay, a WMA's last frame).
SHORTFALL_S = 0.1
# Where the length is an estimate from the byte size and the bit rate (raw MP3, ADTS AAC without
# a frame count), only a large gap says anything.
ESTIMATE_SHORTFALL = 0.25
# LAME's encoder delay in samples plus one frame of padding: a Xing frame count includes both,
# a gapless decode does not.
_MP3_DELAY_SAMPLES = 1105
# What the content probe reads first (see _decode_input).
SHORT_HEAD_BYTES = 4096
# Compressed Ogg files are read whole to find their links; above this they are decoded as they come.
_OGG_SCAN_BYTES = 1 << 30


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded recording or segment.

    ``samples``: float32 [n], mono (the mean of the channels), at the requested target rate,
    C-contiguous. ``duration_s``: seconds of the decoded span, from source frames.
    ``warnings``: what was lost on the way and kept anyway (damaged packets replaced by silence,
    a shortfall kept under ``on_truncation='keep'``); empty for a complete decode."""

    samples: np.ndarray
    source_sample_rate: int
    source_channels: int
    duration_s: float
    warnings: tuple[str, ...] = ()
    decoder: str = ""


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
    on_truncation: Literal["fail", "keep"] = "fail",
    audio_stream: int = 0,
) -> DecodedAudio:
    """Decode `data` if given (embedded audio; `source` then only names it), else read `source`.

    `source` is anything fsspec opens: a local path, file://, s3://, gs://. With `offset_s` and/or
    `duration_s` only that span is decoded (seeking where the format allows). A duration that runs
    past the end of the file is clipped to the end; the returned `duration_s` is what was decoded.
    `audio_stream` picks the audio stream of a container that has several (0: the first), e.g.
    a video file's second language.

    A span longer than `max_duration_s` is refused from the header where the header can be
    trusted, before any sample is read (else as soon as decoding passes the limit), so one huge
    file cannot exhaust a worker's memory. Spans shorter than `min_duration_s`, NaN/Inf samples
    and (with `reject_silence`) digital silence are refused too.

    Audio the container declares but that could not be decoded (a cut or damaged file) raises
    `truncated_audio` with both durations; with `on_truncation='keep'` the decoded part is
    returned with the loss in `warnings`.

    `source` usually comes from a manifest, i.e. from outside: before anything is opened it must
    pass `check_source` (its scheme, its host against `allowed_hosts`, local paths only with
    `allow_local_paths`). Messages name it without credentials (`redact_url`).

    Raises AudioError (categories in its docstring); ValueError for a non-positive `target_sr`.
    """
    name = redact_url(source) if source else "<embedded audio>"
    if data is None and not source:
        raise AudioError("missing_audio", "row has no audio path and no embedded audio bytes")
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    _check_segment(name, offset_s, duration_s)
    if data is None:
        check_source(source, allowed_hosts=allowed_hosts, allow_local_paths=allow_local_paths)

    sink = MonoSink(target_sr)

    def run(inp: Input) -> tuple[DecodePass, MonoSink]:
        return _decode_input(inp, sink, name, offset_s, duration_s, max_duration_s, audio_stream)

    try:
        if data is not None:
            _check_not_empty(name, len(data))
            result, sink = run(Input(size=len(data), data=data))
        elif _is_local(source):
            path, size = _local_file(source)
            _check_not_empty(name, size)
            inp = Input(size=size, path=path)
            try:
                result, sink = run(inp)
            finally:
                inp.close()
        else:
            fs, path = storage.fsspec_fs(source, _open_options(source, storage_options))
            with fs.open(path, "rb") as f:
                size = getattr(f, "size", None)
                _check_not_empty(name, size)
                fetch = Fetch(f)
                try:
                    result, sink = run(Input(size=size if size is not None else _size_of(f), fileobj=fetch))
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
    except storage.transport_errors() as e:
        raise AudioError("storage_error", f"{name}: storage request failed after retries: {type(e).__name__}: {e}") from e
    except OSError as e:
        if data is None and not _is_local(source):
            # The clients retried 5xx replies, timeouts and dropped connections; this one outlasted them.
            raise AudioError("storage_error", f"{name}: storage request failed after retries: {e}") from e
        # A directory instead of a file, a disk error, ...
        raise AudioError("read_error", f"{name}: cannot read file: {e}") from e

    warnings = _held_against_header(result, name, on_truncation)
    samples = sink.finish()
    seconds = result.decoded_s
    if min_duration_s is not None and seconds < min_duration_s:
        raise AudioError("too_short", f"{name}: {seconds:.3f} s of audio, shorter than the {min_duration_s} s minimum")
    # One min and one max serve both checks: they propagate NaN and infinities and, unlike
    # np.abs(x).max() or np.isfinite(x).all(), write no temporary array as long as the recording.
    lo = hi = 0.0
    if samples.size and (reject_silence or not result.integer_samples):
        lo, hi = float(samples.min()), float(samples.max())
    if not result.integer_samples and not (math.isfinite(lo) and math.isfinite(hi)):
        raise AudioError("invalid_samples", f"{name}: the audio holds NaN or infinite sample values")
    if reject_silence and max(hi, -lo) < SILENCE_PEAK:
        raise AudioError("silent_audio", f"{name}: the audio is digital silence (peak below {SILENCE_PEAK})")
    return DecodedAudio(
        samples=samples,
        source_sample_rate=result.sample_rate,
        source_channels=result.channels,
        duration_s=seconds,
        warnings=tuple(warnings),
        decoder=result.decoder,
    )


def _size_of(f: Any) -> int:
    end = f.seek(0, os.SEEK_END)
    f.seek(0)
    return end


def _tolerance(declared_s: float, estimated: bool) -> float:
    return max(1.0, ESTIMATE_SHORTFALL * declared_s) if estimated else max(SHORTFALL_S, 0.001 * declared_s)


def _short(p: DecodePass) -> float:
    """Seconds of declared audio the pass did not produce, beyond the tolerance (0 if none)."""
    if p.declared_s is None:
        return 0.0
    gap = p.declared_s - p.decoded_s
    return gap if gap > _tolerance(p.declared_s, p.estimated) else 0.0


def _held_against_header(p: DecodePass, name: str, on_truncation: str) -> list[str]:
    """The pass's warnings; raises truncated_audio (or, kept, warns) where audio was lost."""
    if p.decoded_s <= 0:
        if p.declared_s:
            raise AudioError(
                "decode_error", f"{name}: cannot decode audio: no frame decodes (the header declares {p.declared_s:.2f} s)"
            )
        raise AudioError("empty_audio", f"{name}: file contains no audio frames")
    short = _short(p)
    lost = p.lost_s > SHORTFALL_S
    if not (short or lost or p.stopped):
        return list(p.notes)
    what = []
    if short:
        kind = "estimates from its size and bit rate" if p.estimated else "declares"
        what.append(f"decoded {p.decoded_s:.2f} s of the {p.declared_s:.2f} s the header {kind}")
    if p.stopped:
        what.append(f"{p.stopped} after {p.decoded_s:.2f} s")
    what += p.notes
    message = f"{name}: " + "; ".join(what)
    if on_truncation != "keep":
        raise AudioError("truncated_audio", message + " (decode.on_truncation: keep writes the decoded part with a warning)")
    return ["truncated_audio: " + "; ".join(what)]


def _decode_input(
    inp: Input,
    sink: MonoSink,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_s: float | None,
    audio_stream: int,
) -> tuple[DecodePass, MonoSink]:
    """Probe ``inp``, decode it with the decoder its content calls for, and where libsndfile's
    result falls short of the header (or libsndfile refuses it) decode it again with FFmpeg.
    Returns the pass and the sink that holds its samples."""
    # A few KB name nearly every file; an ID3 tag (a cover picture) or an unplaced start needs more.
    head = inp.head(SHORT_HEAD_BYTES)
    probe = sniff(head)
    if len(head) == SHORT_HEAD_BYTES and (probe.kind in ("unknown", "text") or head[:3] == b"ID3" or (probe.kind == "wav" and probe.wav is None)):
        head = inp.head(HEAD_BYTES)
        probe = sniff(head)
    if probe.kind == "text":
        raise AudioError(
            "unsupported_format", f"{name}: not audio: the bytes look like {probe.detail} (starts with {_preview(head)})"
        )

    def ffmpeg(src: Any, fmt: str | None, declared: tuple[float, bool] | None = None) -> Callable[[MonoSink], DecodePass]:
        return lambda s: decode_av(
            src, s, name=name, ffmpeg_format=fmt, offset_s=offset_s, duration_s=duration_s,
            max_duration_s=max_s, audio_stream=audio_stream, declared=declared,
        )  # fmt: skip

    def sndfile(src: Any, **kw: Any) -> Callable[[MonoSink], DecodePass]:
        return lambda s: decode_sndfile(
            src, s, name=name, offset_s=offset_s, duration_s=duration_s, max_duration_s=max_s, **kw
        )

    if probe.kind == "av":
        return ffmpeg(inp.source(), probe.ffmpeg_format)(sink), sink
    if probe.kind == "ogg":
        return _decode_ogg(inp, sink, name, offset_s, duration_s, max_s, audio_stream)
    if probe.kind == "unknown":
        # FFmpeg's probe knows far more containers than this module's signatures.
        try:
            return ffmpeg(inp.source(), None)(sink), sink
        except AudioError as e:
            if e.category != "unsupported_format":
                raise
        try:
            return sndfile(inp.source())(MonoSink(sink.target_sr)), sink
        except (sf.LibsndfileError, RuntimeError):
            raise AudioError(
                "unsupported_format",
                f"{name}: not a recognised audio format ({probe.detail}; read: WAV, FLAC, MP3, Ogg, Opus, "
                "AIFF, MP4/M4A/MOV/3GP, Matroska/WebM, ASF/WMA, AMR, AAC, AC-3 and what else FFmpeg reads)",
            ) from None

    fast: Callable[[MonoSink], DecodePass] | None
    retry: Callable[[MonoSink], DecodePass]
    no_span = offset_s is None and duration_s is None
    if probe.kind == "wav" and probe.wav is not None and probe.wav.unfinalized and probe.wav.subtype:
        # A crashed recorder's file: the sizes say nothing, the PCM data runs to the end of the file.
        w = probe.wav
        fast = sndfile(inp.window(w.data_offset, inp.size), raw=w, raw_bytes=inp.size - w.data_offset)
        retry = ffmpeg(inp.source(), "wav")
    elif probe.kind == "mp3" and probe.mp3 is not None:
        fast, retry = _mp3_decoders(inp, probe, head, no_span, sndfile, ffmpeg)
        if fast is None:
            return retry(sink), sink
    else:
        fast = sndfile(inp.source())
        retry = ffmpeg(inp.source(), probe.ffmpeg_format)
        w = probe.wav
        if w is not None and no_span and w.sample_rate:
            # libsndfile clips a WAV's frame count to the bytes there are: a file cut in transfer
            # would pass for a short one. Its data chunk's size says how long it was.
            plain, header_s = fast, w.data_size // w.block_align / w.sample_rate

            def fast(s: MonoSink) -> DecodePass:
                p = plain(s)
                p.declared_s = max(p.declared_s or 0.0, header_s)
                return p

    return _with_retry(fast, retry, sink)


def _with_retry(
    fast: Callable[[MonoSink], DecodePass], retry: Callable[[MonoSink], DecodePass], sink: MonoSink
) -> tuple[DecodePass, MonoSink]:
    """libsndfile first; FFmpeg where libsndfile refuses the file or stops short of its header.
    Of two incomplete passes the longer one is kept (its shortfall is then reported)."""
    failure: Exception | None = None
    first = None
    try:
        first = fast(sink)
        if not _short(first) and first.decoded_s > 0:
            return first, sink
    except (sf.LibsndfileError, RuntimeError, EOFError) as e:
        failure = e
    second_sink = MonoSink(sink.target_sr)
    try:
        second = retry(second_sink)
    except AudioError as e:
        if first is not None and e.category in ("unsupported_format", "decode_error"):
            return first, sink
        if failure is not None and e.category in ("unsupported_format", "decode_error"):
            raise AudioError(e.category, f"{e}; libsndfile: {_sf_reason(failure)}") from failure
        raise
    if first is not None and first.decoded_s > second.decoded_s:
        return first, sink
    if first is not None and first.declared_s is not None and not first.estimated:
        # What libsndfile read from the header still holds: FFmpeg may take its length from the
        # bytes that are there (a WAV cut in transfer), which would hide the loss.
        if second.declared_s is None or second.estimated or second.declared_s < first.declared_s:
            second.declared_s, second.estimated = first.declared_s, False
    return second, second_sink


def _sf_reason(e: Exception) -> str:
    # libsndfile says "File does not exist or is not a regular file" for some bytes it cannot
    # place: never let that stand for a file that is there.
    text = getattr(e, "error_string", None) or str(e)
    return "format not recognised" if "does not exist" in text else text


def _mp3_decoders(
    inp: Input, probe: Probe, head: bytes, no_span: bool, sndfile: Callable, ffmpeg: Callable
) -> tuple[Callable[[MonoSink], DecodePass] | None, Callable[[MonoSink], DecodePass]]:
    """libsndfile and FFmpeg set up for an MP3: past any zeros before the first frame (libsndfile
    does not look for it there), held against the Xing/VBRI frame count, and FFmpeg alone where
    the file holds more MPEG data than that header counts (joined files: libsndfile stops at the
    count, reporting it as the whole length)."""
    m = probe.mp3
    end = inp.size
    if inp.tail(128)[:3] == b"TAG":  # ID3v1 at the end
        end -= 128
    payload = end - m.first_frame
    declared: tuple[float, bool] | None = None
    joined = False
    if m.declared_frames:
        counted_s = m.declared_frames * m.samples_per_frame / m.sample_rate
        # A lower bound of the gapless length: the count includes the encoder delay and padding.
        declared = (max(0.0, counted_s - (_MP3_DELAY_SAMPLES + m.samples_per_frame) / m.sample_rate), False)
        if m.declared_bytes and payload > m.declared_bytes * 1.02 + 2 * 1441:
            joined = True
            declared = (payload / (m.declared_bytes / counted_s), True) if counted_s else None
    elif m.bit_rate:
        declared = (payload * 8 / m.bit_rate, True)
    retry = ffmpeg(inp.source(), "mp3", declared if no_span else None)
    if joined or FAST_PATH["mp3"] != "libsndfile":
        return None, retry
    src = inp.window(m.first_frame, end) if m.first_frame > after_id3(head) else inp.source()
    plain = sndfile(src)

    def fast(sink: MonoSink) -> DecodePass:
        p = plain(sink)
        if declared is not None and no_span:
            if declared[1]:  # no frame count: libsndfile's length is an estimate as well
                p.estimated = True
            p.declared_s = max(p.declared_s or 0.0, declared[0])
        return p

    return fast, retry


def _decode_ogg(
    inp: Input,
    sink: MonoSink,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_s: float | None,
    audio_stream: int,
) -> tuple[DecodePass, MonoSink]:
    """An Ogg file, link by link: each link of a chained file decoded as the standalone file it was."""
    whole = inp.size <= _OGG_SCAN_BYTES
    data = inp.whole() if whole else inp.head(HEAD_BYTES)
    parts = ogg.links(data)
    if len(parts) <= 1 or not whole:
        link = parts[0] if parts else None
        return _ogg_link(
            inp.source(), inp.source, link.codec if link else "", sink, name, offset_s, duration_s,
            max_s, audio_stream, link.seconds if link and whole else None,
        )  # fmt: skip
    # Offsets and durations run over the links end to end; links before the span are skipped
    # by their declared length, so a segment of a long chain decodes only the links it touches.
    start_s = offset_s or 0.0
    end_s = math.inf if duration_s is None else start_s + duration_s
    lengths = [link.seconds for link in parts]
    if max_s is not None and None not in lengths:
        span = max(0.0, min(end_s, sum(lengths)) - start_s)
        if span > max_s:
            raise too_long(name, f"{span:.1f} s of audio (in {len(parts)} chained streams)", max_s)
    total = DecodePass(0, 0, 0.0, declared_s=0.0)
    t = 0.0
    for link in parts:
        length = link.seconds
        if length is not None and t + length <= start_s:
            t += length
            continue
        if t >= end_s:
            break
        local_offset = (start_s - t) if start_s > t else None
        local_duration = None if math.isinf(end_s) else end_s - max(t, start_s)
        piece = memoryview(data)[link.start : link.end]
        p, link_sink = _ogg_link(
            io.BytesIO(piece), lambda piece=piece: io.BytesIO(piece), link.codec, MonoSink(sink.target_sr),
            name, local_offset, local_duration, max_s, audio_stream, link.seconds,
        )  # fmt: skip
        sink.extend(link_sink)
        if max_s is not None and sink.output_s > max_s:
            raise too_long(name, f"more than {max_s:g} s of audio", max_s)
        total.sample_rate = total.sample_rate or p.sample_rate
        total.channels = max(total.channels, p.channels)
        total.declared_s = None if p.declared_s is None or total.declared_s is None else total.declared_s + p.declared_s
        total.lost_s += p.lost_s
        total.notes += p.notes
        total.stopped = total.stopped or p.stopped
        total.decoder = " + ".join(dict.fromkeys(filter(None, [*total.decoder.split(" + "), p.decoder])))
        t += length if length is not None else p.decoded_s
    if total.sample_rate == 0:
        raise AudioError("bad_segment", f"{name}: offset {start_s:.3f} s is beyond the end of the audio ({t:.3f} s)")
    total.decoded_s = sink.source_frames_s
    return total, sink


def _ogg_link(
    src: Any,
    again: Callable[[], Any],
    codec: str,
    sink: MonoSink,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_s: float | None,
    audio_stream: int,
    declared_s: float | None,
) -> tuple[DecodePass, MonoSink]:
    """One logical Ogg stream (``again`` opens it afresh for the second decoder), held against
    the length its last granule position declares."""
    span = None
    if declared_s is not None:
        span = max(0.0, min(declared_s - (offset_s or 0.0), duration_s if duration_s is not None else math.inf))

    def ffmpeg(s: MonoSink) -> DecodePass:
        declared = None if declared_s is None else (declared_s, False)
        return decode_av(
            again(), s, name=name, ffmpeg_format="ogg", offset_s=offset_s, duration_s=duration_s,
            max_duration_s=max_s, audio_stream=audio_stream, declared=declared,
        )  # fmt: skip

    def sndfile(s: MonoSink) -> DecodePass:
        p = decode_sndfile(src, s, name=name, offset_s=offset_s, duration_s=duration_s, max_duration_s=max_s)
        if span is not None:
            p.declared_s = max(p.declared_s or 0.0, span)
        return p

    if FAST_PATH.get(codec, "ffmpeg") != "libsndfile":
        return ffmpeg(sink), sink
    return _with_retry(sndfile, ffmpeg, sink)


def _preview(head: bytes) -> str:
    text = head[:40].decode("utf-8", "replace").strip()
    return repr(re.sub(r"\s+", " ", text))


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
