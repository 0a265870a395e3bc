"""SRT and WebVTT subtitles from word timestamps (``[{"text", "start", "end"}]``, seconds).

Words are grouped into one-line cues. A new cue starts before a word when
- the silence since the previous word's end is longer than ``max_gap_s``, or
- the cue's text with that word would be longer than ``max_chars`` characters, or
- the cue would then last longer than ``max_duration_s`` (first word's start to that word's end).
A single word that alone breaks ``max_chars`` or ``max_duration_s`` still gets a cue of its own.

Then the timing rules players need (some reject or skip a cue whose end is not after its start,
or cues that overlap):
- a cue starts at its first word's start (never before it);
- a cue lasts at least ``min_duration_s`` (0.3 s) or its words' span, whichever is longer: its end
  is its last word's end, moved later to reach the minimum;
- a cue that cannot reach the minimum before the next cue starts, or that overlaps it (words out
  of order), takes in that cue's words (these rules win over ``max_chars`` and ``max_duration_s``).
So every cue's end is after its start by at least ``min_duration_s`` and cues never overlap, also
after the times are rounded to milliseconds (rounding keeps their order).

Chinese, Cantonese and Japanese (``language``) join their units without spaces, except between
two units that are both Latin/digit words ("我用 Python 3"); other languages join with a space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from pipeline.align.units import is_cjk, is_spaceless

_SPACES = re.compile(r"\s+")


def _fmt(seconds: float, sep: str) -> str:
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (milliseconds rounded), e.g. 1.2345 -> ``00:00:01,234``."""
    return _fmt(seconds, ",")


def vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (milliseconds rounded), e.g. 61.5 -> ``00:01:01.500``."""
    return _fmt(seconds, ".")


def _is_latin_edge(ch: str) -> bool:
    return ch.isalnum() and not is_cjk(ch) and not ("\u3040" <= ch <= "\u30ff")


def _joiner(spaceless: bool):
    def join(parts: Sequence[str]) -> str:
        if not spaceless:
            return " ".join(parts)
        out = ""
        for part in parts:
            if out and part and _is_latin_edge(out[-1]) and _is_latin_edge(part[0]):
                out += " "
            out += part
        return out

    return join


def joiner(language: str | None):
    """How the language writes words next to each other: a function ``list[str] -> str`` (no
    spaces in Chinese, Cantonese and Japanese except between Latin/digit words; else spaces)."""
    return _joiner(is_spaceless(language))


def group_cues(
    words: Iterable[Mapping],
    *,
    max_chars: int = 42,
    max_duration_s: float = 7.0,
    max_gap_s: float = 0.8,
    min_duration_s: float = 0.3,
    language: str | None = None,
) -> list[tuple[float, float, str]]:
    """Group words (``{"text", "start", "end"}``, seconds, in order) into cues
    ``(start, end, text)`` in seconds, by the rules of the module docstring.

    Raises ValueError when ``min_duration_s`` is not positive.
    """
    if not min_duration_s > 0:
        raise ValueError(f"min_duration_s must be > 0, got {min_duration_s!r}")
    join = joiner(language)
    groups: list[list] = []  # [first word's start, last word's end, parts]
    parts: list[str] = []
    cue_start = cue_end = 0.0
    for word in words:
        text = _SPACES.sub(" ", str(word["text"])).strip()
        if not text:
            continue
        start, end = float(word["start"]), float(word["end"])
        if parts and (
            start - cue_end > max_gap_s
            or len(join([*parts, text])) > max_chars
            or end - cue_start > max_duration_s
        ):
            groups.append([cue_start, cue_end, parts])
            parts = []
        if not parts:
            cue_start = start
            cue_end = end
        parts.append(text)
        cue_end = max(cue_end, end)
    if parts:
        groups.append([cue_start, cue_end, parts])
    return [(start, end, join(texts)) for start, end, texts in _timed(groups, min_duration_s)]


def _timed(groups: list[list], min_duration_s: float) -> list[list]:
    """Apply the timing rules to ``[start, end, parts]`` groups in order."""
    cues: list[list] = []
    for start, end, parts in groups:
        if cues:
            prev = cues[-1]
            # prev needs min_duration_s and must end before this cue starts: else they join.
            if prev[0] + min_duration_s > start or prev[1] > start:
                prev[1] = max(prev[1], end)
                prev[2] = prev[2] + parts
                continue
            prev[1] = max(prev[1], prev[0] + min_duration_s)
        cues.append([start, end, list(parts)])
    if cues:
        cues[-1][1] = max(cues[-1][1], cues[-1][0] + min_duration_s)
    return cues


def to_srt(
    words: Iterable[Mapping],
    *,
    max_chars: int = 42,
    max_duration_s: float = 7.0,
    max_gap_s: float = 0.8,
    min_duration_s: float = 0.3,
    language: str | None = None,
) -> str:
    """SubRip text: numbered cues ``1\\n00:00:00,000 --> 00:00:01,234\\ntext\\n`` separated by a
    blank line. No words: an empty string."""
    cues = group_cues(
        words, max_chars=max_chars, max_duration_s=max_duration_s, max_gap_s=max_gap_s,
        min_duration_s=min_duration_s, language=language,
    )  # fmt: skip
    blocks = [
        f"{i}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n"
        for i, (start, end, text) in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(
    words: Iterable[Mapping],
    *,
    max_chars: int = 42,
    max_duration_s: float = 7.0,
    max_gap_s: float = 0.8,
    min_duration_s: float = 0.3,
    language: str | None = None,
) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues ``00:00:00.000 --> 00:00:01.234\\ntext``
    separated by blank lines (``&``, ``<``, ``>`` escaped as the format requires)."""
    cues = group_cues(
        words, max_chars=max_chars, max_duration_s=max_duration_s, max_gap_s=max_gap_s,
        min_duration_s=min_duration_s, language=language,
    )  # fmt: skip
    blocks = ["WEBVTT\n"]
    blocks += [
        f"{vtt_time(start)} --> {vtt_time(end)}\n{_vtt_escape(text)}\n" for start, end, text in cues
    ]
    return "\n".join(blocks)
