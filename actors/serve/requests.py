"""One transcription request, from decoded samples to the answer in the asked format.

The engines are injected (``asr_call``, ``align_call``: the deployments' methods through their
handles), so this module is the request logic only: chunking as the batch path does
(pipeline/audio/chunking.py), languages by the project's one rule (pipeline/languages.py), chunk
results merged as the batch ASR actor merges them, words through the aligner's span plan, and the
response formats of the OpenAI audio API reference (``json``, ``text``, ``srt``, ``vtt``,
``verbose_json``; ``timestamp_granularities[]`` ``segment`` and ``word``) plus the Qwen3-ASR
toolkit's chat answer (``language English<asr_text>...``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from actors.asr_actor import join_texts, merge_languages, row_language_probability
from pipeline.align.sentences import sentence_segments
from pipeline.align.subtitles import to_srt, to_vtt
from pipeline.align.units import ALIGNER_LANGUAGES, resolve_language
from pipeline.audio.chunking import plan_chunks
from pipeline.languages import language_name
from pipeline.output.formats import verbose_json

SAMPLE_RATE = 16000
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")

# (audio float32 [n] 16 kHz, context, language name or None) -> the ASR deployment's answer
AsrCall = Callable[[np.ndarray, str, "str | None"], Awaitable[dict]]
# (samples, [(start, end, text)] in samples, language) -> the aligner deployment's answer
AlignCall = Callable[[np.ndarray, list, "str | None"], Awaitable[dict]]


class ApiError(Exception):
    """A request answered with an error: HTTP ``status``, a message for the client, and the
    OpenAI error object's ``code`` and ``param``."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param

    def body(self) -> dict:
        """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


def forced_language(value: str | None, default: str | None = None) -> str | None:
    """The model's name for a request's ``language`` (ISO 639, BCP-47 or a name; empty, ``auto``:
    detect), else for the application's default. Raises ApiError 400 ``unsupported_language``."""
    try:
        return language_name(value if value not in (None, "") else default)
    except ValueError as e:
        raise ApiError(400, str(e), "unsupported_language", "language") from None


def check_format(response_format: str | None, granularities: Sequence[str]) -> tuple[str, set[str]]:
    """Validate ``response_format`` (default ``json``) and ``timestamp_granularities[]``; OpenAI's
    rule: granularities need ``verbose_json``. Raises ApiError 400."""
    fmt = response_format or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt!r}", "invalid_value", "response_format")
    wanted = set(granularities)
    unknown = wanted - set(GRANULARITIES)
    if unknown:
        raise ApiError(400, f"timestamp_granularities[] takes segment and word, got {sorted(unknown)}", "invalid_value", "timestamp_granularities[]")
    if wanted and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format=verbose_json", "invalid_value", "timestamp_granularities[]")
    return fmt, wanted


def check_alignable(language: str | None) -> None:
    """Raise ApiError 400 when word timestamps are asked for in a language the aligner lacks."""
    if language is not None and language not in ALIGNER_LANGUAGES:
        raise ApiError(
            400,
            f"word timestamps are available in {', '.join(sorted(ALIGNER_LANGUAGES))}; not in {language}",
            "unsupported_language_for_timestamps", "timestamp_granularities[]",
        )  # fmt: skip


async def transcribe(samples: np.ndarray, asr_call: AsrCall, *, max_chunk_s: float, context: str, language: str | None) -> dict:
    """Transcribe a recording (float32 [n], 16 kHz mono): cut into chunks of at most
    ``max_chunk_s`` at quiet points, all chunks in flight at once.

    Returns a results row: ``{"duration_s", "language" (model name or None),
    "language_probability" (0..1, None when forced), "text",
    "segments": [{"start", "end", "text", "language"}] (the chunks, seconds)}``. Raises ApiError
    400 when the engine rejects a chunk."""
    chunks = plan_chunks(samples, SAMPLE_RATE, max_chunk_s)
    results = await asyncio.gather(*(asr_call(samples[s:e], context, language) for s, e in chunks))
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        raise ApiError(400, f"the engine could not transcribe the audio: {failed[0]}", "engine_rejected")
    segments = [
        {"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE, "text": r["text"], "language": r["language"]}
        for (s, e), r in zip(chunks, results)
    ]
    durations = [(e - s) / SAMPLE_RATE for s, e in chunks]
    languages = [r["language"] for r in results]
    detected = merge_languages(languages, durations)
    return {
        "duration_s": len(samples) / SAMPLE_RATE,
        "language": detected,
        # As the batch rows: None when forced (nothing was detected) or no chunk reported one.
        "language_probability": row_language_probability(
            detected, languages, [r.get("language_probability") for r in results], durations
        ),
        "text": join_texts([r["text"] for r in results], detected),
        "segments": segments,
    }


async def add_words(row: dict, samples: np.ndarray, align_call: AlignCall, *, language: str | None) -> dict:
    """Word times for a transcribed row, each ASR chunk aligned with its own text (as the batch
    path does). ``language``: the forced one, else the row's detected one. Adds ``words`` and
    replaces ``segments`` by sentence segments. Raises ApiError 400 for a language the aligner
    does not support (or text in a script none of its languages use)."""
    name, reason = resolve_language(row["text"], language or row["language"])
    if reason is not None:
        raise ApiError(400, f"word timestamps: {reason}", "unsupported_language_for_timestamps", "timestamp_granularities[]")
    spans = [
        (round(s["start"] * SAMPLE_RATE), round(s["end"] * SAMPLE_RATE), s["text"]) for s in row["segments"] if s["text"].strip()
    ]
    result = await align_call(samples, spans, name) if spans else {"words": []}
    if "error" in result:
        raise ApiError(400, f"the aligner could not align the audio: {result['error']}", "engine_rejected")
    words = result["words"]
    return dict(row, words=words, segments=sentence_segments(words, language=row["language"] or name))


def render(row: dict, fmt: str, granularities: set[str]) -> tuple[Any, str]:
    """The answer body and its media type.

    - ``json``: ``{"text", "language", "language_probability", "duration", "usage"}``;
      ``language`` lower-case as in OpenAI's verbose_json (``english``), null when no speech was
      heard; ``language_probability`` (0..1) null when the language was forced.
    - ``text``: the text; ``srt`` / ``vtt``: subtitles from word times when the row has them, else
      one cue per segment.
    - ``verbose_json``: :func:`pipeline.output.formats.verbose_json`, ``segments`` unless only
      ``word`` was asked, ``words`` when asked.
    """
    if fmt == "text":
        return row["text"] + "\n", "text/plain; charset=utf-8"
    if fmt in ("srt", "vtt"):
        writer = to_srt if fmt == "srt" else to_vtt
        if row.get("words") is not None:
            body = writer(row["words"], language=row["language"])
        else:  # one cue per segment: a segment alone breaks max_chars=1, so it gets its own cue
            body = writer([s for s in row["segments"] if s["text"].strip()], max_chars=1, language=row["language"])
        return body, ("application/x-subrip" if fmt == "srt" else "text/vtt") + "; charset=utf-8"
    language = row["language"].lower() if row["language"] else None
    usage = {"type": "duration", "seconds": round(row["duration_s"], 3)}
    probability = row.get("language_probability")
    if fmt == "json":
        return {"text": row["text"], "language": language, "language_probability": probability,
                "duration": row["duration_s"], "usage": usage}, "application/json"  # fmt: skip
    out = verbose_json(row)
    out["language_probability"] = probability
    if granularities == {"word"}:
        out.pop("segments", None)
    if "word" not in granularities:
        out.pop("words", None)
    out["usage"] = usage
    return out, "application/json"


def toolkit_answer(row: dict) -> str:
    """The Qwen3-ASR toolkit server's answer: ``language English<asr_text>the text``
    (``language None<asr_text>`` when no speech was heard), as its examples parse it."""
    return f"language {row['language'] or 'None'}<asr_text>{row['text']}"
