"""Sentence segments from timed words: what a recording's ``segments`` hold once it is aligned.

Whisper-style tools give segments that are sentences with times; the ASR engine's chunks (cut at
quiet points every ``asr.max_chunk_s``) are not. With word times a recording's words are cut into
segments, a new one starting after a word when
- the word ends a sentence: its text ends with sentence-final punctuation, ``.``, ``!``, ``?``,
  ``…`` (and ``;`` in Greek), the full-width ``。！？．`` of Chinese, Cantonese and Japanese,
  Hindi's ``।``, Arabic's ``؟``, optionally followed by closing quotes or brackets;
- the pause to the next word is longer than ``max_pause_s``;
- the next word is in another language (the ASR chunk it came from detected another one);
and before a word that would make the segment last longer than ``max_duration_s`` (first word's
start to that word's end; a single longer word still gets a segment of its own).

A segment is ``{"start", "end", "text", "language", "words"}``: its first word's start, its last
word's end (seconds from the recording's start), its words' texts joined as the language writes
them (no spaces in Chinese, Cantonese and Japanese), its language, and its words. A "." after an
abbreviation ("Dr.") also ends a sentence: the rule reads punctuation only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.align.subtitles import joiner

_FINAL = frozenset(".!?…。！？．।؟")
_FINAL_GREEK = frozenset(";;")  # Greek question marks: ASCII semicolon and U+037E
_CLOSERS = "\"'”’»)]}」』）】〕》"


def ends_sentence(text: str, language: str | None = None) -> bool:
    """Whether a word's text ends a sentence (rule in the module docstring), e.g. ``"dog."`` and
    ``"吧。"`` do, ``"3.5"`` and ``"well,"`` do not."""
    stripped = text.rstrip().rstrip(_CLOSERS)
    if not stripped:
        return False
    last = stripped[-1]
    if last in _FINAL_GREEK:
        return language == "Greek"
    if last in _FINAL:
        # "3." inside a number run is kept whole by the unit splitter, so a final "." here is
        # punctuation; a lone "." word is too.
        return True
    return False


def sentence_segments(
    words: Sequence[Mapping],
    *,
    language: str | None,
    word_languages: Sequence[str | None] | None = None,
    max_pause_s: float = 1.0,
    max_duration_s: float = 30.0,
) -> list[dict]:
    """Cut timed words into sentence segments (rules in the module docstring).

    ``words``: ``[{"text", "start", "end", ...}]`` in seconds, in order. ``language``: the
    recording's language (model name, e.g. "English"); ``word_languages``: per word, the language
    of the ASR chunk it came from (None or absent: ``language``). Returns
    ``[{"start", "end", "text", "language", "words": [word dicts as given]}]``; no words give
    ``[]``. Raises ValueError when ``word_languages`` and ``words`` differ in length or a limit is
    not positive.
    """
    if not max_pause_s > 0 or not max_duration_s > 0:
        raise ValueError(f"max_pause_s and max_duration_s must be > 0, got {max_pause_s!r}, {max_duration_s!r}")
    if word_languages is not None and len(word_languages) != len(words):
        raise ValueError(f"{len(word_languages)} word languages for {len(words)} words")
    langs = [(word_languages[k] if word_languages is not None else None) or language for k in range(len(words))]
    segments: list[dict] = []
    current: list[Mapping] = []
    current_lang: str | None = None

    def close() -> None:
        if current:
            segments.append(_segment(current, current_lang))

    for k, word in enumerate(words):
        if current:
            prev = current[-1]
            if (
                ends_sentence(str(prev["text"]), current_lang)
                or float(word["start"]) - float(prev["end"]) > max_pause_s
                or langs[k] != current_lang
                or float(word["end"]) - float(current[0]["start"]) > max_duration_s
            ):
                close()
                current = []
        if not current:
            current_lang = langs[k]
        current.append(word)
    close()
    return segments


def _segment(words: Sequence[Mapping], language: str | None) -> dict:
    join = joiner(language)
    return {
        "start": float(words[0]["start"]),
        "end": max(float(w["end"]) for w in words),
        "text": join([str(w["text"]).strip() for w in words if str(w["text"]).strip()]),
        "language": language,
        "words": [dict(w) for w in words],
    }
