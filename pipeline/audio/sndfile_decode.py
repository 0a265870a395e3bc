"""The libsndfile decoder (soundfile): WAV, FLAC, MP3, Ogg Vorbis, AIFF and the like (Ogg Opus
goes to FFmpeg, faster: ``decode.FAST_PATH``).

The fast path where it is correct (see README, "Decoding"); ``decode.py`` holds its result
against what the container declares and hands the recording to the FFmpeg decoder where it fell
short. Frames are read in blocks into a ``MonoSink`` so memory stays bounded on long files.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from pipeline.audio.errors import segment_frames, too_long
from pipeline.audio.mono import DecodePass, MonoSink
from pipeline.audio.probe import WavLayout

# Frames per read: 1 Mi frames of 48 kHz stereo is 8 MB of float32, 22 s.
BLOCK_FRAMES = 1 << 20

# libsndfile subtypes whose samples are integer codes (FLAC files report their PCM depth).
INTEGER_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW", "ALAC_16", "ALAC_20", "ALAC_24", "ALAC_32"})

# PCM subtypes read as integers and scaled by numpy instead of converted by libsndfile: its
# integer-to-float path reads through an 8 KB buffer and converts sample by sample (0.9 ms for
# 10 s of 44.1 kHz 16-bit mono, against 0.2 ms for the integer read and one vectorised multiply).
# The result is bit-identical (libsndfile's normalisation is the same power-of-two scale; tests
# compare the two). Not 24-bit PCM (unpacked to int32 no faster) and not FLAC (decoded to int32
# inside either way): both measured no faster.
_INTEGER_READ: dict[str, tuple[str, np.float32]] = {
    "PCM_16": ("int16", np.float32(2.0**-15)),
    "PCM_32": ("int32", np.float32(2.0**-31)),
}

# A header frame count above this (about 3 years at 192 kHz) is no count at all: libsndfile
# reports 2^63-1 for some chained Opus files.
_ABSURD_FRAMES = 1 << 44


def decode_sndfile(
    source: str | BinaryIO,
    sink: MonoSink,
    *,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_duration_s: float | None,
    raw: WavLayout | None = None,
    raw_bytes: int | None = None,
) -> DecodePass:
    """Decode ``source`` (a path libsndfile opens itself, or a file object) into ``sink``.

    With ``raw`` (a WAV whose size fields were never written) ``source`` must be positioned data
    only: ``raw_bytes`` bytes of PCM laid out as ``raw`` says, read to their end.
    Returns the pass with ``declared_s`` from the header's frame count (None where it is unusable).
    Raises ``sf.LibsndfileError`` / ``RuntimeError`` where libsndfile cannot open or read it, and
    ``AudioError`` (bad_segment, empty_audio, too_long) for the span.
    """
    kwargs: dict[str, Any] = {}
    if raw is not None:
        kwargs = {"format": "RAW", "samplerate": raw.sample_rate, "channels": raw.channels, "subtype": raw.subtype, "endian": "LITTLE"}
    with sf.SoundFile(source, **kwargs) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        total = int(f.frames) if raw is None else (raw_bytes or 0) // raw.block_align
        notes: list[str] = []
        if total >= _ABSURD_FRAMES:
            notes.append(f"the header's frame count ({total}) is unusable")
            total = 0
        if total <= 0:
            # Some streams report no length up front yet decode fine; only reading tells.
            return _read_unknown_length(f, sink, rate, channels, name, offset_s, duration_s, max_duration_s, notes)
        start, count = segment_frames(total, rate, name, offset_s, duration_s)
        if max_duration_s is not None and count / rate > max_duration_s:
            raise too_long(name, f"{count / rate:.1f} s of audio", max_duration_s)
        if start:
            if f.seekable():
                f.seek(start)
            else:
                _skip(f, start)
        subtype = raw.subtype if raw is not None else f.subtype
        dtype, scale = ("float32", None) if f.format == "FLAC" else _INTEGER_READ.get(subtype, ("float32", None))
        done = 0
        while done < count:
            block = f.read(min(BLOCK_FRAMES, count - done), dtype=dtype, always_2d=True)
            if not len(block):
                break
            sink.add(block if scale is None else np.multiply(block, scale, dtype=np.float32), rate)
            done += len(block)
        integer = subtype in INTEGER_SUBTYPES
    return DecodePass(
        rate, channels, done / rate, declared_s=count / rate, notes=notes, decoder="libsndfile", integer_samples=integer
    )


def _skip(f: sf.SoundFile, frames: int) -> None:
    while frames > 0:
        got = len(f.read(min(BLOCK_FRAMES, frames), dtype="float32", always_2d=True))
        if not got:
            return
        frames -= got


def _read_unknown_length(
    f: sf.SoundFile,
    sink: MonoSink,
    rate: int,
    channels: int,
    name: str,
    offset_s: float | None,
    duration_s: float | None,
    max_duration_s: float | None,
    notes: list[str],
) -> DecodePass:
    start = int(round((offset_s or 0.0) * rate))
    end = None if duration_s is None else start + max(1, int(round(duration_s * rate)))
    pos = 0
    while end is None or pos < end:
        block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        if not len(block):
            break
        a, b = max(0, start - pos), len(block) if end is None else min(len(block), end - pos)
        pos += len(block)
        if a < b:
            sink.add(block[a:b], rate)
        if max_duration_s is not None and sink.output_s > max_duration_s:
            why = "; the header declares no usable length" if notes else ""
            raise too_long(name, f"more than {max_duration_s:g} s of audio{why}", max_duration_s)
    segment_frames(pos, rate, name, offset_s, duration_s)  # raises for an offset past the end
    return DecodePass(rate, channels, sink.source_frames_s, declared_s=None, notes=notes, decoder="libsndfile")
