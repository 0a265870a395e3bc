"""Decoded blocks to one mono float32 waveform at the target rate, block by block.

Both decoders hand their output here as it comes, so a worker holds the (small) 16 kHz mono
result and one block of source frames, never a whole long recording at its source rate and channel
count. A recording whose rate or channel count changes part way (joined MP3 files, chained Ogg
streams) starts a new resampler at the change; each part is resampled from its own rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr


class MonoSink:
    """Collects blocks of source frames; ``finish()`` returns float32 [n] at ``target_sr``.

    A recording that arrives as one block is resampled in one call (what a plain soundfile + soxr
    loop does); longer ones go through a streaming soxr resampler, same filter, same quality."""

    def __init__(self, target_sr: int) -> None:
        self.target_sr = target_sr
        self.source_frames_s = 0.0  # seconds of source frames received, over all rates
        self.first_rate: int | None = None
        self.max_channels = 0
        self._rate: int | None = None
        self._pending: np.ndarray | None = None  # the first block of a run, held until a second comes
        self._stream: soxr.ResampleStream | None = None
        self._out: list[np.ndarray] = []

    def add(self, frames: np.ndarray, rate: int) -> None:
        """``frames``: float32 [n, channels] (or [n] mono) at ``rate`` Hz, consecutive with the last block."""
        if frames.ndim == 2:
            channels = frames.shape[1]
            mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0]
        else:
            channels, mono = 1, frames
        self.add_mono(mono, rate, channels)

    def add_mono(self, mono: np.ndarray, rate: int, channels: int) -> None:
        """A block already downmixed: float32 [n] at ``rate`` Hz from ``channels`` source channels."""
        if not len(mono):
            return
        if self.first_rate is None:
            self.first_rate = rate
        self.max_channels = max(self.max_channels, channels)
        self.source_frames_s += len(mono) / rate
        if rate != self._rate:
            self._flush()
            self._rate = rate
        if rate == self.target_sr:
            self._out.append(np.asarray(mono, dtype=np.float32))
        elif self._pending is None and self._stream is None:
            self._pending = mono
        else:
            if self._stream is None:
                self._stream = soxr.ResampleStream(rate, self.target_sr, 1, dtype="float32", quality="HQ")
                self._out.append(self._stream.resample_chunk(self._pending))
                self._pending = None
            self._out.append(self._stream.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32)))

    @property
    def output_s(self) -> float:
        """Seconds of output so far (source frames; what ``max_audio_s`` is held against)."""
        return self.source_frames_s

    def _flush(self) -> None:
        if self._pending is not None:
            self._out.append(soxr.resample(self._pending, self._rate, self.target_sr, quality="HQ"))
            self._pending = None
        elif self._stream is not None:
            self._out.append(self._stream.resample_chunk(np.empty(0, np.float32), last=True))
        self._stream = None

    def extend(self, other: "MonoSink") -> None:
        """Append everything ``other`` holds (a part decoded on its own, e.g. one Ogg link)."""
        self._flush()
        self._rate = None
        out = other.finish()
        if len(out):
            self._out.append(out)
        self.source_frames_s += other.source_frames_s
        self.first_rate = self.first_rate or other.first_rate
        self.max_channels = max(self.max_channels, other.max_channels)

    def finish(self) -> np.ndarray:
        """The waveform: float32 [n] at ``target_sr``, C-contiguous."""
        self._flush()
        self._rate = None
        out = self._out[0] if len(self._out) == 1 else np.concatenate(self._out) if self._out else np.empty(0, np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class DecodePass:
    """What one decoder made of a recording (or of the requested span of it).

    ``declared_s``: the span's length by the container's header (None where it says nothing
    usable); ``estimated``: that value is an estimate from the byte size and the bit rate, not a
    count. ``lost_s`` / ``notes``: audio known to be lost on the way (damaged packets skipped) and
    what happened, for the row's ``decode_warnings``. ``stopped``: why reading ended before the
    end of the data, where it did (a read error part way)."""

    sample_rate: int
    channels: int
    decoded_s: float
    declared_s: float | None = None
    estimated: bool = False
    lost_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None
    decoder: str = ""
    # Every sample came from an integer code (PCM, FLAC, u-law, a-law): no NaN or infinity can be
    # among them, so the finiteness check over the waveform is skipped.
    integer_samples: bool = False
