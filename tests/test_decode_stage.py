"""The decode stage over a batch of bad inputs: every row comes out, each failure on its own row
with its category, the good rows decoded (pure function, the same one Ray Data runs as tasks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import soundfile as sf

from pipeline.audio.stage import decode_batch
from tests.conftest import SPEECH


def test_each_bad_input_fails_its_own_row_with_its_category(tmp_path: Path) -> None:
    def wav(name: str, samples: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> str:
        sf.write(str(tmp_path / name), samples, rate, subtype=subtype)
        return str(tmp_path / name)

    nan = np.full(16000, 0.1, np.float32)
    nan[100] = np.nan
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n")
    flac = (SPEECH / "de_flac44k_stereo.flac").read_bytes()
    (tmp_path / "truncated.flac").write_bytes(flac[: len(flac) // 3])
    tone = (0.2 * np.sin(np.arange(192000) / 9)).astype(np.float32)
    cases = {
        "good": (str(SPEECH / "en_wav16k.wav"), None),
        "missing": (str(tmp_path / "nope.wav"), "not_found"),
        "zero_bytes": (str(tmp_path / "zero.wav"), "empty_audio"),
        "text_as_wav": (str(tmp_path / "text.wav"), "unsupported_format"),
        "nan": (wav("nan.wav", nan), "invalid_samples"),
        "silence": (wav("silence.wav", np.zeros(32000, np.float32), subtype="PCM_16"), "silent_audio"),
        "blip": (wav("blip.wav", np.full(800, 0.3, np.float32)), "too_short"),
        "long": (wav("long.wav", np.full(16000 * 12, 0.1, np.float32)), "too_long"),
        "eight_channels_192k": (wav("8ch.wav", np.stack([tone] * 8, axis=1), 192000, "PCM_24"), None),
    }
    truncated = decode_batch(
        pa.table({"id": ["t"], "audio": [str(tmp_path / "truncated.flac")]}), max_chunk_s=30.0
    ).column("error")[0].as_py()
    # Cut after its header: the part before the cut decodes, the rest is declared and missing.
    assert truncated.startswith("truncated_audio:") and "of the 2.65 s the header declares" in truncated, truncated

    batch = pa.table({"id": list(cases), "audio": [path for path, _ in cases.values()]})
    out = decode_batch(batch, max_chunk_s=30.0, max_audio_s=10.0, min_audio_s=0.1, reject_silence=True)
    assert out.column("id").to_pylist() == list(cases)  # one row out per row in, in order
    for row in out.to_pylist():
        expected = cases[row["id"]][1]
        if expected is None:
            assert row["error"] is None and len(row["samples"]) > 0, row["id"]
        else:
            assert row["error_stage"] == "decode" and row["error"].startswith(expected + ":"), (row["id"], row["error"])
            assert row["samples"] == []


def test_a_task_output_is_cut_into_tables_of_one_buffer_each(tmp_path: Path) -> None:
    from pipeline.audio.stage import decode_tables

    # 12 one-second clips at 16 kHz (64 000 bytes of waveform each), one of them bad.
    paths = []
    for i in range(12):
        path = tmp_path / f"c{i}.wav"
        if i == 5:
            path.write_text("<html>not audio</html>")
        else:
            sf.write(str(path), np.full(16000 + i, 0.01 * (i + 1), np.float32), 16000, subtype="FLOAT")
        paths.append(str(path))
    batch = pa.table({"id": [f"c{i}" for i in range(12)], "audio": paths})
    tables = list(decode_tables(batch, max_chunk_s=30.0, output_bytes=4 * 64000))
    # At most 4 clips' worth a table: clip i has 16000 + i samples, so three fit and the fourth
    # would pass the limit. Rows 0-2, 3-6 (row 5 failed, no waveform), 7-9, 10-11.
    assert [t.num_rows for t in tables] == [3, 4, 3, 2]
    assert all(pc.sum(pc.list_value_length(t.column("samples"))).as_py() * 4 <= 4 * 64000 for t in tables)
    joined = pa.concat_tables(tables)
    assert joined.column("id").to_pylist() == [f"c{i}" for i in range(12)]  # every row once, in order
    for t in tables:
        assert t.column("samples").num_chunks == 1  # one buffer per table, as Ray stores it
    rows = joined.to_pylist()
    assert rows[5]["error"].startswith("unsupported_format:") and rows[5]["samples"] == []
    for i, row in enumerate(rows):
        if i != 5:
            assert row["error"] is None and len(row["samples"]) == 16000 + i
            assert row["samples"][0] == pytest.approx(0.01 * (i + 1))
    # A recording longer than the limit goes alone in its table; the failed row joins the one before.
    small = list(decode_tables(batch, max_chunk_s=30.0, output_bytes=32000))
    assert [t.num_rows for t in small] == [1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    assert pa.concat_tables(small).column("samples").to_pylist() == joined.column("samples").to_pylist()
    # Without a limit, one table; the same rows.
    whole = list(decode_tables(batch, max_chunk_s=30.0, output_bytes=None))
    untimed = [{k: v for k, v in r.items() if k != "decode_s"} for r in rows]
    assert len(whole) == 1 and [{k: v for k, v in r.items() if k != "decode_s"} for r in whole[0].to_pylist()] == untimed
    empty = list(decode_tables(batch.slice(0, 0), max_chunk_s=30.0))
    assert len(empty) == 1 and empty[0].num_rows == 0 and "samples" in empty[0].column_names


def test_a_table_buffer_is_reused_only_once_nothing_holds_its_table(tmp_path: Path) -> None:
    from pipeline.audio.stage import decode_tables

    def clips(tag: str, level: float) -> pa.Table:
        paths = []
        for i in range(3):
            path = tmp_path / f"{tag}{i}.wav"
            sf.write(str(path), np.full(16000, level * (i + 1), np.float32), 16000, subtype="FLOAT")
            paths.append(str(path))
        return pa.table({"id": [f"{tag}{i}" for i in range(3)], "audio": paths})

    def address(table: pa.Table) -> int:
        return table.column("samples").chunk(0).values.buffers()[1].address

    first, second = clips("a", 0.01), clips("b", 0.02)
    [kept] = decode_tables(first, max_chunk_s=30.0)
    expected = kept.column("samples").to_pylist()
    # While a table is alive (a caller holds it, or Ray has not stored it yet), a later batch
    # must not write over its samples.
    [other] = decode_tables(second, max_chunk_s=30.0)
    assert kept.column("samples").to_pylist() == expected
    assert address(other) != address(kept)
    assert other.column("samples").to_pylist()[0][0] == pytest.approx(0.02)
    # Once the last table is gone, the next batches write into its buffer (no fresh pages per task).
    reused = address(other)
    del other
    for batch in (first, second, first):
        [table] = decode_tables(batch, max_chunk_s=30.0)
        assert address(table) == reused
        assert table.column("samples").to_pylist()[2][0] == pytest.approx(3 * (0.01 if batch is first else 0.02))
        del table
    assert kept.column("samples").to_pylist() == expected


def test_waveforms_of_a_batch_are_its_own_rows_whatever_the_chunks() -> None:
    from pipeline.io.schema import waveforms

    rows = [np.arange(n, dtype=np.float32) + 100 * n for n in (3, 0, 5, 2, 4)]
    one = pa.table({"samples": pa.array(rows, pa.list_(pa.float32()))})
    two = pa.concat_tables([one.slice(0, 2), one.slice(2, 3)])  # two chunks
    for table, start, stop in ((one, 0, 5), (one, 1, 4), (two, 0, 5), (two, 1, 4), (one, 2, 3)):
        batch = table.slice(start, stop - start)  # a batch cut out of a block, as Ray Data hands it over
        flat, offsets = waveforms(batch)
        got = [flat[offsets[i] : offsets[i + 1]] for i in range(batch.num_rows)]
        assert len(offsets) == batch.num_rows + 1
        for a, b in zip(got, rows[start:stop], strict=True):
            np.testing.assert_array_equal(a, b)
    sliced = one.slice(1, 3).column("samples")
    flat, _ = waveforms(one.slice(1, 3))
    assert flat.ctypes.data == np.frombuffer(sliced.chunk(0).values.buffers()[1], np.float32).ctypes.data  # read in place
