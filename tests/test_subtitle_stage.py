"""Subtitle files per row (write_subtitles) and file names from row ids (storage.safe_name)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pyarrow as pa
import pytest
import srt
import webvtt

from pipeline.align.subtitle_stage import SUBTITLES_DIR, write_subtitles
from pipeline.io.storage import safe_name

# --- safe_name ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row_id", ["spk1_utt-02", "abc", "file.name.v2", "a b", "x(1)[2]~y@z+w=v,u"]
)
def test_safe_name_keeps_plain_ids(row_id):
    assert safe_name(row_id) == row_id


@pytest.mark.parametrize(
    ("row_id", "expected"),
    [
        ("a/b", "a%2Fb"),
        ("/abs/path", "%2Fabs%2Fpath"),
        ("..", "%2E."),
        ("../../escape", "%2E.%2F..%2Fescape"),  # no separator left: inner dots are harmless
        (".hidden", "%2Ehidden"),
        (".", "%2E"),
        ("a\\b", "a%5Cb"),
        ("a\x00b\nc\td\x7f", "a%00b%0Ac%09d%7F"),
        ("100%", "100%25"),
        ("", "%"),
    ],
)
def test_safe_name_encodes_dangerous_ids(row_id, expected):
    assert safe_name(row_id) == expected


@pytest.mark.parametrize(
    "row_id",
    ["a/b", "..", "../../escape", ".hidden", "a\\b", "a\x00b\n", "x/../y", "é/ü", "日本/語"],
)
def test_safe_name_is_one_harmless_path_segment(row_id):
    name = safe_name(row_id)
    assert name
    assert "/" not in name and "\\" not in name
    assert not name.startswith(".")
    assert all(ch.isprintable() for ch in name)
    assert name.isascii()
    assert os.path.basename(name) == name


def test_safe_name_long_ids_are_cut_and_stay_distinct():
    a = "x" * 999 + "a"
    b = "x" * 999 + "b"
    na, nb = safe_name(a), safe_name(b)
    assert len(na.encode()) <= 200 and len(nb.encode()) <= 200
    assert na != nb
    assert na.startswith("x" * 100)
    assert safe_name(a) == na  # deterministic
    # Multibyte ids: percent-encoded (3 ASCII bytes per UTF-8 byte) and then cut.
    c = "日本語" * 300
    assert len(safe_name(c).encode()) <= 200
    assert safe_name(c) != safe_name(c + "!")


def test_safe_name_distinguishes_an_id_from_its_encoding():
    assert safe_name("a/b") != safe_name("a%2Fb")
    assert safe_name(".x") != safe_name("%2Ex")


# --- write_subtitles ------------------------------------------------------------------------------


def _w(text: str, start: float, end: float) -> dict:
    return {"text": text, "start": start, "end": end}


WORDS_1 = [
    _w("Hello,", 0.0, 0.4), _w("world.", 0.5, 1.0), _w("Again", 2.5, 2.9), _w("<b>&", 3.0, 3.25),
]  # fmt: skip
WORDS_3 = [_w("你", 0.1, 0.3), _w("好", 0.3, 0.6)]
EXPECTED_CUES = {  # (start, end, text): a pause > 0.8 s after "world." starts a second cue
    "spk1/utt 01": [(0.0, 1.0, "Hello, world."), (2.5, 3.25, "Again <b>&")],
    "../../escape": [(0.1, 0.6, "你好")],
}

WORD_TYPE = pa.list_(
    pa.struct([("text", pa.string()), ("start", pa.float64()), ("end", pa.float64())])
)


def _table(ids, words, languages) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "words": pa.array(words, WORD_TYPE),
            "language": pa.array(languages, pa.string()),
        }
    )


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_write_subtitles_one_file_per_format_per_aligned_row(tmp_path):
    ids = ["spk1/utt 01", "not aligned", "../../escape"]
    out = tmp_path / "job"
    batch = _table(ids, [WORDS_1, None, WORDS_3], ["en", "ar", "zh"])

    result = write_subtitles(batch, output_path=str(out), formats=["srt", "vtt"], options={})

    assert result.num_rows == 3
    assert result.column_names == ["subtitle_files"]
    assert result.schema.field("subtitle_files").type == pa.int64()
    assert result.column("subtitle_files").to_pylist() == [2, 0, 2]

    subs = out / SUBTITLES_DIR
    expected_files = {
        subs / f"{safe_name(i)}.{fmt}" for i in (ids[0], ids[2]) for fmt in ("srt", "vtt")
    }
    # Everything written is exactly these four files, all inside <output>/subtitles.
    assert _all_files(tmp_path) == expected_files
    for path in expected_files:
        assert path.resolve().parent == subs.resolve()
    assert not (tmp_path / "escape.srt").exists() and not (out / "escape.srt").exists()

    for row_id, cues in EXPECTED_CUES.items():
        srt_text = (subs / f"{safe_name(row_id)}.srt").read_text(encoding="utf-8")
        parsed = list(srt.parse(srt_text))
        assert [c.index for c in parsed] == list(range(1, len(cues) + 1))
        assert [
            (c.start.total_seconds(), c.end.total_seconds(), c.content) for c in parsed
        ] == [(pytest.approx(s, abs=1e-3), pytest.approx(e, abs=1e-3), t) for s, e, t in cues]

        vtt_text = (subs / f"{safe_name(row_id)}.vtt").read_text(encoding="utf-8")
        assert vtt_text.startswith("WEBVTT")
        vtt = list(webvtt.from_string(vtt_text))
        assert [(_seconds(c.start), _seconds(c.end), html.unescape(c.text)) for c in vtt] == [
            (pytest.approx(s, abs=1e-3), pytest.approx(e, abs=1e-3), t) for s, e, t in cues
        ]
    # The markup in a word is escaped in WebVTT, not in SRT.
    assert "&lt;b&gt;&amp;" in (subs / f"{safe_name(ids[0])}.vtt").read_text(encoding="utf-8")


def test_write_subtitles_options_and_single_format(tmp_path):
    batch = _table(["r1"], [WORDS_1], ["en"])
    result = write_subtitles(
        batch, output_path=str(tmp_path), formats=["srt"], options={"max_gap_s": 5.0}
    )
    assert result.column("subtitle_files").to_pylist() == [1]
    assert _all_files(tmp_path) == {tmp_path / SUBTITLES_DIR / "r1.srt"}
    [cue] = srt.parse((tmp_path / SUBTITLES_DIR / "r1.srt").read_text(encoding="utf-8"))
    assert (cue.start.total_seconds(), cue.end.total_seconds()) == (0.0, 3.25)
    assert cue.content == "Hello, world. Again <b>&"


def test_write_subtitles_empty_batch_and_rewrite(tmp_path):
    empty = _table([], [], [])
    result = write_subtitles(empty, output_path=str(tmp_path), formats=["srt", "vtt"], options={})
    assert result.num_rows == 0
    assert (tmp_path / SUBTITLES_DIR).is_dir()
    # Writing the same row twice (a retried task) overwrites, leaving one file per format.
    batch = _table(["r1"], [WORDS_3], ["zh"])
    for _ in range(2):
        write_subtitles(batch, output_path=str(tmp_path), formats=["srt", "vtt"], options={})
    assert _all_files(tmp_path) == {tmp_path / SUBTITLES_DIR / f"r1.{f}" for f in ("srt", "vtt")}
