"""Recordings as users bring them, built here (tests/audio_inputs.py), through the real decoders:
each ends transcribable at its true length (within 0.05 s or one codec frame), or failed in the
category that says what happened. From a path, an extension-less path and embedded bytes."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.decode import AudioError, decode_audio
from tests import audio_inputs as A

S = A.soundfile_bytes

# name -> (builder, file name a user would have, source rate, channels, tolerance in s)
CONTAINERS = {
    "aac_m4a": (lambda: A.encode("mp4", "aac", 3, 44100, 2), "memo.m4a", 44100, 2, 1024 / 44100),
    "alac_m4a": (lambda: A.encode("mp4", "alac", 3, 44100, 1), "lossless.m4a", 44100, 1, 0.05),
    "mp4_with_video": (lambda: A.encode("mp4", "aac", 3, 48000, 2, video=True), "screen.mp4", 48000, 2, 1024 / 48000),
    "webm_opus": (lambda: A.encode("webm", "libopus", 3, 48000, 1), "browser.webm", 48000, 1, 0.05),
    "mkv_vorbis": (lambda: A.encode("matroska", "vorbis", 3, 44100, 2), "export.mkv", 44100, 2, 0.05),
    "wma": (lambda: A.encode("asf", "wmav2", 3, 44100, 1), "old.wma", 44100, 1, 2048 / 44100),
    "3gp_amr": (lambda: A.encode("3gp", "libopencore_amrnb", 3, 8000, 1, bit_rate=12200), "phone.3gp", 8000, 1, 0.05),
    "adts_aac": (lambda: A.encode("adts", "aac", 3, 22050, 1), "stream.aac", 22050, 1, 1024 / 22050),
    "ac3": (lambda: A.encode("ac3", "ac3", 3, 48000, 2), "film.ac3", 48000, 2, 1536 / 48000),
    "m4a_named_wav": (lambda: A.encode("mp4", "aac", 3, 44100, 1), "renamed.wav", 44100, 1, 1024 / 44100),
}


@pytest.fixture(scope="module")
def built() -> dict[str, bytes]:
    return {k: v[0]() for k, v in CONTAINERS.items()}


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_containers_libsndfile_does_not_read(kind: str, built, tmp_path: Path) -> None:
    data = built[kind]
    _, filename, rate, channels, tol = CONTAINERS[kind]
    true_s = A.duration(data)
    (tmp_path / filename).write_bytes(data)
    (tmp_path / "no_extension").write_bytes(data)
    for out in (
        decode_audio(str(tmp_path / filename)),
        decode_audio(str(tmp_path / "no_extension")),
        decode_audio(f"s3://bucket/{filename}", data=data),
    ):
        assert out.decoder == "ffmpeg"
        assert (out.source_sample_rate, out.source_channels) == (rate, channels)
        assert abs(out.duration_s - true_s) <= max(0.05, tol), (kind, out.duration_s, true_s)
        assert abs(out.duration_s - 3.0) <= 0.05 + tol
        assert abs(len(out.samples) - out.duration_s * 16000) <= 16
        assert out.samples.dtype == np.float32 and out.warnings == ()
        assert 0.05 < float(np.abs(out.samples).max()) < 1.0


# (container, codec, rate, channels): every sample format FFmpeg hands over, packed and planar.
SAMPLE_FORMATS = [
    ("mp4", "aac", 44100, 2),  # fltp
    ("asf", "wmav2", 44100, 2),  # fltp
    ("mp4", "alac", 44100, 2),  # s16p
    ("matroska", "pcm_s16le", 48000, 2),  # s16, channels interleaved in one plane
    ("matroska", "pcm_s32le", 48000, 1),  # s32
    ("matroska", "pcm_f64le", 48000, 2),  # dbl
    ("matroska", "pcm_u8", 48000, 2),  # u8
]


@pytest.mark.parametrize(("fmt", "codec", "rate", "channels"), SAMPLE_FORMATS, ids=[c for _, c, _, _ in SAMPLE_FORMATS])
def test_ffmpeg_samples_are_the_channel_mean_of_every_frame(fmt: str, codec: str, rate: int, channels: int) -> None:
    # At the source rate (no resampler) the waveform is the mean of the channels of every frame
    # FFmpeg decoded, in order, scaled to [-1, 1): PyAV's own AudioFrame.to_ndarray is the reference.
    import av

    data = A.encode(fmt, codec, 2, rate, channels)
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(c.streams.audio[0]))
        sample_format, nb = frames[0].format, frames[0].layout.nb_channels
        x = np.concatenate([f.to_ndarray() for f in frames], axis=1)
    if not sample_format.is_planar:
        x = x.reshape(-1, nb).T
    if x.dtype == np.uint8:
        ref = (x.astype(np.float64) - 128) / 128
    elif x.dtype.kind == "i":
        ref = x / float(2 ** (8 * x.dtype.itemsize - 1))
    else:
        ref = x.astype(np.float64)
    ref = ref.mean(axis=0)
    out = decode_audio(None, data=data, target_sr=rate)
    assert out.decoder == "ffmpeg" and out.source_channels == channels == nb
    assert len(out.samples) == len(ref) and len(ref) >= 2 * rate - 2048
    np.testing.assert_allclose(out.samples, ref, rtol=0, atol=2e-7)
    assert 0.05 < float(np.abs(out.samples).max()) < 1.0


def test_segment_of_an_m4a_is_that_span(built) -> None:
    data = built["aac_m4a"]
    full = decode_audio(None, data=data, target_sr=44100)
    out = decode_audio(None, data=data, offset_s=1.0, duration_s=1.5, target_sr=44100)
    assert out.duration_s == pytest.approx(1.5, abs=1e-3)
    start = 44100
    # Same samples as the full decode cut at 1.0 s (the seek lands on a frame before and is cut).
    np.testing.assert_allclose(out.samples[:2000], full.samples[start : start + 2000], atol=1e-4)
    raw = decode_audio(None, data=built["adts_aac"], offset_s=1.0, duration_s=1.0)  # no index: decoded and cut
    assert raw.duration_s == pytest.approx(1.0, abs=1e-3)


def test_second_audio_stream_is_picked_by_config(built) -> None:
    # A video file with one audio stream: asking for a second one fails with a clear message.
    with pytest.raises(AudioError) as e:
        decode_audio(None, data=built["mp4_with_video"], audio_stream=1)
    assert e.value.category == "unsupported_format" and "decode.audio_stream is 1" in str(e.value)


def test_max_duration_is_refused_from_a_trusted_header(built) -> None:
    with pytest.raises(AudioError) as e:
        decode_audio(None, data=built["alac_m4a"], max_duration_s=2.0)
    assert e.value.category == "too_long" and "3.0 s of audio" in str(e.value)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("fill", [0, 0xFFFFFFFF])
def test_wav_from_a_crashed_recorder_is_read_to_the_end(subtype: str, fill: int, tmp_path: Path) -> None:
    data = A.unfinalized_wav(20, 16000, subtype, fill)
    assert struct.unpack_from("<I", data, 4)[0] == fill
    path = tmp_path / "rec.wav"
    path.write_bytes(data)
    for out in (decode_audio(str(path)), decode_audio(None, data=data)):
        assert out.duration_s == pytest.approx(20.0, abs=1e-6)
        assert out.warnings == ()
    ref, _ = sf.read(io.BytesIO(S(20, 16000, 1, "WAV", subtype)), dtype="float32")
    np.testing.assert_allclose(out.samples, ref, atol=1e-6)


def test_wav_cut_in_transfer_is_truncated_not_short() -> None:
    data = S(4, 16000, 1, "WAV", "PCM_16")
    with pytest.raises(AudioError) as e:
        decode_audio("cut.wav", data=data[: len(data) // 2])
    assert e.value.category == "truncated_audio"
    assert "decoded 2.00 s of the 4.00 s the header declares" in str(e.value)


def _mp3(seconds: float, rate: int, start_s: float = 0.0) -> bytes:
    return S(seconds, rate, 1, "MP3", "MPEG_LAYER_III", start_s)


@pytest.mark.parametrize("where", ["after_id3", "before_first_frame"])
def test_mp3_behind_zeros_from_bytes_and_extensionless_paths(where: str, tmp_path: Path) -> None:
    data = A.mp3_with_padded_id3(4, 22050) if where == "after_id3" else b"\0" * 1500 + _mp3(4, 22050)
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(data))  # what the old decoder tripped on
    (tmp_path / "clip").write_bytes(data)
    parquet_row = decode_audio("data.parquet#3", data=data)
    for out in (parquet_row, decode_audio(str(tmp_path / "clip"))):
        assert out.duration_s == pytest.approx(4.0, abs=0.05)
        assert out.source_sample_rate == 22050


@pytest.mark.parametrize("second_rate", [44100, 22050])
def test_joined_mp3s_decode_whole(second_rate: int) -> None:
    data = _mp3(5.6, 44100) + _mp3(6.15, second_rate, start_s=7)
    assert sf.info(io.BytesIO(data)).duration == pytest.approx(5.6, abs=0.01)  # libsndfile: the first part
    out = decode_audio("joined.mp3", data=data)
    # Each part keeps its encoder delay and frame padding when joined: up to a few frames more.
    assert 11.75 - 0.05 <= out.duration_s <= 11.75 + 4 * 1152 / 44100
    assert out.source_sample_rate == 44100 and out.warnings == ()
    assert abs(len(out.samples) - out.duration_s * 16000) <= 32
    # The second part is there: speech in its last second.
    assert float(np.abs(out.samples[-16000:]).max()) > 0.05


def test_damaged_mp3_keeps_decoding_past_the_bad_frames() -> None:
    clean = _mp3(4.85, 44100)
    out = decode_audio("damaged.mp3", data=A.damage(clean))
    assert out.duration_s == pytest.approx(4.85, abs=0.05)
    assert out.warnings and "damaged packet" in out.warnings[0]


def test_mp3_cut_short_is_truncated_audio_or_kept_with_a_warning() -> None:
    data = _mp3(5, 44100)[:40000]
    with pytest.raises(AudioError) as e:
        decode_audio("cut.mp3", data=data)
    assert e.value.category == "truncated_audio"
    assert "s of the 5.00 s the header declares" in str(e.value)
    kept = decode_audio("cut.mp3", data=data, on_truncation="keep")
    assert 3.5 < kept.duration_s < 4.5
    assert kept.warnings and kept.warnings[0].startswith("truncated_audio: decoded")


@pytest.mark.parametrize("codec,rate", [("VORBIS", 32000), ("OPUS", 48000)])
def test_chained_ogg_decodes_every_link(codec: str, rate: int) -> None:
    first, second = S(5.6, rate, 2, "OGG", codec), S(6.15, rate, 1, "OGG", codec, start_s=7)
    out = decode_audio("chained.ogg", data=first + second)
    assert out.duration_s == pytest.approx(11.75, abs=0.02)
    assert out.source_channels == 2 and out.warnings == ()
    # A segment across the join: 2 s from 5 s.
    seg = decode_audio("chained.ogg", data=first + second, offset_s=5.0, duration_s=2.0)
    assert seg.duration_s == pytest.approx(2.0, abs=1e-3)
    # A file joined with itself (same stream serial number) too.
    twice = decode_audio("twice.ogg", data=first + first)
    assert twice.duration_s == pytest.approx(11.2, abs=0.02)


def test_chained_opus_is_not_too_long_with_an_absurd_duration() -> None:
    data = S(5.6, 48000, 1, "OGG", "OPUS") + S(6.15, 48000, 2, "OGG", "OPUS", start_s=7)
    with pytest.raises(AudioError) as e:
        decode_audio("chained.opus", data=data, max_duration_s=10.0)
    assert e.value.category == "too_long"
    assert "11.8 s of audio" in str(e.value)


@pytest.mark.parametrize(
    "body,looks",
    [
        (A.html_page(), "an HTML page"),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "an XML document"),
        (b'{"error": "not found"}', "JSON"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n", "plain text"),
    ],
)
def test_text_saved_as_audio_says_what_it_is(body: bytes, looks: str, tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(body)
    for src, data in ((str(path), None), ("x.mp3", body)):
        with pytest.raises(AudioError) as e:
            decode_audio(src, data=data)
        assert e.value.category == "unsupported_format"
        assert f"look like {looks}" in str(e.value)
        assert "does not exist" not in str(e.value)


def test_unknown_bytes_are_unsupported_format() -> None:
    with pytest.raises(AudioError) as e:
        decode_audio("blob.bin", data=bytes(range(256)) * 40)
    assert e.value.category == "unsupported_format"
    assert "not a recognised audio format" in str(e.value)


def test_long_files_are_decoded_in_blocks(monkeypatch) -> None:
    # Blocks of 4096 frames through a streaming resampler: the same length and nearly the same
    # samples as one block.
    from pipeline.audio import sndfile_decode

    data = S(6, 44100, 2, "FLAC", "PCM_16")
    whole = decode_audio("x.flac", data=data)
    monkeypatch.setattr(sndfile_decode, "BLOCK_FRAMES", 4096)
    blocks = decode_audio("x.flac", data=data)
    assert abs(len(blocks.samples) - len(whole.samples)) <= 1
    n = min(len(whole.samples), len(blocks.samples)) - 100
    np.testing.assert_allclose(blocks.samples[100:n], whole.samples[100:n], atol=2e-3)
