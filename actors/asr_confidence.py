"""Confidence from the engine's token log-probabilities: per segment, per word, for the language.

vLLM returns, with ``SamplingParams(logprobs=0)``, the log-probability of each chosen token only
(natural log, <= 0), which costs one gather per token. From them:

- ``avg_logprob`` of a chunk: the mean over its transcript tokens (after ``<asr_text>``), as
  Whisper reports per segment; the end-of-answer token is left out (it says nothing about words).
- ``confidence`` of a word: ``exp(mean log-probability of the tokens that overlap its characters)``,
  the per-token geometric mean probability, in (0, 1]; a word of one token is that token's probability.
- ``language_probability``: ``exp(sum of the log-probabilities of the language-name tokens)``
  in ``language English<asr_text>``: the probability of the whole name given the audio. None when
  the language was forced (the name is in the prompt, not generated).

Token characters: byte-level BPE tokens (Qwen's tokenizer, GPT-2's byte alphabet) are mapped back
to their bytes, so each token's character span in the decoded text is exact even when a
character spans several tokens (CJK); the spans are checked against the engine's own text.

Pure Python: no vLLM, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

ASR_TEXT_TAG = "<asr_text>"
_LANGUAGE_PREFIX = "language "


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` inverted: the printable character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(token: str, special: bool) -> bytes:
    """The bytes a token string stands for in decoded text: nothing for a special token (skipped
    when decoding), the byte-level BPE bytes for a regular one, its UTF-8 for an added token that
    is not byte-encoded (``<asr_text>``)."""
    if special:
        return b""
    decoder = _byte_decoder()
    if all(ch in decoder for ch in token):
        return bytes(decoder[ch] for ch in token)
    return token.encode("utf-8")


def char_spans(pieces: Sequence[bytes], text: str) -> list[tuple[int, int]] | None:
    """Each token's ``(start, end)`` characters in ``text``, from the tokens' bytes ``pieces``.

    A token that ends inside a multi-byte character is given the characters completed so far
    (possibly an empty span); the character goes to the token that completes it. Returns None
    when the pieces do not decode to ``text`` (a tokenizer this mapping does not understand).
    """
    joined = b"".join(pieces)
    try:
        decoded = joined.decode("utf-8")
    except UnicodeDecodeError:
        decoded = joined.decode("utf-8", errors="replace")
    if decoded != text:
        return None
    # Character index at each byte boundary: a char starts at every non-continuation byte.
    spans: list[tuple[int, int]] = []
    chars_done = 0
    pos = 0
    for piece in pieces:
        end = pos + len(piece)
        # Characters wholly inside joined[:end]: count start bytes before end, minus a
        # character still incomplete at end.
        complete = len(joined[:end].decode("utf-8", errors="ignore"))
        spans.append((chars_done, max(chars_done, complete)))
        chars_done = max(chars_done, complete)
        pos = end
    return spans


def language_probability(text: str, spans: Sequence[tuple[int, int]], logprobs: Sequence[float]) -> float | None:
    """Probability of the language name in an unforced answer ``language Name<asr_text>...``.

    ``text``: the generated text; ``spans``/``logprobs``: per generated token. The name's tokens
    are those overlapping the characters between ``"language "`` and ``<asr_text>``; returns
    ``exp(sum of their log-probabilities)``, in [0, 1], or None when the answer has no such name.
    """
    if not text.startswith(_LANGUAGE_PREFIX.strip()):
        return None
    tag = text.find(ASR_TEXT_TAG)
    name_end = tag if tag >= 0 else len(text)
    name_start = len(_LANGUAGE_PREFIX.rstrip())
    if not text[name_start:name_end].strip():
        return None
    total = 0.0
    used = False
    for (s, e), lp in zip(spans, logprobs):
        if e > s and s < name_end and e > name_start and text[max(s, name_start) : min(e, name_end)].strip():
            total += lp
            used = True
    return math.exp(total) if used else None


def transcript_start(text: str, forced: bool) -> int:
    """Character where the transcript begins in the generated ``text``: after ``<asr_text>``
    (unforced; the whole text when the tag is missing), or 0 when the language was forced."""
    if forced:
        return 0
    tag = text.find(ASR_TEXT_TAG)
    return tag + len(ASR_TEXT_TAG) if tag >= 0 else 0


def avg_logprob(spans: Sequence[tuple[int, int]], logprobs: Sequence[float], start: int) -> float | None:
    """Mean log-probability of the tokens with characters at or after ``start`` (the transcript);
    None when there are none."""
    values = [lp for (s, e), lp in zip(spans, logprobs) if e > s and s >= start]
    return sum(values) / len(values) if values else None


def unit_confidences(
    units: Sequence[str],
    text: str,
    spans: Sequence[tuple[int, int]],
    logprobs: Sequence[float],
    start: int,
) -> list[float | None]:
    """``confidence`` of each unit (word) of a transcript, in order.

    Units are found one after another in ``text`` from character ``start`` on (the transcript as
    generated: a collapsed loop or a trimmed space still finds every kept unit in order); a unit's
    confidence is ``exp(mean log-probability)`` of the tokens overlapping its characters. A unit
    not found gets None.
    """
    out: list[float | None] = []
    cursor = start
    for unit in units:
        at = text.find(unit, cursor) if unit else -1
        if at < 0:
            out.append(None)
            continue
        end = at + len(unit)
        values = [lp for (s, e), lp in zip(spans, logprobs) if e > s and s < end and e > at]
        out.append(math.exp(sum(values) / len(values)) if values else None)
        cursor = end
    return out


def carry_confidences(aligned: Sequence[dict], asr_words: Sequence[dict] | None) -> list[dict]:
    """The aligner's words of one ASR chunk with ``confidence`` taken from that chunk's ASR words.

    ``aligned``: ``[{"text", "start", "end", ...}]``; ``asr_words``: ``[{"text", "confidence"}]``
    from the ASR engine for the same chunk text. Both are the chunk's units in order; where the
    two splits agree word for word the confidences are copied, otherwise each aligned word takes
    the lowest confidence among the ASR words whose characters it overlaps (both located one after
    another in their joined text). Returns new dicts; ``confidence`` None where nothing matches.
    """
    asr = list(asr_words or [])
    if [w.get("text") for w in asr] == [w.get("text") for w in aligned]:
        return [dict(w, confidence=a.get("confidence")) for w, a in zip(aligned, asr)]
    text = " ".join(a.get("text") or "" for a in asr)
    located: list[tuple[int, int, float | None]] = []
    cursor = 0
    for a in asr:
        at = text.find(a.get("text") or "", cursor)
        located.append((at, at + len(a.get("text") or ""), a.get("confidence")))
        cursor = at + len(a.get("text") or "")
    out = []
    cursor = 0
    for w in aligned:
        word = w.get("text") or ""
        at = text.find(word, cursor) if word else -1
        if at < 0:
            out.append(dict(w, confidence=None))
            continue
        end = at + len(word)
        cursor = end
        values = [c for s, e, c in located if c is not None and s < end and e > at]
        out.append(dict(w, confidence=min(values) if values else None))
    return out


def mean_log_confidence(words: Sequence[dict]) -> float | None:
    """A sentence segment's ``avg_logprob``: the mean natural log of its words' confidences
    (equal to the token average where every word is one token); None without confidences."""
    values = [math.log(max(w["confidence"], 1e-12)) for w in words if w.get("confidence") is not None]
    return sum(values) / len(values) if values else None
