"""What a recording's first bytes are, so the decoder is chosen by content, never by a file name.

``sniff`` reads signatures only (no decoder runs): libsndfile's containers (WAV, FLAC, Ogg, MP3,
AIFF, ...), the containers only FFmpeg reads (MP4/M4A/MOV/3GP, Matroska/WebM, ASF/WMA, AMR, ADTS
AAC, AC-3), and bytes that are not audio at all (an HTML error page, XML, JSON, plain text), which
no decoder is given: their error says what they look like. It also reads the few header fields
that the decoders report wrongly or not at all: a WAV's size fields (left at 0 by a recorder that
crashed), where an MP3's first frame starts (after an ID3 tag and any zeros) and its Xing/Info
frame and byte counts (which hold only the first part of joined MP3 files).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

# How much of a file ``sniff`` wants: enough for an ID3 tag with a cover picture to be skipped
# in most files, a WAV's header chunks, and the first MP3 frame after leading zeros.
HEAD_BYTES = 1 << 16

# FFmpeg demuxer names for the containers recognised here (passed to PyAV so that its own probe,
# which also weighs the file name, is not asked).
_FFMPEG_FORMATS = {"mp4": "mov", "matroska": "matroska", "asf": "asf", "amr": "amr", "adts": "aac", "ac3": "ac3"}

# WAVE format tags libsndfile reads as RAW PCM, and the soundfile subtype for each bit depth.
_WAV_PCM, _WAV_FLOAT, _WAV_ALAW, _WAV_MULAW, _WAV_EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_PCM_SUBTYPES = {8: "PCM_U8", 16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}
_FLOAT_SUBTYPES = {32: "FLOAT", 64: "DOUBLE"}


@dataclass(frozen=True)
class WavLayout:
    """A WAV file's PCM data as libsndfile can read it raw: where it starts, its declared size and
    the sample layout. ``data_size`` is the header's value (0 or 0xFFFFFFFF when never written)."""

    riff_size: int
    data_offset: int
    data_size: int
    sample_rate: int
    channels: int
    block_align: int
    subtype: str | None  # soundfile RAW subtype; None when libsndfile cannot read it raw

    @property
    def unfinalized(self) -> bool:
        """The recorder never wrote the sizes (0 or 0xFFFFFFFF), or wrote ones that cannot both
        be true (a data chunk larger than the RIFF chunk that holds it): the data runs to the end."""
        unset = (0, 0xFFFFFFFF)
        return self.data_size in unset or self.riff_size in unset or self.data_size > self.riff_size


@dataclass(frozen=True)
class Mp3Layout:
    """Where an MP3's first frame starts, its rate and channels, and what a Xing/Info (or VBRI)
    frame declares for the whole stream (None where it has none)."""

    first_frame: int
    sample_rate: int
    channels: int
    samples_per_frame: int
    bit_rate: int  # of the first frame, bits per second
    declared_frames: int | None  # MPEG frames the Xing/VBRI header counts
    declared_bytes: int | None  # bytes of MPEG frames it counts


@dataclass(frozen=True)
class Probe:
    """``kind``: wav, flac, ogg, mp3, sndfile (another libsndfile container), av (a container
    only FFmpeg reads; ``ffmpeg_format`` names its demuxer), text (not audio; ``detail`` says what
    it looks like) or unknown. ``wav`` / ``mp3`` carry the header fields read for those kinds."""

    kind: str
    detail: str = ""
    ffmpeg_format: str | None = None
    wav: WavLayout | None = None
    mp3: Mp3Layout | None = None


def sniff(head: bytes) -> Probe:
    """Classify a recording by its first bytes (``HEAD_BYTES`` of them, or the whole file if shorter)."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return Probe("wav", "WAV", "wav", wav=wav_layout(head) if head[:4] == b"RIFF" else None)
    if head[:4] == b"fLaC":
        return Probe("flac", "FLAC", "flac")
    if head[:4] == b"OggS":
        return Probe("ogg", "Ogg")
    if head[:4] in (b"FORM",) and head[8:12] in (b"AIFF", b"AIFC"):
        return Probe("sndfile", "AIFF", "aiff")
    if head[:4] in (b".snd", b"caff") or head[:16] == b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00":
        detail, fmt = {b".snd": ("AU", "au"), b"caff": ("CAF", "caf")}.get(head[:4], ("Wave64", "w64"))
        return Probe("sndfile", detail, fmt)
    if head[4:8] == b"ftyp":
        return Probe("av", "MP4/M4A/MOV/3GP", _FFMPEG_FORMATS["mp4"])
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Probe("av", "Matroska/WebM", _FFMPEG_FORMATS["matroska"])
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return Probe("av", "ASF/WMA", _FFMPEG_FORMATS["asf"])
    if head[:5] == b"#!AMR":
        return Probe("av", "AMR", _FFMPEG_FORMATS["amr"])
    if head[:2] == b"\x0b\x77":
        return Probe("av", "AC-3", _FFMPEG_FORMATS["ac3"])
    start = after_id3(head)
    if head[start : start + 4] == b"fLaC":  # FLAC behind an ID3 tag: libsndfile reads it
        return Probe("flac", "FLAC", "flac")
    mp3 = mp3_layout(head)
    if mp3 is not None:
        return Probe("mp3", "MP3", mp3=mp3)
    first = _skip_zeros(head, start)
    if first + 1 < len(head) and head[first] == 0xFF and (head[first + 1] & 0xF6) == 0xF0:
        return Probe("av", "ADTS AAC", _FFMPEG_FORMATS["adts"])
    looks = text_kind(head)
    if looks:
        return Probe("text", looks)
    return Probe("unknown", f"unrecognised bytes ({head[:8].hex(' ')})")


def text_kind(head: bytes) -> str | None:
    """'an HTML page', 'an XML document', 'JSON' or 'plain text' where the bytes are text, else None."""
    body = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(body) - 4:  # a character cut at the end of the head is fine
            return None
        text = body[: e.start].decode("utf-8")
    if sum(c.isprintable() or c in "\r\n\t" for c in text) < 0.97 * len(text):
        return None
    lower = text[:512].lower()
    if lower.startswith("<!doctype html") or "<html" in lower or "<head" in lower or "<body" in lower:
        return "an HTML page"
    if lower.startswith("<?xml") or lower.startswith("<"):
        return "an XML document"
    if lower[:1] in "{[":
        try:
            json.loads(text)
            return "JSON"
        except ValueError:
            if lower[:2] in ('{"', "[{", '["') or lower[:1] == "{":
                return "JSON"
    return "plain text"


def after_id3(head: bytes) -> int:
    """Offset just past any ID3v2 tags at the start (tags can follow each other)."""
    pos = 0
    while head[pos : pos + 3] == b"ID3" and pos + 10 <= len(head):
        size = head[pos + 6 : pos + 10]
        if any(b & 0x80 for b in size):
            break
        length = (size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3]
        pos += 10 + length + (10 if head[pos + 5] & 0x10 else 0)  # footer flag
    return pos


def _skip_zeros(head: bytes, pos: int) -> int:
    while pos < len(head) and head[pos] == 0:
        pos += 1
    return pos


_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def _mp3_frame(head: bytes, pos: int) -> tuple[int, int, int, int, int] | None:
    """(frame bytes, sample rate, channels, samples per frame, bit rate) of a Layer III frame
    header at ``pos``, or None."""
    if pos + 4 > len(head) or head[pos] != 0xFF or (head[pos + 1] & 0xE0) != 0xE0:
        return None
    version, layer = (head[pos + 1] >> 3) & 3, (head[pos + 1] >> 1) & 3
    bitrate_index, rate_index = head[pos + 2] >> 4, (head[pos + 2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    rate = _MP3_RATES[version][rate_index]
    kbps = (_MP3_BITRATES_V1 if version == 3 else _MP3_BITRATES_V2)[bitrate_index]
    samples = 1152 if version == 3 else 576
    size = samples // 8 * kbps * 1000 // rate + ((head[pos + 2] >> 1) & 1)
    channels = 1 if (head[pos + 3] >> 6) == 3 else 2
    return size, rate, channels, samples, kbps * 1000


def mp3_layout(head: bytes) -> Mp3Layout | None:
    """The MP3 stream in ``head``: its first frame after any ID3 tags and zeros, confirmed by the
    frame that follows it; None where the bytes are no MP3 (or its first frame lies past ``head``)."""
    pos = _skip_zeros(head, after_id3(head))
    frame = _mp3_frame(head, pos)
    if frame is None:
        return None
    size, rate, channels, samples, bit_rate = frame
    following = _mp3_frame(head, pos + size)
    if following is None and pos + size + 4 <= len(head):
        return None  # a sync word by chance: a real frame is followed by another
    declared_frames = declared_bytes = None
    version = (head[pos + 1] >> 3) & 3
    side = (32 if channels == 2 else 17) if version == 3 else (17 if channels == 2 else 9)
    xing = pos + 4 + side
    if head[xing : xing + 4] in (b"Xing", b"Info") and xing + 16 <= len(head):
        flags = struct.unpack_from(">I", head, xing + 4)[0]
        at = xing + 8
        if flags & 1:
            declared_frames = struct.unpack_from(">I", head, at)[0]
            at += 4
        if flags & 2:
            declared_bytes = struct.unpack_from(">I", head, at)[0]
    elif head[pos + 36 : pos + 40] == b"VBRI" and pos + 58 <= len(head):
        declared_bytes, declared_frames = struct.unpack_from(">II", head, pos + 46)
    return Mp3Layout(pos, rate, channels, samples, bit_rate, declared_frames, declared_bytes)


def wav_layout(head: bytes) -> WavLayout | None:
    """The fmt and data chunks of a RIFF WAV header in ``head``, or None where they are not there."""
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 24 <= len(head):
            tag, channels, rate = struct.unpack_from("<HHI", head, pos + 8)
            block_align, bits = struct.unpack_from("<HH", head, pos + 20)
            if tag == _WAV_EXTENSIBLE and pos + 34 <= len(head):
                tag = struct.unpack_from("<H", head, pos + 32)[0]
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk == b"data":
            if fmt is None:
                return None
            tag, channels, rate, block_align, bits = fmt
            subtype = {
                _WAV_PCM: _PCM_SUBTYPES.get(bits),
                _WAV_FLOAT: _FLOAT_SUBTYPES.get(bits),
                _WAV_ALAW: "ALAW" if bits == 8 else None,
                _WAV_MULAW: "ULAW" if bits == 8 else None,
            }.get(tag)
            if not (channels and rate and block_align):
                return None
            riff_size = struct.unpack_from("<I", head, 4)[0]
            return WavLayout(riff_size, pos + 8, size, rate, channels, block_align, subtype)
        if size == 0xFFFFFFFF:
            return None
        pos += 8 + size + (size & 1)
    return None
