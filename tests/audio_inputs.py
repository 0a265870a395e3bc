"""Recordings as users bring them, built by the test from the bundled speech with PyAV (FFmpeg's
encoders and muxers inside the wheel) and soundfile: phone and browser containers, files from
crashed recorders, joined and damaged files. Each builder returns bytes and the true duration."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
import soundfile as sf
import soxr

from tests.conftest import SPEECH


@lru_cache(maxsize=1)
def speech_16k() -> np.ndarray:
    """The bundled speech at 16 kHz mono float32, concatenated (about 40 s)."""
    parts = []
    for name in ("en_wav16k.wav", "de_flac44k_stereo.flac", "fr_mp3_22k.mp3", "en_long_16k.flac"):
        x, rate = sf.read(str(SPEECH / name), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        parts.append(soxr.resample(x, rate, 16000) if rate != 16000 else x)
    return np.clip(np.concatenate(parts), -0.95, 0.95).astype(np.float32)


def speech(seconds: float, rate: int, channels: int = 1, start_s: float = 0.0) -> np.ndarray:
    """float32 [frames, channels]: ``seconds`` of speech at ``rate`` (a slice of the bank)."""
    bank = speech_16k()
    a = int(start_s * 16000) % len(bank)
    x = np.resize(bank[a:], int(seconds * 16000) + 1)[: int(seconds * 16000)]
    if rate != 16000:
        x = soxr.resample(x, 16000, rate)
    x = np.clip(x, -0.95, 0.95).astype(np.float32)
    if channels > 1:  # not identical channels: a downmix must still be the mean
        x = np.stack([x * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return x.reshape(len(x), -1)


def encode(
    fmt: str,
    codec: str,
    seconds: float,
    rate: int,
    channels: int = 1,
    *,
    video: bool = False,
    bit_rate: int | None = None,
    start_s: float = 0.0,
) -> bytes:
    """``seconds`` of speech encoded with FFmpeg's ``codec`` in an ``fmt`` container, as bytes."""
    x = speech(seconds, rate, channels, start_s)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        vstream = None
        if video:
            vstream = out.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        # FFmpeg's own Vorbis encoder is marked experimental; the wheel has no libvorbis.
        stream = out.add_stream(codec, rate=rate, options={"strict": "experimental"} if codec == "vorbis" else None)
        stream.layout = "mono" if channels == 1 else "stereo"
        if bit_rate or codec == "wmav2":  # the WMA encoder needs a bit rate
            stream.bit_rate = bit_rate or 64000
        ctx = stream.codec_context
        resampler = av.AudioResampler(format=ctx.format, layout=stream.layout, rate=rate, frame_size=ctx.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.reshape(1, -1)), format="flt", layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts, frame.time_base = 0, Fraction(1, rate)
        frames = resampler.resample(frame) + resampler.resample(None)
        if vstream is not None:
            for i in range(int(seconds * 10)):
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20 % 255, np.uint8), format="rgb24")
                picture.pts = i
                for p in vstream.encode(picture):
                    out.mux(p)
        for f in frames:
            for p in stream.encode(f):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
        if vstream is not None:
            for p in vstream.encode(None):
                out.mux(p)
    return buf.getvalue()


def soundfile_bytes(seconds: float, rate: int, channels: int, fmt: str, subtype: str, start_s: float = 0.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speech(seconds, rate, channels, start_s), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def unfinalized_wav(seconds: float, rate: int, subtype: str = "PCM_16", fill: int = 0) -> bytes:
    """A WAV whose recorder died before it wrote the sizes: RIFF and data sizes left at ``fill``
    (0, or 0xFFFFFFFF as some recorders write for 'unknown')."""
    data = bytearray(soundfile_bytes(seconds, rate, 1, "WAV", subtype))
    struct.pack_into("<I", data, 4, fill)
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", data, pos + 4, fill)
            break
        pos += 8 + size + (size & 1)
    return bytes(data)


def mp3_with_padded_id3(seconds: float, rate: int, pad: int = 2048) -> bytes:
    """An MP3 behind an ID3v2 tag followed by ``pad`` zero bytes outside the tag's declared size
    (as some taggers leave them) before the first frame."""
    mp3 = soundfile_bytes(seconds, rate, 1, "MP3", "MPEG_LAYER_III")
    text = b"\x03speech"
    body = b"TIT2" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(body)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    if mp3[:3] == b"ID3":  # the encoder's own tag goes: one tag, then the zeros
        own = mp3[6:10]
        mp3 = mp3[10 + ((own[0] << 21) | (own[1] << 14) | (own[2] << 7) | own[3]) :]
    return b"ID3\x04\x00\x00" + synchsafe + body + b"\x00" * pad + mp3


def html_page() -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n" * 20


def damage(data: bytes, at: float = 0.5, length: int = 300, seed: int = 7) -> bytes:
    """``length`` random bytes written over ``data`` at the fraction ``at`` of its size."""
    out = bytearray(data)
    pos = int(len(out) * at)
    out[pos : pos + length] = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    return bytes(out)


def duration(data: bytes) -> float:
    """The true length of ``data`` by a full decode with PyAV (every frame counted)."""
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        return sum(f.samples / f.sample_rate for f in c.decode(stream))
