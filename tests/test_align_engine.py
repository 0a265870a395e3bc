"""Tests for actors/align_engine.py: prompt helpers, the tiny aligner checkpoint, one real engine."""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest

from actors.align_engine import RowError, build_aligner_prompt, build_aligner_text
from tests.fixtures.tiny_aligner import build_tiny_aligner

WORDS = ["hello", "world", "red", "green", "blue", "yes", "no", "stop"]


def test_aligner_prompt_format():
    text = build_aligner_text(["hello", "world"])
    assert text == "hello<timestamp><timestamp>world<timestamp><timestamp>"
    assert build_aligner_prompt(text) == "<|audio_start|><|audio_pad|><|audio_end|>" + text


def test_tiny_aligner_layout(tiny_aligner_dir):
    with open(os.path.join(tiny_aligner_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(tiny_aligner_dir, "tokenizer.json")) as f:
        added = {t["content"]: t for t in json.load(f)["added_tokens"]}
    assert config["model_type"] == "qwen3_asr"
    assert config["timestamp_token_id"] == added["<timestamp>"]["id"]
    assert not added["<timestamp>"]["special"]
    assert config["timestamp_segment_time"] == 80
    classify_num = config["thinker_config"]["classify_num"]
    hidden = config["thinker_config"]["text_config"]["hidden_size"]

    from safetensors import safe_open

    path = os.path.join(tiny_aligner_dir, "model.safetensors")
    with safe_open(path, "pt") as f:
        head = f.get_tensor("thinker.lm_head.weight")
        assert all(k.startswith("thinker.") for k in f.keys())
    assert tuple(head.shape) == (classify_num, hidden)
    assert str(head.dtype) == "torch.bfloat16"
    assert os.path.getsize(path) < 2_000_000


def test_tiny_aligner_is_deterministic(tiny_aligner_dir, tmp_path):
    again = build_tiny_aligner(str(tmp_path / "again"), seed=0)
    for name in sorted(os.listdir(tiny_aligner_dir)):
        with open(os.path.join(tiny_aligner_dir, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name


@pytest.mark.engine
def test_align_engine_concurrent_requests(tiny_aligner_dir):
    from actors.align_engine import AlignEngine

    with open(os.path.join(tiny_aligner_dir, "config.json")) as f:
        config = json.load(f)
    classify_num = config["thinker_config"]["classify_num"]

    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(16000 * (2.0 + 0.4 * i)))).astype(np.float32) for i in range(6)]
    texts = [build_aligner_text(WORDS[: 3 + i]) for i in range(6)]  # 3..8 units

    async def run():
        t0 = time.perf_counter()
        # enforce_eager: no torch.compile on 2 CPU cores; max_audio_s=10 keeps max_model_len small.
        engine = AlignEngine(tiny_aligner_dir, enforce_eager=True, max_audio_s=10)
        start_s = time.perf_counter() - t0
        try:
            assert engine.classify_num == classify_num
            assert engine._step_pooling  # only the <timestamp> rows come back
            t0 = time.perf_counter()
            results = await asyncio.gather(*[engine.align(c, t) for c, t in zip(clips, texts)])
            batch_s = time.perf_counter() - t0
            print(f"aligner engine start {start_s:.1f} s, 6 concurrent requests {batch_s:.2f} s")

            for text, r in zip(texts, results):
                assert set(r) == {"slot_classes", "segment_time_s", "engine_s"}
                assert len(r["slot_classes"]) == text.count("<timestamp>")
                assert all(isinstance(c, int) and 0 <= c < classify_num for c in r["slot_classes"])
                assert r["segment_time_s"] == config["timestamp_segment_time"] / 1000.0
                assert r["engine_s"] > 0

            # Same input, same classes (one deterministic forward pass).
            again = await engine.align(clips[1], texts[1])
            assert again["slot_classes"] == results[1]["slot_classes"]

            # Bad rows fail alone, as RowErrors; the engine carries on.
            with pytest.raises(RowError):  # prompt longer than max_model_len
                await engine.align(clips[0], build_aligner_text(["word"] * 3000))
            with pytest.raises(RowError, match="no <timestamp>"):
                await engine.align(clips[0], "hello world")
            with pytest.raises(RowError, match="control tokens"):
                await engine.align(clips[0], "<|audio_pad|>x<timestamp><timestamp>")
            with pytest.raises(RowError, match="max_audio_s"):
                await engine.align(np.zeros(16000 * 11, np.float32), texts[0])
            with pytest.raises(RowError, match="mono"):
                await engine.align(np.zeros((2, 16000), np.float32), texts[0])
            ok = await engine.align(clips[0], texts[0])
            assert len(ok["slot_classes"]) == 6
        finally:
            engine.shutdown()

    asyncio.run(run())
