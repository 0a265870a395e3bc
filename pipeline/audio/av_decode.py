"""The FFmpeg decoder (PyAV; the wheel carries FFmpeg's libraries and codecs): everything
libsndfile does not read (MP4/M4A/MOV/3GP with AAC, ALAC or AMR, Matroska/WebM, ASF/WMA, ADTS
AAC, AC-3, the audio of video files, ...) and the files libsndfile reads only in part.

Unlike a plain PyAV loop it keeps going where a file is imperfect, and says what that cost:
a packet the codec refuses is skipped, counted, and its duration filled with silence (so later
audio keeps its time); a change of rate or channel count part way (joined files) starts a new
run of the resampler instead of failing. Output goes block by block into a ``MonoSink``.
"""

from __future__ import annotations

import math
from typing import Any, BinaryIO

import numpy as np

from pipeline.audio.errors import AudioError, too_long
from pipeline.audio.mono import DecodePass, MonoSink

# Containers whose index gives exact timestamps after a seek; elsewhere (raw streams: MP3, ADTS,
# AC-3, AMR) FFmpeg seeks by a byte estimate, so a segment is decoded from the start and cut.
_SEEK_FORMATS = ("mov", "mp4", "matroska", "webm", "ogg", "asf", "wav", "flac", "aiff", "w64", "caf")
# Containers whose duration FFmpeg derives from the byte size and the first frames' bit rate.
ESTIMATED_FORMATS = ("mp3", "aac", "ac3", "eac3", "amr", "amrnb", "amrwb", "mpegts", "mpeg", "dts", "loas")

_PRE_ROLL_S = 1.0
# Source samples gathered before they are converted and handed on (about 47 s at 44.1 kHz, 8 MB
# of float32 per channel): a recording of up to that length is resampled in one call, as a
# plain loop does (streaming soxr in blocks cost 10-20 % more on 10 s clips).
_BLOCK_SAMPLES = 1 << 21
# Seconds beyond which a declared length is no length (a corrupt or unfilled header field).
ABSURD_S = 1e7
_SCALE = {"s16": 1 / 32768, "s16p": 1 / 32768, "s32": 1 / 2**31, "s32p": 1 / 2**31, "s64": 1 / 2**63, "s64p": 1 / 2**63}


# FFmpeg's sample formats as numpy dtypes (the planar "p" forms hold one channel per plane).
_DTYPES = {
    "u8": np.uint8, "u8p": np.uint8, "s16": np.int16, "s16p": np.int16, "s32": np.int32, "s32p": np.int32,
    "s64": np.int64, "s64p": np.int64, "flt": np.float32, "fltp": np.float32, "dbl": np.float64, "dblp": np.float64,
}  # fmt: skip


class _Run:
    """Consecutive decoded frames of one sample format, rate and channel count.

    Each frame's planes are kept as views of the frame's own buffers (a view holds its frame),
    and copied once, when the run is handed on. ``AudioFrame.to_ndarray`` would copy every frame
    into a new array first (``np.vstack`` of its planes): 5-11 us per frame, about 1 ms of the
    5-7 ms it takes to decode 10 s of AAC, WMA or ALAC at 44.1 kHz."""

    def __init__(self, key: tuple[str, bool, int, int]) -> None:
        self.key = key
        fmt, planar, _, channels = key
        self.dtype = np.dtype(_DTYPES[fmt]) if fmt in _DTYPES else None
        self.planes: list[list[np.ndarray]] = [[] for _ in range(channels if planar else 1)]
        self.samples = 0

    def add(self, frame: Any) -> None:
        """Append ``frame`` (a PyAV AudioFrame of this run's key; ``dtype`` is not None)."""
        n = frame.samples
        count = n if self.key[1] else n * self.key[3]  # packed: the channels interleaved in one plane
        for views, plane in zip(self.planes, frame.planes):
            views.append(np.frombuffer(plane, self.dtype, count))
        self.samples += n

    def add_samples(self, x: np.ndarray) -> None:
        """Append mono samples ([n], this run's dtype; a one-channel planar run)."""
        self.planes[0].append(x)
        self.samples += len(x)

    def mono(self) -> np.ndarray:
        """The run as one mono float32 [samples] array (the mean of the channels), a new array."""
        fmt, planar, _, channels = self.key
        if planar:
            x = np.empty((len(self.planes), self.samples), self.dtype)
            for row, views in zip(x, self.planes):
                np.concatenate(views, out=row)
        else:  # packed: [samples x channels] -> [channels, samples]
            x = np.concatenate(self.planes[0]).reshape(-1, channels).T
        if fmt in ("u8", "u8p"):
            x = (x.astype(np.float32) - 128.0) / 128.0
        mono = x[0] if channels == 1 else x.mean(axis=0, dtype=np.float32)
        scale = _SCALE.get(fmt)
        if scale is not None:
            return np.multiply(mono, np.float32(scale), dtype=np.float32)  # one pass, a new contiguous array
        return np.ascontiguousarray(mono, dtype=np.float32)


def decode_av(
    source: str | BinaryIO,
    sink: MonoSink,
    *,
    name: str,
    ffmpeg_format: str | None,
    offset_s: float | None,
    duration_s: float | None,
    max_duration_s: float | None,
    audio_stream: int = 0,
    declared: tuple[float, bool] | None = None,
) -> DecodePass:
    """Decode audio stream ``audio_stream`` (0 = the first) of ``source`` into ``sink``.

    ``ffmpeg_format`` names the demuxer where the caller's content probe knows it (None: FFmpeg
    probes the bytes). ``declared``: (seconds, is an estimate) for the whole recording where the
    caller read it from the header itself; else it comes from the container. Raises AudioError:
    unsupported_format (not a container FFmpeg reads, or no such audio stream), decode_error (a
    known container FFmpeg cannot open), too_long, bad_segment, empty_audio.
    """
    import av

    try:
        container = av.open(source, mode="r", format=ffmpeg_format, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        if ffmpeg_format is None:
            raise AudioError("unsupported_format", f"{name}: not a recognised audio format ({_reason(e)})") from e
        raise AudioError("decode_error", f"{name}: cannot open the {ffmpeg_format} container: {_reason(e)}") from e
    with container:
        streams = container.streams.audio
        if len(streams) <= audio_stream:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            if not streams:
                raise AudioError("unsupported_format", f"{name}: the file holds no audio stream (streams: {kinds})")
            raise AudioError(
                "unsupported_format",
                f"{name}: the file has {len(streams)} audio stream(s); decode.audio_stream is {audio_stream}",
            )
        stream = streams[audio_stream]
        fmt_name = container.format.name or ""
        total_s, estimated, notes = _declared(container, stream, fmt_name, declared)
        start_s = offset_s or 0.0
        end_s = math.inf if duration_s is None else start_s + duration_s
        span_s = None if total_s is None else max(0.0, min(end_s, total_s) - start_s)
        if total_s is not None and offset_s and not estimated and offset_s - total_s >= 1e-3:
            raise AudioError("bad_segment", f"{name}: offset {offset_s:.3f} s is beyond the end of the audio ({total_s:.3f} s)")
        if max_duration_s is not None and span_s is not None and not estimated and span_s > max_duration_s:
            raise too_long(name, f"{span_s:.1f} s of audio", max_duration_s)

        seeked = False
        if start_s > 0 and any(f in fmt_name.split(",") for f in _SEEK_FORMATS):
            try:
                # A second early: a decoder's first frame after a seek primes its state (AAC's
                # overlap) and comes out wrong; the frames before the offset are cut anyway.
                container.seek(int(max(0.0, start_s - _PRE_ROLL_S) / stream.time_base), stream=stream, backward=True)
                seeked = True
            except av.error.FFmpegError:
                container.seek(0, stream=stream)
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0

        state: dict[str, Any] = {"pos": None if seeked else 0.0, "run": None, "lost": 0.0, "damaged": 0, "rate": 0, "channels": 0}
        stopped = None

        def emit(run: _Run) -> None:
            mono = run.mono()
            rate, channels = run.key[2], run.key[3]
            pos = state["pos"]
            a = max(0, int(round((start_s - pos) * rate)))
            b = len(mono) if math.isinf(end_s) else min(len(mono), int(round((end_s - pos) * rate)))
            state["pos"] = pos + len(mono) / rate
            if a < b:
                sink.add_mono(mono[a:b], rate, channels)
            if max_duration_s is not None and sink.output_s > max_duration_s:
                raise too_long(name, f"more than {max_duration_s:g} s of audio", max_duration_s)

        def take(frame: Any) -> None:
            rate, channels = frame.sample_rate, frame.layout.nb_channels
            if state["pos"] is None:  # first frame after a seek: its timestamp places it
                state["pos"] = (float(frame.time) - origin) if frame.time is not None else 0.0
            fmt = frame.format
            key = (fmt.name, fmt.is_planar, rate, channels)
            run = state["run"]
            if run is not None and (run.key != key or run.samples >= _BLOCK_SAMPLES):
                emit(run)
                run = None
            if run is None:
                run = state["run"] = _Run(key)
                if run.dtype is None:
                    raise AudioError("decode_error", f"{name}: FFmpeg gave samples as {key[0]}, which this decoder does not convert")
            run.add(frame)
            state["rate"] = state["rate"] or rate
            state["channels"] = max(state["channels"], channels)

        def fill_silence(seconds: float) -> None:
            run = state["run"]
            if run is None or seconds <= 0:
                return
            fmt, planar, rate, channels = run.key
            n = int(round(seconds * rate))
            emit(run)
            state["run"] = None
            silence = _Run(("flt", True, rate, 1))
            silence.add_samples(np.zeros(n, np.float32))
            emit(silence)

        try:
            for packet in container.demux(stream):
                if state["pos"] is not None and state["pos"] >= end_s:
                    break
                try:
                    for frame in packet.decode():
                        take(frame)
                except av.error.EOFError:
                    break
                except av.error.FFmpegError:
                    if packet.size == 0:
                        continue
                    seconds = float(packet.duration * packet.time_base) if packet.duration and packet.time_base else 0.0
                    state["damaged"] += 1
                    state["lost"] += seconds
                    fill_silence(seconds)
        except av.error.FFmpegError as e:
            stopped = f"reading stopped part way ({_reason(e)})"
        if state["run"] is not None:
            emit(state["run"])

    if state["damaged"]:
        notes.append(
            f"{state['damaged']} damaged packet(s) skipped, {state['lost']:.3f} s replaced by silence"
        )
    if total_s is None and offset_s and state["pos"] is not None and offset_s - state["pos"] >= 1e-3:
        raise AudioError("bad_segment", f"{name}: offset {offset_s:.3f} s is beyond the end of the audio ({state['pos']:.3f} s)")
    return DecodePass(
        sample_rate=state["rate"] or (stream.codec_context.sample_rate or 0),
        channels=state["channels"] or (stream.codec_context.channels or 0),
        decoded_s=sink.source_frames_s,
        declared_s=span_s,
        estimated=estimated,
        lost_s=state["lost"],
        notes=notes,
        stopped=stopped,
        decoder="ffmpeg",
    )


def _declared(container: Any, stream: Any, fmt_name: str, given: tuple[float, bool] | None) -> tuple[float | None, bool, list[str]]:
    """(seconds the recording declares, whether that is an estimate, notes)."""
    notes: list[str] = []
    if given is not None:
        seconds, estimated = given
    elif stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
        estimated = any(f in fmt_name.split(",") for f in ESTIMATED_FORMATS)
    elif container.duration is not None and all(s.type == "audio" for s in container.streams):
        # The container's length is its longest stream's: only the audio's where there is no other.
        seconds, estimated = container.duration / 1e6, any(f in fmt_name.split(",") for f in ESTIMATED_FORMATS)
    else:
        return None, False, notes
    if not math.isfinite(seconds) or seconds < 0 or seconds > ABSURD_S:
        notes.append(f"the header's duration ({seconds:g} s) is unusable")
        return None, False, notes
    return seconds, estimated, notes


def _reason(e: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends (it may be a local path or a URL)."""
    return getattr(e, "strerror", None) or str(e).split(":", 1)[0]
