"""The logical streams ("links") of an Ogg file, read from its page headers.

Two Ogg files joined byte for byte are one valid chained Ogg stream. libsndfile decodes only its
first link (and reports that link's length, or for Opus sometimes 2^63-1 frames), and FFmpeg stops
on a link whose channel count differs. Cutting the file at each link's first page gives standalone
Ogg files that either decoder reads whole; each link's last granule position says how long it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_BOS = 0x02  # page header flag: first page of a logical stream


@dataclass(frozen=True)
class OggLink:
    """One logical stream: bytes [start, end) of the file, its codec ('vorbis', 'opus', 'flac' or
    '' when unknown), sample rate and its length in frames from the last granule position (None
    where no page carried one)."""

    start: int
    end: int
    codec: str
    sample_rate: int
    frames: int | None

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None or not self.sample_rate else self.frames / self.sample_rate


def links(data: bytes | memoryview) -> list[OggLink]:
    """The links of the Ogg file ``data``, in order. Walks page headers (27 bytes + segment table
    each); a damaged page ends the walk, the last link then runs to the end of ``data``."""
    found: list[dict] = []
    pos, n = 0, len(data)
    previous_bos = False
    while pos + 27 <= n and data[pos : pos + 4] == b"OggS":
        flags = data[pos + 5]
        granule = struct.unpack_from("<q", data, pos + 6)[0]
        serial = struct.unpack_from("<I", data, pos + 14)[0]
        segments = data[pos + 26]
        body = pos + 27 + segments
        if body > n:
            break
        size = sum(data[pos + 27 : body])
        bos = bool(flags & _BOS)
        if bos and not previous_bos:  # a group of first pages starts a link
            if found:
                found[-1]["end"] = pos
            found.append({"start": pos, "end": n, "serials": {}, "granules": {}})
        if found:
            link = found[-1]
            if bos:
                link["serials"][serial] = bytes(data[body : body + min(size, 64)])
            elif granule >= 0:
                link["granules"][serial] = granule
        previous_bos = bos
        pos = body + size
    return [_link(f) for f in found]


def _link(f: dict) -> OggLink:
    # The first logical stream of a known audio codec (a skeleton or video stream may sit beside it).
    serial, head = next(
        ((s, h) for s, h in f["serials"].items() if h.startswith((b"OpusHead", b"\x01vorbis", b"\x7fFLAC"))),
        next(iter(f["serials"].items()), (None, b"")),
    )
    granule = f["granules"].get(serial)
    if head.startswith(b"OpusHead") and len(head) >= 16:
        pre_skip = struct.unpack_from("<H", head, 10)[0]
        frames = None if granule is None else max(0, granule - pre_skip)
        return OggLink(f["start"], f["end"], "opus", 48000, frames)  # Opus granules count 48 kHz samples
    if head.startswith(b"\x01vorbis") and len(head) >= 16:
        rate = struct.unpack_from("<I", head, 12)[0]
        return OggLink(f["start"], f["end"], "vorbis", rate, granule)
    if head.startswith(b"\x7fFLAC") and len(head) >= 31:
        rate = int.from_bytes(head[27:30], "big") >> 4
        return OggLink(f["start"], f["end"], "flac", rate, granule)
    return OggLink(f["start"], f["end"], "", 0, granule)
