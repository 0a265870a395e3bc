"""Guards on what the ASR engine returns for one chunk: token budget, repetition loops, context echo.

Pure Python (no vLLM, no Ray): the engine adapter (actors/asr_engine.py) applies them to every
chunk, and the tests check them on real engine output.

- Token budget: a chunk's answer cannot be longer than its speech allows. ``max_new_tokens`` per
  request is ``ceil(tokens_per_s x speech seconds) + margin``, capped at the configured maximum,
  so a loop stops at a length a person could have spoken instead of running to the flat cap.
- Repetition: the generated tokens hold an n-gram repeated back to back ``min_repeats`` times or
  more (a loop such as "I think. I think. I think. ..."). Counted on token ids, so it works the
  same for text with and without spaces ("yellowyellowyellow" is one token repeated).
- Context echo: the answer only repeats the context (hotwords) while the chunk holds little
  speech: the model read its prompt back instead of listening.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Flags a chunk (and so its row) can carry; ``flags`` on a result row lists those that applied.
REPETITION = "repetition"  # the answer still looped after the retry; the loop was collapsed to one copy
REPETITION_RETRIED = "repetition_retried"  # a loop was found and the chunk decoded again with a repetition penalty
CONTEXT_ECHO = "context_echo"  # the answer repeated the context over little speech and was dropped
TOKEN_LIMIT = "token_limit"  # the answer reached the chunk's token budget (cut short)
NO_SPEECH = "no_speech"  # VAD found no speech in the recording: nothing was sent to the engine
FLAGS = (REPETITION, REPETITION_RETRIED, CONTEXT_ECHO, TOKEN_LIMIT, NO_SPEECH)


@dataclass(frozen=True)
class GuardOptions:
    """Guard settings (``asr.guards`` in the config).

    - ``tokens_per_s``: ceiling on answer tokens per second of speech. Fast speech is about 6-7
      words/s (English) or 7-8 characters/s (Chinese); Qwen's tokenizer spends about 1.3 tokens per
      English word and about one per Chinese character, so 15/s leaves room for the fastest speech.
    - ``margin_tokens``: tokens added to every budget: the ``language X<asr_text>`` prefix (3-5
      tokens), the end token and short chunks whose speech estimate is low.
    - ``min_repeats`` / ``max_ngram``: a loop is an n-gram of up to ``max_ngram`` tokens repeated
      back to back at least ``min_repeats`` times. Natural speech repeats a word three or four
      times ("no no no"); five copies in a row is where the qwen-asr toolkit's reports of loops start.
    - ``repetition_penalty``: vLLM's ``SamplingParams.repetition_penalty`` for the one retry of a
      looping chunk (1.0 = off; values above 1 make tokens already in the prompt or the answer
      less likely, as in the CTRL paper / Hugging Face ``generate``).
    - ``echo_min_overlap`` / ``echo_max_speech_s``: an answer whose units are at least this share
      of context units, from a chunk with less than this much speech, is a context echo.
    """

    tokens_per_s: float = 15.0
    margin_tokens: int = 24
    min_repeats: int = 5
    max_ngram: int = 10
    repetition_penalty: float = 1.3
    echo_min_overlap: float = 0.8
    echo_max_speech_s: float = 1.0


def token_budget(speech_s: float | None, options: GuardOptions, cap: int) -> int:
    """``max_new_tokens`` for one chunk: ``ceil(tokens_per_s x speech_s) + margin_tokens``, at most
    ``cap`` (the configured ``max_new_tokens``) and at least 1. ``speech_s`` None = unknown: ``cap``."""
    if speech_s is None:
        return cap
    return max(1, min(cap, int(math.ceil(options.tokens_per_s * max(0.0, speech_s))) + options.margin_tokens))


def find_repetition(tokens: Sequence[int], min_repeats: int, max_ngram: int) -> tuple[int, int, int] | None:
    """The longest back-to-back repetition in ``tokens`` (token ids, or any comparable items).

    Returns ``(start, n, copies)``: ``tokens[start : start + n]`` is repeated ``copies`` times in a
    row (``copies >= min_repeats``), covering ``tokens[start : start + n * copies]``; ``None`` when
    no n-gram of 1..``max_ngram`` items repeats ``min_repeats`` times. Among runs the one covering
    the most items wins, then the shortest n-gram. O(len(tokens) x max_ngram).
    """
    items = list(tokens)
    size = len(items)
    best: tuple[int, int, int] | None = None
    for n in range(1, max_ngram + 1):
        if n * min_repeats > size:
            break
        # same[i]: items[i] == items[i + n]; a run of r * n such positions is r + 1 copies.
        i = 0
        while i + n < size:
            if items[i] != items[i + n]:
                i += 1
                continue
            j = i
            while j + n < size and items[j] == items[j + n]:
                j += 1
            run = j - i + n  # items[i : j + n] is periodic with period n
            copies = run // n
            if copies >= min_repeats and (best is None or copies * n > best[1] * best[2]):
                best = (i, n, copies)
            i = j + 1
    return best


def collapse_span(text: str, spans: Sequence[tuple[int, int]], repetition: tuple[int, int, int]) -> str:
    """``text`` with a token repetition kept once: the characters of copies 2..k removed.

    ``spans``: each generated token's ``(start, end)`` characters in ``text``; ``repetition``: from
    :func:`find_repetition` over the same tokens.
    """
    start, n, copies = repetition
    cut_from = spans[start + n][0]
    cut_to = spans[start + n * copies - 1][1]
    return text[:cut_from] + text[cut_to:]


_WORD = re.compile(r"\w+", re.UNICODE)


def _units(text: str) -> list[str]:
    """Comparison units: words, with every CJK-like character (no spaces in its script) on its own."""
    units: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        if any(_spaceless(ch) for ch in word):
            units.extend(ch for ch in word if not ch.isspace())
        else:
            units.append(word)
    return units


def _spaceless(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI"))


def is_context_echo(text: str, context: str, speech_s: float | None, options: GuardOptions) -> bool:
    """True when ``text`` (a chunk's answer) mostly repeats ``context`` while the chunk holds
    little speech: at least ``echo_min_overlap`` of the answer's units (words; characters in
    scripts without spaces) occur in the context, and ``speech_s`` (seconds of speech in the
    chunk; None = unknown, treated as the chunk's length by the caller) is below
    ``echo_max_speech_s``. An empty answer or context is never an echo."""
    if not text.strip() or not (context or "").strip():
        return False
    if speech_s is not None and speech_s >= options.echo_max_speech_s:
        return False
    answer = _units(text)
    if not answer:
        return False
    known = set(_units(context))
    return sum(u in known for u in answer) / len(answer) >= options.echo_min_overlap
