"""The decode stage over a batch of bad inputs: every row comes out, each failure on its own row
with its category, the good rows decoded (pure function, the same one Ray Data runs as tasks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
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
