"""The decode failure type and the span arithmetic both decoders share."""

from __future__ import annotations

from typing import Any

# An offset that lands within this much of the end is rounding in the manifest, not a bad segment.
END_TOLERANCE_S = 1e-3


class AudioError(Exception):
    """A recording that cannot be turned into samples; `category` is a short machine-readable cause.

    Categories: not_found, read_error, decode_error, unsupported_format, empty_audio, bad_segment,
    missing_audio, too_long, too_short, truncated_audio, invalid_samples, silent_audio,
    unsupported_scheme, forbidden_url, forbidden_path, access_denied, storage_error.
    """

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the category when Ray pickles the exception across processes.
        return (type(self), (self.category, str(self)))


def too_long(name: str, what: str, limit: float) -> AudioError:
    """``what``: the length found, e.g. '7300.0 s of audio' or 'more than 7200 s of audio'."""
    return AudioError(
        "too_long",
        f"{name}: {what} exceeds decode.max_audio_s ({limit:g} s); split the file or "
        "give offset/duration segments in the manifest",
    )


def segment_frames(
    total: int, rate: int, name: str, offset_s: float | None, duration_s: float | None
) -> tuple[int, int]:
    """Frame range ``(start, count)`` of the segment in a recording of ``total`` frames at
    ``rate``, clipped to its end. Raises AudioError: bad_segment for an offset past the end,
    empty_audio where nothing is left to decode."""
    start = int(round((offset_s or 0.0) * rate))
    if start >= total:
        if offset_s is not None and offset_s - total / rate >= END_TOLERANCE_S:
            raise AudioError(
                "bad_segment",
                f"{name}: offset {offset_s:.3f} s is beyond the end of the audio ({total / rate:.3f} s)",
            )
        if offset_s:
            raise AudioError("empty_audio", f"{name}: segment at {offset_s:.3f} s has no audio frames")
        raise AudioError("empty_audio", f"{name}: file contains no audio frames")
    count = total - start
    if duration_s is not None:
        count = min(count, max(1, int(round(duration_s * rate))))
    return start, count
