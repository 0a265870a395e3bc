"""Cut a timed transcript into training-sized utterances.

Cuts fall only between words, never inside one: first at every pause longer than
``max_pause_s`` (a training clip should not hold a long silence), then, while a span is longer
than ``max_s``, at its widest pause (ties go to the cut nearest the middle, so halves stay
balanced), preferring cuts that leave both sides at least ``min_s``. A piece shorter than
``min_s`` joins the neighbour it is closest to in time when the result still fits ``max_s`` and
no long pause lies between; otherwise it stays short and the filter rejects it.

Each utterance's audio is its words' span plus ``pad_s`` on both sides, but never past the
midpoint of the pause to the next word, so neighbouring clips do not share a word.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.align.units import is_spaceless


@dataclass(frozen=True)
class Utterance:
    first: int  # index of the first word
    last: int  # index of the last word (inclusive)
    start: float  # audio cut, seconds from the start of the recording
    end: float
    speech_start: float  # first word's start
    speech_end: float  # last word's end
    text: str


def _gap(words: list[dict], k: int) -> float:
    """The pause before word k."""
    return words[k]["start"] - words[k - 1]["end"]


def _span(words: list[dict], i: int, j: int) -> float:
    return words[j]["end"] - words[i]["start"]


def _split_long(words: list[dict], i: int, j: int, min_s: float, max_s: float) -> list[tuple[int, int]]:
    if i == j or _span(words, i, j) <= max_s:
        return [(i, j)]
    middle = (words[i]["start"] + words[j]["end"]) / 2

    def rank(k: int) -> tuple:
        balanced = _span(words, i, k - 1) >= min_s and _span(words, k, j) >= min_s
        return (balanced, round(_gap(words, k), 3), -abs(words[k]["start"] - middle))

    k = max(range(i + 1, j + 1), key=rank)
    return _split_long(words, i, k - 1, min_s, max_s) + _split_long(words, k, j, min_s, max_s)


def _merge_short(
    words: list[dict], pieces: list[tuple[int, int]], min_s: float, max_s: float, max_pause_s: float
) -> list[tuple[int, int]]:
    pieces = list(pieces)
    changed = True
    while changed:
        changed = False
        for n, (i, j) in enumerate(pieces):
            if _span(words, i, j) >= min_s:
                continue
            options = []
            if n > 0:
                pi, _ = pieces[n - 1]
                options.append((_gap(words, i), n - 1, (pi, j)))
            if n + 1 < len(pieces):
                _, nj = pieces[n + 1]
                options.append((_gap(words, j + 1), n, (i, nj)))
            options = [o for o in options if o[0] <= max_pause_s and _span(words, *o[2]) <= max_s]
            if not options:
                continue
            _, at, merged = min(options)
            pieces[at : at + 2] = [merged]
            changed = True
            break
    return pieces


def join_words(texts: list[str], language: str | None) -> str:
    sep = "" if is_spaceless(language) else " "
    return sep.join(t.strip() for t in texts if t and t.strip())


def plan_utterances(
    words: list[dict],
    *,
    duration_s: float,
    language: str | None,
    min_s: float,
    max_s: float,
    max_pause_s: float,
    pad_s: float,
) -> list[Utterance]:
    """``words``: ``{"text", "start", "end"}`` in order, times within ``[0, duration_s]``."""
    if not words:
        return []
    pieces: list[tuple[int, int]] = []
    first = 0
    for k in range(1, len(words) + 1):
        if k == len(words) or _gap(words, k) > max_pause_s:
            pieces += _split_long(words, first, k - 1, min_s, max_s)
            first = k
    pieces = _merge_short(words, pieces, min_s, max_s, max_pause_s)

    out = []
    for i, j in pieces:
        speech_start, speech_end = words[i]["start"], words[j]["end"]
        start = speech_start - pad_s
        if i > 0:
            start = max(start, (words[i - 1]["end"] + speech_start) / 2)
        end = speech_end + pad_s
        if j + 1 < len(words):
            end = min(end, (speech_end + words[j + 1]["start"]) / 2)
        start, end = max(0.0, start), min(duration_s, end)
        text = join_words([w["text"] for w in words[i : j + 1]], language)
        out.append(Utterance(i, j, start, max(start, end), speech_start, speech_end, text))
    return out
