"""Quality signals of a labeled utterance and the filter that keeps or rejects it.

Each signal is a plain number or flag stored as its own column, so a dataset can be re-filtered
with other thresholds without running a model again. Reasons are short fixed words (the prefix
before ``:``) so they group in metrics; the text after ``:`` says what was measured.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.align.units import is_spaceless
from pipeline.languages import language_name
from pipeline.score.wer import score_row

_WORD_CHAR = re.compile(r"[^\W_]", re.UNICODE)

REASONS = (
    "too_short", "too_long", "empty", "non_speech", "speech_rate", "repetition",
    "language_mismatch", "disagreement", "agreement_error", "low_confidence", "flagged",
)  # fmt: skip


def units_of(text: str, language: str | None) -> list[str]:
    """Words, or characters for languages written without spaces (letters and digits only)."""
    if is_spaceless(language):
        return [ch for ch in text if _WORD_CHAR.match(ch)]
    return [w for w in (re.sub(r"[^\w']+", "", t.lower()) for t in text.split()) if w]


def longest_repeat(units: list[str], max_n: int = 4) -> int:
    """The most times any 1..max_n-unit phrase repeats back to back ("a b a b a b" -> 3)."""
    best = 1 if units else 0
    for n in range(1, max_n + 1):
        for start in range(n):
            run = 1
            for k in range(start + n, len(units) - n + 1, n):
                if units[k : k + n] == units[k - n : k]:
                    run += 1
                    best = max(best, run)
                else:
                    run = 1
    return best


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def rms_db(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def same_language(a: str | None, b: str | None) -> bool | None:
    """None when either is unknown (nothing to compare)."""
    try:
        na, nb = language_name(a), language_name(b)
    except ValueError:
        return None
    if na is None or nb is None:
        return None
    return na == nb


@dataclass
class Signals:
    duration_s: float
    speech_s: float
    units: int
    units_per_s: float | None
    max_repeat: int
    compression_ratio: float
    rms_db: float
    empty: bool
    language_mismatch: bool
    # Mean confidence of the utterance's words (None without log-probabilities); share of the
    # utterance inside the ASR chunks (speech, with VAD; None when unknown); the recording's flags.
    confidence: float | None = None
    speech_share: float | None = None
    flags: tuple[str, ...] = ()


def measure(
    text: str, language: str | None, hint: str | None, audio: np.ndarray, sample_rate: int, speech_s: float,
    *, confidence: float | None = None, speech_share: float | None = None, flags: tuple[str, ...] = (),
) -> Signals:
    units = units_of(text, language)
    return Signals(
        duration_s=len(audio) / sample_rate,
        speech_s=speech_s,
        units=len(units),
        units_per_s=len(units) / speech_s if speech_s > 0 else None,
        max_repeat=longest_repeat(units),
        compression_ratio=compression_ratio(text),
        rms_db=rms_db(audio),
        empty=not units,
        language_mismatch=same_language(language, hint) is False,
        confidence=confidence,
        speech_share=speech_share,
        flags=tuple(flags),
    )


def first_pass_reasons(s: Signals, *, min_s: float, max_s: float, f) -> list[str]:
    """Reasons that need no second model; ``f`` is the job's FilterConfig."""
    reasons = []
    if s.duration_s < min_s:
        reasons.append(f"too_short: {s.duration_s:.2f} s < {min_s} s")
    if s.duration_s > max_s:
        reasons.append(f"too_long: {s.duration_s:.2f} s > {max_s} s")
    if f.reject_empty and s.empty:
        reasons.append("empty: no words in the transcript")
    if f.min_rms_db is not None and s.rms_db < f.min_rms_db:
        reasons.append(f"non_speech: level {s.rms_db:.1f} dBFS < {f.min_rms_db}")
    if not s.empty and s.units_per_s is not None:
        if f.min_units_per_s is not None and s.units_per_s < f.min_units_per_s:
            reasons.append(f"speech_rate: {s.units_per_s:.2f} units/s < {f.min_units_per_s}")
        if f.max_units_per_s is not None and s.units_per_s > f.max_units_per_s:
            reasons.append(f"speech_rate: {s.units_per_s:.2f} units/s > {f.max_units_per_s}")
    if f.max_repeats is not None and s.max_repeat >= f.max_repeats:
        reasons.append(f"repetition: a phrase repeats {s.max_repeat} times")
    if f.max_compression_ratio is not None and s.compression_ratio > f.max_compression_ratio:
        reasons.append(f"repetition: compression ratio {s.compression_ratio:.2f} > {f.max_compression_ratio}")
    if f.reject_language_mismatch and s.language_mismatch:
        reasons.append("language_mismatch: detected language differs from the manifest's hint")
    if f.min_confidence is not None and s.confidence is not None and s.confidence < f.min_confidence:
        reasons.append(f"low_confidence: mean word confidence {s.confidence:.2f} < {f.min_confidence}")
    if f.min_speech_share is not None and s.speech_share is not None and s.speech_share < f.min_speech_share:
        reasons.append(f"non_speech: speech share {s.speech_share:.2f} < {f.min_speech_share}")
    flagged = sorted(set(s.flags) & set(f.reject_flags))
    if flagged:
        reasons.append(f"flagged: {', '.join(flagged)}")
    return reasons


def agreement_wer(first: str, second: str, language: str | None) -> float:
    """Error rate of the second model's text against the first's (normalized, words or chars)."""
    score = score_row(first, second, language)
    if score.ref_units == 0:
        return 0.0 if score.errors == 0 else 1.0
    return score.errors / score.ref_units


def reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]
