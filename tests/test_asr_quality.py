"""What users rely on, through the real engine: speech detection, output guards and confidence.

One ASR actor (one vLLM engine with the bundled trained tiny model, models/tiny-qwen3-asr-synth)
for the whole module, run in-process without Ray: built recordings go through the real decode
stage (decode, resample, Silero VAD, chunk planning) and the real actor, as in a job. Speech comes
from the held-out synthetic recordings (tests/assets/synth); hum, chords and noise are generated.
The loop guard is shown on real loops: continuous speech far longer than the utterances the
tiny model learned makes it repeat itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from actors.asr_guards import GuardOptions, find_repetition
from pipeline.audio.stage import decode_batch
from pipeline.config import JobConfig
from tests.test_vad import SR, chords, hum, noise, silence, speech

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "tiny-qwen3-asr-synth"
SYNTH = REPO / "tests" / "assets" / "synth"
TEXTS = {r["audio"]: r["text"] for r in map(json.loads, (SYNTH / "manifest.jsonl").read_text().splitlines()) if r}
MAX_CHUNK_S = 20.0

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="the trained tiny checkpoint is not built"),
]


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    # The engine's output handler is a task on this loop: end it before the loop goes.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:  # none left once the engine is dead; gather() of nothing would make another loop's future
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


@pytest.fixture(scope="module")
def actor(loop, tmp_path_factory):
    from actors.asr_actor import AsrActor

    async def build():
        return AsrActor(
            str(MODEL), model_cache_dir=str(tmp_path_factory.mktemp("cache")), max_chunk_s=45.0,
            engine={"max_model_len": 2048, "enforce_eager": True},
        )  # fmt: skip

    actor = loop.run_until_complete(build())
    yield actor
    actor.engine.shutdown()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Built recordings, as files, with where their speech is (seconds)."""
    d = tmp_path_factory.mktemp("built")
    en, de, fr = speech("en_sent_001.flac"), speech("de_sent_024.wav"), speech("fr_sent_048.wav")
    built: dict[str, tuple[np.ndarray, list[tuple[float, float]], str]] = {}

    def put(name, parts, context=""):
        audio, spans, t = [], [], 0.0
        for p in parts:
            if isinstance(p, tuple):  # (speech samples,)
                spans.append((t, t + len(p[0]) / SR))
                p = p[0]
            audio.append(p)
            t += len(p) / SR
        x = np.concatenate(audio).astype(np.float32)
        sf.write(d / f"{name}.wav", x, SR)
        built[name] = (x, spans, context)

    put("hum_after_speech", [(en,), hum(50)])
    put("music_one_phrase", [chords(8), (0.6 * de + chords(len(de) / SR)[: len(de)] * 0.3,), chords(8)])
    put("noise_with_hotwords", [noise(10)], context="Hotwords: purple orange seven")
    put("silence_before_between", [silence(4), (en,), silence(3), (fr,)])
    clips = [speech(n) for n in ("en_sent_000.wav", "en_sent_003.opus", "en_sent_006.mp3", "en_sent_009.flac")]
    gaps = [silence(2.5), noise(3.0, level=0.01, seed=3), silence(4.0), noise(2.0, level=0.01, seed=4)]
    put("long_with_pauses", [p for c, g in zip(clips, gaps) for p in ((c,), g)])
    return {"dir": d, "built": built}


@pytest.fixture(scope="module")
def rows(actor, loop, recordings):
    built = recordings["built"]
    batch = pa.table({
        "id": list(built), "audio": [str(recordings["dir"] / f"{k}.wav") for k in built],
        "context": [v[2] for v in built.values()],
        "error_stage": pa.nulls(len(built), pa.string()), "error": pa.nulls(len(built), pa.string()),
    })  # fmt: skip
    vad = JobConfig.model_validate({"input": {"manifest": "m.jsonl"}, "output": {"path": "o"}}).vad.model_dump()
    decoded = decode_batch(batch, max_chunk_s=MAX_CHUNK_S, vad=vad)
    out = loop.run_until_complete(actor(decoded))
    return {r["id"]: r for r in out.to_pylist()}


def _inside(t0: float, t1: float, spans: list[tuple[float, float]], slack: float = 0.35) -> bool:
    return any(s - slack <= t0 and t1 <= e + slack for s, e in spans)


def _check_columns(row):
    assert row["error"] is None, row["error"]
    assert isinstance(row["flags"], list)
    if row["text"]:
        assert 0 < row["language_probability"] <= 1
        for chunk in row["asr_chunks"]:
            assert chunk["avg_logprob"] is None or chunk["avg_logprob"] <= 0
            assert all(0 < w["confidence"] <= 1 for w in chunk["words"])
            assert " ".join(w["text"] for w in chunk["words"]) == chunk["text"]


def test_hum_after_speech_gets_no_words_in_the_hum(rows, recordings):
    row = rows["hum_after_speech"]
    _x, spans, _ = recordings["built"]["hum_after_speech"]
    _check_columns(row)
    assert len(row["asr_chunks"]) == 1 and _inside(row["asr_chunks"][0]["start"], row["asr_chunks"][0]["end"], spans)
    assert row["text"] and len(row["text"].split()) <= len(TEXTS["en_sent_001.flac"].split()) + 1
    assert 0.5 <= row["speech_s"] <= spans[0][1] - spans[0][0] + 0.3
    assert row["flags"] == []


def test_music_with_one_phrase_gives_that_phrase_only(rows, recordings):
    row = rows["music_one_phrase"]
    _x, spans, _ = recordings["built"]["music_one_phrase"]
    _check_columns(row)
    assert row["asr_chunks"] and all(_inside(c["start"], c["end"], spans) for c in row["asr_chunks"])
    assert row["speech_s"] < 0.5 * row["duration_s"]
    assert len(row["text"].split()) <= len(TEXTS["de_sent_024.wav"].split()) + 1


def test_noise_with_a_hotword_context_is_an_empty_result(rows):
    row = rows["noise_with_hotwords"]
    assert row["error"] is None  # a result, not a failure
    assert (row["text"], row["language"], row["speech_s"], row["asr_chunks"]) == ("", None, 0.0, [])
    assert row["flags"] == ["no_speech"] and row["asr_s"] == 0.0


def test_silence_before_and_between_speech_is_not_sent(rows, recordings):
    row = rows["silence_before_between"]
    _x, spans, _ = recordings["built"]["silence_before_between"]
    _check_columns(row)
    assert len(row["asr_chunks"]) == 2  # the 3 s between the two sentences is longer than vad.max_gap_s
    for chunk, (s, e) in zip(row["asr_chunks"], spans):
        assert s - 0.35 <= chunk["start"] and chunk["end"] <= e + 0.35
    assert row["asr_chunks"][0]["start"] >= 3.6  # nothing of the first 4 s of silence
    assert {c["language"] for c in row["asr_chunks"]} == {"English", "French"}


def test_long_recording_with_pauses(rows, recordings):
    from pipeline.score.wer import score_row

    row = rows["long_with_pauses"]
    _x, spans, _ = recordings["built"]["long_with_pauses"]
    _check_columns(row)
    assert len(row["asr_chunks"]) == len(spans)
    assert all(_inside(c["start"], c["end"], spans) for c in row["asr_chunks"])
    sent = sum(c["end"] - c["start"] for c in row["asr_chunks"])
    assert sent < 0.5 * row["duration_s"]  # the pauses (11.5 s of silence and noise) stay out
    reference = " ".join(TEXTS[n] for n in ("en_sent_000.wav", "en_sent_003.opus", "en_sent_006.mp3", "en_sent_009.flac"))
    score = score_row(reference, row["text"], "English")
    assert score.errors <= 0.35 * score.ref_units, (reference, row["text"])


def test_real_loops_are_retried_then_collapsed_and_flagged(actor, loop):
    """Continuous speech far longer than the utterances the tiny model learned (a few seconds), in
    one chunk, makes it repeat itself. Measured (token loops, ``find_repetition``): the first 25 s of
    the German recording loop "acht" x15 and still x9 on the retry with repetition_penalty 1.3; its
    first 40 s loop x8 and come out clean on the retry; 45 s of the English one loop x32, x9 on the
    retry. Every loop is well past ``min_repeats`` (5): a loop right at the threshold (the 30 s cut,
    x5) comes and goes with the CPU the engine runs on."""
    de, en = speech("de_long_073.mp3"), speech("en_long_072.opus")
    chunks = {"de25": de[: 25 * SR], "de40": de[: 40 * SR], "en45": en[: 45 * SR]}
    engine, guards = actor.engine, GuardOptions()

    async def run():
        return await asyncio.gather(
            *[engine.transcribe_guarded(x, guards=guards) for x in chunks.values()],
            engine.transcribe_guarded(chunks["de25"], speech_s=1.0, guards=guards),  # a budget far below the speech
        )

    *answers, cut = loop.run_until_complete(run())
    results = dict(zip(chunks, answers))
    for name, result in results.items():
        # Every first answer looped: the flag is set only when find_repetition found a loop in it.
        assert "repetition_retried" in result["flags"], (name, result)
        if "repetition" in result["flags"]:
            # Kept once: no word repeated min_repeats times in a row is left.
            words = result["text"].split()
            assert find_repetition(words, guards.min_repeats, guards.max_ngram) is None, (name, result["text"])
    # The retry loops too: the loop is collapsed and the chunk flagged.
    assert "repetition" in results["de25"]["flags"] and "repetition" in results["en45"]["flags"]
    assert "token_limit" in cut["flags"] and cut["num_tokens"] <= 2 * (15 + 24)


# --- the engine itself, last: it ends with the engine killed ----------------------------------


def test_engine_concurrent_requests_bad_rows_and_death(actor, loop):
    import psutil

    from actors.asr_engine import EngineDeadError, RowError

    engine = actor.engine
    rng = np.random.default_rng(0)
    t = np.arange(SR * 3) / SR
    clips = [(0.1 * rng.standard_normal(int(SR * (1.0 + 0.25 * i)))).astype(np.float32) for i in range(7)]
    clips.append((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    clips[0] = speech("en_sent_001.flac")

    async def run():
        results = await asyncio.gather(*[
            engine.transcribe(clip, context="Names: Ada" if i == 0 else "", language="en" if i == 0 else None, max_new_tokens=24)
            for i, clip in enumerate(clips)
        ])  # fmt: skip
        for r in results:
            assert set(r) == {"language", "text", "raw", "engine_s", "num_tokens", "finish_reason", "token_ids", "spans", "logprobs"}
            assert r["logprobs"] is None and len(r["token_ids"]) == r["num_tokens"]  # log-probabilities only when asked
            assert r["finish_reason"] in ("stop", "length")
            assert isinstance(r["text"], str) and isinstance(r["raw"], str)
            assert r["language"] is None or isinstance(r["language"], str)
            assert r["engine_s"] > 0 and 1 <= r["num_tokens"] <= 24
        assert results[0]["language"] == "English" and results[0]["text"]  # forced

        # A bad row fails alone, as a RowError; the engine carries on.
        with pytest.raises(RowError, match="mono"):
            await engine.transcribe(np.zeros((2, SR), np.float32))
        with pytest.raises(RowError, match="empty"):
            await engine.transcribe(np.zeros(0, np.float32))
        with pytest.raises(RowError):  # prompt longer than max_model_len
            await engine.transcribe(clips[0], context="word " * 4000)
        with pytest.raises(RowError, match="unsupported language"):
            await engine.transcribe(clips[0], language="Klingon")
        short = await engine.transcribe(np.zeros(1600, np.float32))  # 0.1 s: padded to 0.5 s
        assert isinstance(short["text"], str)
        again = await engine.transcribe(clips[1], max_new_tokens=24)
        assert again["raw"] == results[1]["raw"]  # greedy: same input, same output

        # Engine death is not a row error: kill the EngineCore process this engine started.
        cores = [p for p in psutil.Process().children() if p.name() == "VLLM::EngineCore"]
        assert len(cores) == 1
        cores[0].kill()
        with pytest.raises(EngineDeadError):
            await asyncio.wait_for(engine.transcribe(clips[0]), timeout=60)
        assert engine.is_dead

    loop.run_until_complete(run())
