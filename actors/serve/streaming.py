"""A streaming session: audio arrives piece by piece, partial and final results go back.

The scheme is the Qwen3-ASR toolkit's ``streaming_transcribe``: the audio of the current
utterance (the window) is decoded again every ``step_s`` of new audio, and after the first
``unfixed_steps`` decodes the previous answer, minus its last ``unfixed_units`` units, is given
as the start of the answer (the engine's ``prefix``), so the model continues what it already
said instead of recognising an isolated piece. The toolkit keeps one window from the start of the
stream; here a window ends at the end of an utterance (``endpoint_silence_s`` of silence after
speech) or at ``max_window_s``, its result becomes final, and the text of the earlier utterances
is the next window's context (the system prompt), so cost stays bounded on long streams and
recognition still knows what was said before. Answers are parsed by the engine adapter
(``language X<asr_text>`` never reaches the text).

Messages (JSON): ``{"type": "partial" | "final", "text": the whole transcript so far,
"language": model name or null, "segment": {"start", "end", "text", "language"} (seconds from
the start of the stream: the utterance being recognised, or just finished), "is_last"}``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import numpy as np

from actors.asr_actor import join_texts
from actors.asr_engine import ASR_TEXT_TAG
from actors.serve.config import Streaming

SAMPLE_RATE = 16000
FRAME = SAMPLE_RATE // 10  # 100 ms frames for the speech/silence decision
# Units of an answer for the take-back: a CJK character, or a run of non-space characters.
_UNIT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")

# (window audio, context, forced language, prefix) -> the engine adapter's answer dict
StreamCall = Callable[[np.ndarray, str, "str | None", str], Awaitable[dict]]


def take_back(raw: str, units: int) -> str:
    """The prefix for the next decode: ``raw`` (the previous answer, language tag included) minus
    its last ``units`` units of text, the tag kept. The toolkit takes back tokens; units (words,
    CJK characters) keep the cut on a word boundary, which a token cut may not."""
    head, tag, body = raw.rpartition(ASR_TEXT_TAG)
    if not tag:  # a forced language: the answer is text only
        head, body = "", raw
    else:
        head += tag
    spans = [m.span() for m in _UNIT.finditer(body)]
    if len(spans) <= units:
        return head
    return head + body[: spans[len(spans) - units - 1][1] if units else len(body)]


def frame_rms(samples: np.ndarray) -> np.ndarray:
    """RMS of each whole 100 ms frame (float64 [n // 1600])."""
    n = len(samples) // FRAME
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    return np.sqrt((frames * frames).mean(axis=1))


def speech_ended(samples: np.ndarray, silence_s: float, silence_rms: float) -> bool:
    """Whether the audio holds speech followed by at least ``silence_s`` of silence: its last
    frames are all quieter than ``silence_rms`` and than a tenth of its loudest frame."""
    rms = frame_rms(samples)
    need = int(np.ceil(silence_s * 10))
    if len(rms) <= need:
        return False
    floor = max(silence_rms, 0.1 * float(rms.max()))
    voiced = rms >= floor
    return bool(voiced[:-need].any() and not voiced[-need:].any())


class StreamSession:
    """One stream's state. :meth:`feed` adds audio; :meth:`poll` decodes when a step's worth of
    new audio has come and returns the messages to send; :meth:`finish` ends the stream."""

    def __init__(self, call: StreamCall, cfg: Streaming, *, language: str | None, context: str = "") -> None:
        self.call = call
        self.cfg = cfg
        self.language = language
        self.context = context
        self.audio = np.zeros(0, np.float32)
        self.window_start = 0  # samples
        self.decoded_to = 0  # samples of audio the last decode saw
        self.steps = 0  # decodes of the current window
        self.raw = ""  # the current window's last answer
        self.finals: list[dict] = []  # finished utterances (segments)
        self.detected: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> None:
        """Append float32 mono 16 kHz samples."""
        self.audio = np.concatenate([self.audio, np.asarray(samples, np.float32)])

    def replace(self, samples: np.ndarray) -> None:
        """The whole stream so far, decoded again from its container (it only grows)."""
        if len(samples) > len(self.audio):
            self.audio = np.asarray(samples, np.float32)

    async def poll(self) -> list[dict]:
        """Decode if ``step_s`` of new audio has come since the last decode; the messages."""
        if len(self.audio) - self.decoded_to < self.cfg.step_s * SAMPLE_RATE:
            return []
        return await self._step(last=False)

    async def finish(self) -> list[dict]:
        """End of stream: the current window's final result (``is_last``)."""
        return await self._step(last=True)

    def _context(self) -> str:
        earlier = join_texts([s["text"] for s in self.finals], self.detected)
        earlier = earlier[-self.cfg.context_chars :] if self.cfg.context_chars else ""
        return "\n".join(t for t in (self.context, earlier) if t)

    async def _step(self, *, last: bool) -> list[dict]:
        end = len(self.audio)
        window = self.audio[self.window_start : end]
        self.decoded_to = end
        if len(window) == 0:
            return [self._message("final", None, last=True)] if last else []
        ended = last or speech_ended(window, self.cfg.endpoint_silence_s, self.cfg.silence_rms)
        ended = ended or len(window) >= self.cfg.max_window_s * SAMPLE_RATE
        prefix = take_back(self.raw, self.cfg.unfixed_units) if self.steps >= self.cfg.unfixed_steps else ""
        result = await self.call(window, self._context(), self.language, prefix)
        if "error" in result:
            raise ValueError(result["error"])
        self.steps += 1
        self.raw = result["raw"]
        segment = {
            "start": self.window_start / SAMPLE_RATE, "end": end / SAMPLE_RATE,
            "text": result["text"], "language": result["language"],
        }  # fmt: skip
        if result["language"]:
            self.detected = result["language"]
        if not ended:
            return [self._message("partial", segment, last=False)]
        if segment["text"].strip():
            self.finals.append(segment)
        self.window_start, self.steps, self.raw = end, 0, ""
        return [self._message("final", segment, last=last)]

    def _message(self, kind: str, segment: dict | None, *, last: bool) -> dict:
        texts = [s["text"] for s in self.finals]
        if kind == "partial" and segment is not None:
            texts.append(segment["text"])
        return {
            "type": kind,
            "text": join_texts(texts, self.detected),
            "language": self.language or self.detected,
            "segment": segment,
            "is_last": last,
        }
