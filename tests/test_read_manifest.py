"""Manifests of every supported format read through Ray Data from the S3 server, then decoded
by the real decode stage: the path from a user's manifest to waveforms, without the engine."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.audio.stage import decode_tables
from pipeline.config import load_config
from pipeline.transcribe import read_manifest
from tests import audio_inputs as A
from tests.conftest import SPEECH

# Recordings as users bring them, read from the object store by the decode stage (the decoders
# themselves: tests/test_decode_formats.py). name -> (bytes, expected seconds or failure category)
USER_FILES = {
    "memo.m4a": (lambda: A.encode("mp4", "aac", 2, 44100, 1), 2.0),
    "screen.mp4": (lambda: A.encode("mp4", "aac", 2, 48000, 2, video=True), 2.0),
    "browser.webm": (lambda: A.encode("webm", "libopus", 2, 48000, 1), 2.0),
    "crashed.wav": (lambda: A.unfinalized_wav(3, 16000), 3.0),
    "chained.ogg": (lambda: A.soundfile_bytes(1.5, 32000, 1, "OGG", "VORBIS") * 2, 3.0),
    "error_page.mp3": (A.html_page, "unsupported_format"),
}


def _cfg(s3, manifest: str, *extra: str):
    return load_config(
        None,
        [f"input.manifest={manifest}", f"input.storage_options={json.dumps(s3.storage_options)}", "output.path=/tmp/unused", *extra],
    )


def _decoded(cfg) -> dict[str, dict]:
    ds = read_manifest(cfg).map_batches(
        decode_tables,
        fn_kwargs={"max_chunk_s": 60.0, "storage_options": dict(cfg.input.storage_options)},
        batch_format="pyarrow",
        concurrency=1,
    )
    rows = ds.drop_columns(["samples"]).take_all()
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def bucket(s3):
    fs = s3.fs()
    if not fs.exists("manifests"):
        fs.mkdir("manifests")
    for name in ("fr_mp3_22k.mp3", "en_wav16k.wav", "en_long_16k.flac"):
        fs.put_file(str(SPEECH / name), f"manifests/cv/clips/{name}")
        fs.put_file(str(SPEECH / name), f"manifests/nemo/audio/{name}")
    for name, (build, _) in USER_FILES.items():
        fs.pipe_file(f"manifests/cv/clips/{name}", build())
    return fs


def test_common_voice_tsv_with_audio_root(s3, ray_session, bucket):
    tsv = "client_id\tpath\tsentence\tlocale\nabc\tfr_mp3_22k.mp3\tLe petit \"chat\" dort\tfr\ndef\ten_wav16k.wav\t007\ten\n"
    bucket.pipe_file("manifests/cv/train.tsv", tsv.encode())
    cfg = _cfg(s3, "s3://manifests/cv/train.tsv", "input.audio_root=s3://manifests/cv/clips")
    rows = _decoded(cfg)
    assert set(rows) == {"fr_mp3_22k.mp3", "en_wav16k.wav"}
    fr = rows["fr_mp3_22k.mp3"]
    assert fr["audio"] == "s3://manifests/cv/clips/fr_mp3_22k.mp3"
    assert fr["reference"] == 'Le petit "chat" dort'
    assert fr["language_hint"] == "fr"
    assert fr["source_sample_rate"] == 22050 and fr["error"] is None
    # A transcript of digits stays text: leading zeros survive.
    assert rows["en_wav16k.wav"]["reference"] == "007"


def test_csv_with_column_map(s3, ray_session, bucket):
    csv = 'utt,wav,transcript\nu1,clips/en_wav16k.wav,"hello, world"\n' + "".join(f"{n},clips/{n},x\n" for n in USER_FILES)
    bucket.pipe_file("manifests/cv/mapped.csv", csv.encode())
    cfg = _cfg(s3, "s3://manifests/cv/mapped.csv", "input.column_map={id: utt, audio: wav, reference: transcript}")
    rows = _decoded(cfg)
    for name, (_, expected) in USER_FILES.items():  # read from s3:// through the second decoder too
        row = rows[name]
        if isinstance(expected, str):
            assert row["error"].startswith(f"{expected}: s3://manifests/cv/clips/{name}: not audio"), row["error"]
            assert "HTML page" in row["error"]
        else:
            assert row["error"] is None, (name, row["error"])
            assert row["duration_s"] == pytest.approx(expected, abs=0.05), name
            assert row["decode_warnings"] is None
    assert rows["u1"]["reference"] == "hello, world"
    assert rows["u1"]["audio"] == "s3://manifests/cv/clips/en_wav16k.wav"
    assert rows["u1"]["duration_s"] == pytest.approx(sf.info(str(SPEECH / "en_wav16k.wav")).duration, abs=1e-3)


def test_nemo_jsonl_segments_decode_only_their_span(s3, ray_session, bucket):
    lines = [
        {"audio_filepath": "audio/en_long_16k.flac", "offset": 10.0, "duration": 5.5, "text": "x", "lang": "en"},
        {"audio_filepath": "audio/en_long_16k.flac", "offset": 20.0, "duration": 4.0, "text": "y", "lang": "en"},
    ]
    bucket.pipe_file("manifests/nemo/manifest.json", "\n".join(json.dumps(l) for l in lines).encode())
    rows = _decoded(_cfg(s3, "s3://manifests/nemo/manifest.json"))
    # Derived ids hold each segment's offset and duration.
    assert set(rows) == {"audio/en_long_16k.flac@10.000+5.500", "audio/en_long_16k.flac@20.000+4.000"}
    seg = rows["audio/en_long_16k.flac@10.000+5.500"]
    assert seg["duration_s"] == pytest.approx(5.5, abs=1e-3)
    assert seg["offset_s"] == 10.0
    assert list(seg["chunks"]) == [0, int(5.5 * 16000)]


def test_parquet_with_embedded_audio_bytes(s3, ray_session, bucket):
    audio = [
        {"bytes": (SPEECH / "de_flac44k_stereo.flac").read_bytes(), "path": "de_flac44k_stereo.flac"},
        {"bytes": b"not audio at all", "path": "broken.wav"},
        # MP3s that players read and libsndfile refused from bytes: zeros after the ID3 tag, before the first frame.
        {"bytes": A.mp3_with_padded_id3(2, 22050), "path": "padded_id3.mp3"},
        {"bytes": b"\0" * 1200 + A.soundfile_bytes(2, 22050, 1, "MP3", "MPEG_LAYER_III"), "path": "leading_zeros.mp3"},
        {"bytes": A.soundfile_bytes(1.5, 44100, 1, "MP3", "MPEG_LAYER_III") * 2, "path": "joined.mp3"},
        {"bytes": A.soundfile_bytes(3, 44100, 1, "MP3", "MPEG_LAYER_III")[:20000], "path": "cut.mp3"},
        {"bytes": A.encode("mp4", "alac", 2, 44100, 1), "path": "lossless.m4a"},
        {"bytes": A.html_page(), "path": "page.mp3"},
    ]
    table = pa.table({"audio": audio, "text": ["Heute ist das Wetter", "x", "a", "b", "c", "d", "e", "f"]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    bucket.pipe_file("manifests/hf/data.parquet", buf.getvalue())
    rows = _decoded(_cfg(s3, "s3://manifests/hf/data.parquet"))
    good, bad = rows["de_flac44k_stereo.flac"], rows["broken.wav"]
    assert (good["source_sample_rate"], good["source_channels"]) == (44100, 2)
    assert good["error"] is None and good["reference"] == "Heute ist das Wetter"
    assert bad["error_stage"] == "decode" and bad["error"].startswith("unsupported_format: s3://manifests/hf/broken.wav: not audio: the bytes look like plain text")
    for name, seconds in (("padded_id3.mp3", 2.0), ("leading_zeros.mp3", 2.0), ("lossless.m4a", 2.0)):
        assert rows[name]["error"] is None and rows[name]["duration_s"] == pytest.approx(seconds, abs=0.05), name
    # Joined: both parts (each keeps its encoder delay: a frame or two more), never the first alone.
    assert rows["joined.mp3"]["error"] is None and 3.0 <= rows["joined.mp3"]["duration_s"] <= 3.15
    cut = rows["cut.mp3"]["error"]
    assert cut.startswith("truncated_audio: s3://manifests/hf/cut.mp3: decoded ") and "of the 3.00 s the header declares" in cut
    assert rows["page.mp3"]["error"].startswith("unsupported_format: s3://manifests/hf/page.mp3: not audio: the bytes look like an HTML page")
