"""Alignment units for the Qwen3-ForcedAligner: split a transcript into the words it times.

The forced aligner gets the audio followed by the transcript's units, each followed by two
``<timestamp>`` slots (its start and its end); it predicts a class per slot (x 80 ms = time).
This module decides what a unit is, per language:

- Space-delimited languages (English, French, German, Italian, Portuguese, Russian, Spanish):
  whitespace-separated words.
- Chinese and Cantonese: one unit per CJK character; runs of Latin letters or digits inside
  Chinese text stay whole words ("我用Python写" -> 我, 用, Python, 写).
- Japanese: SudachiPy (``sudachipy`` + ``sudachidict-core``), split mode C. Chosen over
  ``fugashi`` + ``unidic-lite`` because Sudachi is actively released (sudachipy 0.7.0 and
  sudachidict-core 20261015, both 2026; unidic-lite's dictionary dates from 2021 and fugashi
  needs a separate dictionary package), ships binary wheels with no MeCab system library, and
  reports each morpheme's character offsets into the input, which is what ``start_char`` /
  ``end_char`` need. Mode C (the longest units: compounds and named entities stay whole) is the
  closest to spoken words; for short sentences A, B and C agree.
- Korean: whitespace, no segmenter. Korean is written with spaces between eojeol (a content
  word with its attached particles/endings), which are also the prosodic units a listener hears;
  the reference implementation's extra split (soynlp's L-tokenizer cuts an eojeol into a stem
  and a particle with no pause between them) only subdivides a span whose outer times are
  already given, at the cost of an unmaintained dependency (soynlp) or a ~100 MB model package
  (kiwipiepy-model, whose morphemes are normalised forms that do not always appear verbatim in
  the text). Eojeol units keep ``text == transcript[start_char:end_char]`` exact.
- ``language=None`` (not known): script based - CJK ideographs one per unit, everything else
  whitespace words.

Punctuation stays in the units' ``text`` but gets no slot: the aligner ``token`` keeps letters,
digits, combining marks, apostrophes inside a word ("don't") and ``.``/``,``/``:`` between
digits ("3.5", "1,000", "10:30"). A unit whose token would be empty (only punctuation) is merged
into the previous unit (or into the next one when it comes first); merged units cover the
characters in between, so ``unit.text == text[unit.start_char:unit.end_char]`` always holds.

Aligner input format (:func:`build_aligner_text`): every token followed by a start and an end
slot, ``w1<timestamp><timestamp>w2<timestamp><timestamp>`` - 2 x len(units) slots, the pair
after the last token included (the layout of the Qwen reference processor).

Pure Python: no torch, no vLLM, no Ray. Segmenters are loaded lazily, once per process.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.languages import language_name

TIMESTAMP_TOKEN = "<timestamp>"

# The languages Qwen3-ForcedAligner-0.6B supports (model card), as pipeline.languages names them.
ALIGNER_LANGUAGES: frozenset[str] = frozenset(
    {
        "Chinese", "English", "Cantonese", "French", "German", "Italian", "Japanese", "Korean",
        "Portuguese", "Russian", "Spanish",
    }
)  # fmt: skip

# Languages written without spaces between words (subtitles join their units without spaces).
SPACELESS_LANGUAGES: frozenset[str] = frozenset({"Chinese", "Cantonese", "Japanese"})

_CHAR_UNIT_LANGUAGES = frozenset({"Chinese", "Cantonese"})

# CJK ideographs (unified + extensions A-F + compatibility), as used by Chinese and Cantonese.
_CJK_RANGES = (
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F), (0x30000, 0x323AF), (0x3005, 0x3007),
)  # fmt: skip
_APOSTROPHES = "'\u2019"
_DIGIT_JOINERS = ".,:"
_WHITESPACE = re.compile(r"\S+")


@dataclass(frozen=True)
class Unit:
    """One aligner unit.

    text: the span as it appears in the transcript, attached punctuation included.
    token: what the aligner sees (text without punctuation); never empty.
    start_char, end_char: ``text == transcript[start_char:end_char]``.
    """

    text: str
    token: str
    start_char: int
    end_char: int


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (the characters Chinese is aligned one by one)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_kept(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def clean_token(text: str) -> str:
    """The aligner token of a span: letters, digits and marks; apostrophes inside a word;
    ``.``/``,``/``:`` between two digits. "Don't," -> "Don't"; "$3.50!" -> "3.50"."""
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if _is_kept(ch):
            out.append(ch)
        elif ch in _APOSTROPHES or ch in _DIGIT_JOINERS:
            prev = text[i - 1] if i > 0 else ""
            nxt = text[i + 1] if i + 1 < n else ""
            if ch in _APOSTROPHES:
                if prev and nxt and _is_kept(prev) and _is_kept(nxt):
                    out.append(ch)
            elif prev.isdigit() and nxt.isdigit():
                out.append(ch)
    return "".join(out)


def _is_char_unit_language(name: str | None) -> bool:
    return name in _CHAR_UNIT_LANGUAGES


def normalize_language(language: str | None) -> str | None:
    """The model's language name, or None when unset. Unknown languages raise ValueError."""
    return language_name(language)


def aligner_supports(language: str | None) -> bool:
    """Whether the forced aligner handles this language (ISO code or name). None/unknown: False."""
    try:
        name = language_name(language)
    except ValueError:
        return False
    return name in ALIGNER_LANGUAGES


def is_spaceless(language: str | None) -> bool:
    """Whether the language is written without spaces (Chinese, Cantonese, Japanese).

    Unknown languages count as space-delimited.
    """
    try:
        return language_name(language) in SPACELESS_LANGUAGES
    except ValueError:
        return False


# --- raw spans ---------------------------------------------------------------------------------


def _whitespace_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _WHITESPACE.finditer(text)]


def _cjk_spans(text: str) -> list[tuple[int, int]]:
    """One span per CJK ideograph; other non-space runs split into word runs and single
    punctuation characters (so that punctuation attaches to the unit before it)."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif is_cjk(ch):
            spans.append((i, i + 1))
            i += 1
        elif _is_kept(ch):
            j = i + 1
            while j < n:
                c = text[j]
                if c.isspace() or is_cjk(c):
                    break
                if _is_kept(c):
                    j += 1
                elif j + 1 < n and (
                    (c in _APOSTROPHES and _is_kept(text[j + 1]) and not is_cjk(text[j + 1]))
                    or (c in _DIGIT_JOINERS and text[j - 1].isdigit() and text[j + 1].isdigit())
                ):
                    j += 1  # "don't", "3.5" stay one word
                else:
                    break
            spans.append((i, j))
            i = j
        else:
            spans.append((i, i + 1))
            i += 1
    return spans


# SudachiPy refuses inputs over ~49 KB of UTF-8; feed it pieces well below that.
_SUDACHI_MAX_CHARS = 4000
_sudachi_lock = threading.Lock()


@lru_cache(maxsize=1)
def _sudachi_tokenizer():
    """The Japanese tokenizer, loaded on first use (dictionary load: ~0.1-0.5 s)."""
    from sudachipy import Dictionary, SplitMode

    return Dictionary(dict="core").tokenizer(mode=SplitMode.C)


def _japanese_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    tokenizer = _sudachi_tokenizer()
    for start, end in _whitespace_spans(text):
        pos = start
        while pos < end:
            stop = min(end, pos + _SUDACHI_MAX_CHARS)
            if stop < end:  # cut after a sentence end when one is near
                cut = max(text.rfind(p, pos, stop) for p in "。！？!?")
                if cut > pos:
                    stop = cut + 1
            with _sudachi_lock:  # a Sudachi tokenizer is not safe to share across threads
                morphemes = [(m.begin(), m.end()) for m in tokenizer.tokenize(text[pos:stop])]
            spans.extend((pos + b, pos + e) for b, e in morphemes if b < e)
            pos = stop
    return [(b, e) for b, e in spans if not text[b:e].isspace()]


# --- public API -----------------------------------------------------------------------------


def _merge_punctuation(text: str, spans: list[tuple[int, int]]) -> list[Unit]:
    """Turn raw spans into units: punctuation-only spans join the previous unit (or the next)."""
    units: list[list[int]] = []  # [start, end] of units with a non-empty token
    pending_start: int | None = None  # leading punctuation waiting for the first unit
    for start, end in spans:
        if clean_token(text[start:end]):
            if pending_start is not None:
                start, pending_start = pending_start, None
            units.append([start, end])
        elif units:
            units[-1][1] = end
        elif pending_start is None:
            pending_start = start
    result: list[Unit] = []
    for start, end in units:
        piece = text[start:end]
        result.append(Unit(text=piece, token=clean_token(piece), start_char=start, end_char=end))
    return result


def split_units(text: str, language: str | None) -> list[Unit]:
    """Split a transcript into aligner units (see the module docstring for the rules).

    ``language`` is an ISO code or a name ("zh", "Chinese", "yue"...); None means unknown
    (script based splitting). A language the aligner does not support raises ValueError, as
    does an unknown one. A transcript with no letters or digits gives no units.
    """
    name = language_name(language)
    if name is not None and name not in ALIGNER_LANGUAGES:
        raise ValueError(
            f"the forced aligner does not support {name}: it supports "
            f"{', '.join(sorted(ALIGNER_LANGUAGES))}"
        )
    if name is None or _is_char_unit_language(name):
        spans = _cjk_spans(text)
    elif name == "Japanese":
        spans = _japanese_spans(text)
    else:  # space-delimited languages, Korean included (eojeol)
        spans = _whitespace_spans(text)
    return _merge_punctuation(text, spans)


def build_aligner_text(units: Sequence[Unit | str]) -> str:
    """The aligner's text input: ``tok1<timestamp><timestamp>tok2<timestamp><timestamp>``.

    ``units`` are :class:`Unit` (their ``token`` is used) or plain token strings. Every token is
    followed by its start and end slot, the last one included, so the text holds exactly
    ``2 * len(units)`` ``<timestamp>`` tokens, in unit order.
    """
    pair = TIMESTAMP_TOKEN * 2
    return "".join((u.token if isinstance(u, Unit) else u) + pair for u in units)


# Scripts the supported languages are written in (Unicode character name prefixes).
_KNOWN_SCRIPTS = ("LATIN", "CYRILLIC", "CJK", "HIRAGANA", "KATAKANA", "HANGUL", "DIGIT")


def _script(ch: str) -> str:
    if is_cjk(ch):
        return "CJK"
    if ord(ch) < 0x250:  # Latin-1 and Latin Extended letters, named "MICRO SIGN", "ETH", ...
        return "LATIN"
    # "KATAKANA-HIRAGANA PROLONGED SOUND MARK", "FULLWIDTH LATIN CAPITAL LETTER A",
    # "HALFWIDTH KATAKANA LETTER KA": the script is the first word after a width prefix.
    words = unicodedata.name(ch, "UNKNOWN").replace("-", " ").split()
    if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
        words = words[1:]
    return words[0]


def resolve_language(text: str, language: str | None) -> tuple[str | None, str | None]:
    """Which language to split ``text`` as, or why it cannot be aligned.

    Returns ``(name, None)`` for an aligner language, ``(None, None)`` for an unknown language
    whose text is in scripts the aligner reads (split by script: Latin/Cyrillic words, one unit per
    ideograph), and ``(None, reason)`` for a row to skip: ``unsupported_language: ...``. With no
    language given, kana means Japanese and Hangul means Korean, so they get their segmenters.
    """
    try:
        name = language_name(language)
    except ValueError:
        return None, f"unsupported_language: {language!r} is not a language the aligner knows"
    if name is not None:
        if name not in ALIGNER_LANGUAGES:
            return None, (
                f"unsupported_language: the forced aligner does not support {name} "
                f"(it supports {', '.join(sorted(ALIGNER_LANGUAGES))})"
            )
        return name, None
    scripts = {_script(ch) for ch in text if _is_kept(ch) and unicodedata.category(ch)[0] == "L"}
    unknown = sorted(s for s in scripts if s not in _KNOWN_SCRIPTS)
    if unknown:
        return None, (
            f"unsupported_language: language unknown and the text is in {', '.join(unknown).lower()} "
            "script, which none of the aligner's languages use"
        )
    if scripts & {"HIRAGANA", "KATAKANA"}:
        return "Japanese", None
    if "HANGUL" in scripts:
        return "Korean", None
    return None, None
