"""Manifests of every supported format read through Ray Data from the S3 server, then decoded
by the real decode stage: the path from a user's manifest to waveforms, without the engine."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.audio.stage import decode_batch
from pipeline.config import load_config
from pipeline.transcribe import read_manifest
from tests.conftest import SPEECH


def _cfg(s3, manifest: str, *extra: str):
    return load_config(
        None,
        [f"input.manifest={manifest}", f"input.storage_options={json.dumps(s3.storage_options)}", "output.path=/tmp/unused", *extra],
    )


def _decoded(cfg) -> dict[str, dict]:
    ds = read_manifest(cfg).map_batches(
        decode_batch,
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
    csv = 'utt,wav,transcript\nu1,clips/en_wav16k.wav,"hello, world"\n'
    bucket.pipe_file("manifests/cv/mapped.csv", csv.encode())
    cfg = _cfg(s3, "s3://manifests/cv/mapped.csv", "input.column_map={id: utt, audio: wav, reference: transcript}")
    rows = _decoded(cfg)
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
    assert set(rows) == {"audio/en_long_16k.flac@10.000", "audio/en_long_16k.flac@20.000"}
    seg = rows["audio/en_long_16k.flac@10.000"]
    assert seg["duration_s"] == pytest.approx(5.5, abs=1e-3)
    assert seg["offset_s"] == 10.0
    assert list(seg["chunks"]) == [0, int(5.5 * 16000)]


def test_parquet_with_embedded_audio_bytes(s3, ray_session, bucket):
    audio = [
        {"bytes": (SPEECH / "de_flac44k_stereo.flac").read_bytes(), "path": "de_flac44k_stereo.flac"},
        {"bytes": b"not audio at all", "path": "broken.wav"},
    ]
    table = pa.table({"audio": audio, "text": ["Heute ist das Wetter", "x"]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    bucket.pipe_file("manifests/hf/data.parquet", buf.getvalue())
    rows = _decoded(_cfg(s3, "s3://manifests/hf/data.parquet"))
    good, bad = rows["de_flac44k_stereo.flac"], rows["broken.wav"]
    assert (good["source_sample_rate"], good["source_channels"]) == (44100, 2)
    assert good["error"] is None and good["reference"] == "Heute ist das Wetter"
    assert bad["error_stage"] == "decode" and bad["error"].split(":")[0] in {"unsupported_format", "decode_error"}
