from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.decode import AudioError, DecodedAudio, decode_audio

SPEECH = Path(__file__).parent / "assets" / "speech"

# file -> (source rate, source channels), as written by tests/assets/make_speech.py
CLIPS = {
    "en_wav16k.wav": (16000, 1),
    "de_flac44k_stereo.flac": (44100, 2),
    "fr_mp3_22k.mp3": (22050, 1),
    "en_opus48k.opus": (48000, 1),
    "de_wav8k.wav": (8000, 1),
    "fr_vorbis32k_stereo.ogg": (32000, 2),
    "en_long_16k.flac": (16000, 1),
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_decodes_every_format_to_16k_mono(name: str) -> None:
    path = SPEECH / name
    rate, channels = CLIPS[name]
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (rate, channels)

    out = decode_audio(str(path))

    assert isinstance(out, DecodedAudio)
    assert out.source_sample_rate == rate
    assert out.source_channels == channels
    assert abs(out.duration_s - info.duration) <= 0.01 * info.duration
    assert out.samples.dtype == np.float32
    assert out.samples.ndim == 1
    assert out.samples.flags["C_CONTIGUOUS"]
    assert abs(len(out.samples) - out.duration_s * 16000) <= 2
    assert 0.05 < float(np.max(np.abs(out.samples))) < 1.0


def test_file_uri_and_embedded_bytes_give_the_same_samples() -> None:
    path = SPEECH / "fr_mp3_22k.mp3"
    from_path = decode_audio(str(path))
    from_uri = decode_audio(path.as_uri())
    from_bytes = decode_audio("clips/whatever.mp3", data=path.read_bytes())
    np.testing.assert_array_equal(from_path.samples, from_uri.samples)
    np.testing.assert_array_equal(from_path.samples, from_bytes.samples)
    assert from_bytes.source_sample_rate == 22050


def test_stereo_is_downmixed_by_mean() -> None:
    path = SPEECH / "de_flac44k_stereo.flac"
    stereo, rate = sf.read(str(path), dtype="float32")
    out = decode_audio(str(path), target_sr=rate)  # same rate: no resampling in the way
    np.testing.assert_allclose(out.samples, stereo.mean(axis=1), atol=1e-7)


def test_target_rate_is_respected() -> None:
    out = decode_audio(str(SPEECH / "en_wav16k.wav"), target_sr=8000)
    assert abs(len(out.samples) - out.duration_s * 8000) <= 1


def test_same_rate_returns_source_samples_unchanged() -> None:
    path = SPEECH / "en_wav16k.wav"
    raw, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_array_equal(decode_audio(str(path)).samples, raw)


@pytest.mark.parametrize("name", ["en_wav16k.wav", "de_flac44k_stereo.flac", "fr_mp3_22k.mp3",
                                  "en_opus48k.opus", "fr_vorbis32k_stereo.ogg"])
def test_segment_decodes_exactly_that_span(name: str) -> None:
    path = SPEECH / name
    full, rate = sf.read(str(path), dtype="float32", always_2d=True)
    start, count = int(round(0.5 * rate)), int(round(1.25 * rate))
    expected = full[start : start + count].mean(axis=1, dtype=np.float32)

    out = decode_audio(str(path), offset_s=0.5, duration_s=1.25, target_sr=rate)

    assert out.duration_s == pytest.approx(count / rate, abs=1e-9)
    assert len(out.samples) == count
    np.testing.assert_allclose(out.samples, expected, atol=1e-6)


def test_segment_resampled_length() -> None:
    out = decode_audio(str(SPEECH / "en_long_16k.flac"), offset_s=12.5, duration_s=7.0)
    assert out.duration_s == pytest.approx(7.0)
    assert len(out.samples) == 7 * 16000


def test_offset_only_decodes_to_the_end() -> None:
    path = SPEECH / "de_wav8k.wav"
    total = sf.info(str(path)).frames
    out = decode_audio(str(path), offset_s=1.0)
    assert out.duration_s == pytest.approx((total - 8000) / 8000)


def test_duration_past_the_end_is_clipped() -> None:
    path = SPEECH / "de_wav8k.wav"
    total = sf.info(str(path)).frames
    out = decode_audio(str(path), offset_s=2.0, duration_s=100.0, target_sr=8000)
    assert len(out.samples) == total - 16000


def test_segment_from_embedded_bytes() -> None:
    path = SPEECH / "fr_vorbis32k_stereo.ogg"
    a = decode_audio(str(path), offset_s=0.25, duration_s=1.0)
    b = decode_audio(None, data=path.read_bytes(), offset_s=0.25, duration_s=1.0)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert len(a.samples) == 16000


def _category(excinfo: pytest.ExceptionInfo[AudioError]) -> str:
    return excinfo.value.category


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as e:
        decode_audio(str(missing))
    assert _category(e) == "not_found"
    assert "nope.wav" in str(e.value)


def test_garbage_bytes_are_unsupported_format(tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioError) as e:
        decode_audio(str(bad))
    assert _category(e) == "unsupported_format"
    assert "notes.wav" in str(e.value)


def test_truncated_flac_is_decode_error(tmp_path: Path) -> None:
    data = (SPEECH / "de_flac44k_stereo.flac").read_bytes()
    bad = tmp_path / "cut.flac"
    bad.write_bytes(data[:2000])
    with pytest.raises(AudioError) as e:
        decode_audio(str(bad))
    assert _category(e) == "decode_error"
    assert "cut.flac" in str(e.value)


def test_truncated_wav_header_is_decode_error() -> None:
    data = (SPEECH / "en_wav16k.wav").read_bytes()[:30]
    with pytest.raises(AudioError) as e:
        decode_audio("s3://bucket/short.wav", data=data)
    assert _category(e) == "decode_error"
    assert str(e.value).startswith("s3://bucket/short.wav: ")


def test_zero_frames_is_empty_audio(tmp_path: Path) -> None:
    empty = tmp_path / "silent.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError) as e:
        decode_audio(str(empty))
    assert _category(e) == "empty_audio"
    assert "silent.wav" in str(e.value)


def test_offset_beyond_end_is_bad_segment() -> None:
    with pytest.raises(AudioError) as e:
        decode_audio(str(SPEECH / "en_wav16k.wav"), offset_s=10.0)
    assert _category(e) == "bad_segment"
    assert "en_wav16k.wav" in str(e.value)


@pytest.mark.parametrize("offset,duration", [(-1.0, None), (0.0, 0.0), (0.0, -2.0),
                                             (float("nan"), None)])
def test_invalid_segment_values_are_bad_segment(offset: float, duration: float | None) -> None:
    with pytest.raises(AudioError) as e:
        decode_audio(str(SPEECH / "en_wav16k.wav"), offset_s=offset, duration_s=duration)
    assert _category(e) == "bad_segment"


def test_no_source_and_no_bytes_is_missing_audio() -> None:
    with pytest.raises(AudioError) as e:
        decode_audio(None)
    assert _category(e) == "missing_audio"


def test_directory_is_read_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as e:
        decode_audio(str(tmp_path))
    assert _category(e) == "read_error"


def test_audio_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(AudioError("not_found", "x.wav: file not found")))
    assert err.category == "not_found"
    assert str(err) == "x.wav: file not found"


def _wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> str:
    sf.write(str(path), samples, rate, subtype=subtype)
    return str(path)


def test_too_long_is_refused_from_the_header_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = _wav(tmp_path / "long.wav", np.full(16000 * 5, 0.1, np.float32), 16000)
    reads = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: reads.append(1) or real_read(self, *a, **k))
    with pytest.raises(AudioError) as err:
        decode_audio(path, max_duration_s=4.0)
    assert err.value.category == "too_long" and "decode.max_audio_s" in str(err.value)
    assert reads == []  # no sample was read
    # A segment inside the limit is fine, so a long file can still be given as segments.
    assert decode_audio(path, offset_s=1.0, duration_s=3.0, max_duration_s=4.0).duration_s == pytest.approx(3.0)


def test_too_short_clip(tmp_path: Path) -> None:
    path = _wav(tmp_path / "blip.wav", np.full(800, 0.2, np.float32), 16000)  # 0.05 s
    with pytest.raises(AudioError) as err:
        decode_audio(path, min_duration_s=0.1)
    assert err.value.category == "too_short"
    assert decode_audio(path).samples.size == 800


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 1), (48000, 2)])
def test_non_finite_samples_are_invalid(tmp_path: Path, bad: float, rate: int, channels: int) -> None:
    # Checked after downmix and resampling: a bad sample in any channel, at any rate, must still show.
    samples = np.full((rate, channels), 0.1, np.float32)
    samples[rate - 1, channels - 1] = bad  # the last frame of the last channel
    with pytest.raises(AudioError) as err:
        decode_audio(_wav(tmp_path / "nan.wav", samples, rate))
    assert err.value.category == "invalid_samples"


def test_digital_silence_is_refused_when_asked(tmp_path: Path) -> None:
    path = _wav(tmp_path / "silence.wav", np.zeros(16000 * 2, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as err:
        decode_audio(path, reject_silence=True)
    assert err.value.category == "silent_audio"
    assert decode_audio(path).samples.size == 32000
    quiet_speech = _wav(tmp_path / "quiet.wav", 0.01 * np.sin(np.arange(32000) / 7).astype(np.float32), 16000)
    assert decode_audio(quiet_speech, reject_silence=True).samples.size == 32000


def test_eight_channels_at_192k_are_downmixed_and_resampled(tmp_path: Path) -> None:
    rate, seconds = 192000, 1.5
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = _wav(tmp_path / "8ch.wav", np.stack([tone] * 8, axis=1), rate, subtype="PCM_24")
    out = decode_audio(path, max_duration_s=7200, min_duration_s=0.1, reject_silence=True)
    assert (out.source_sample_rate, out.source_channels) == (192000, 8)
    assert out.samples.size == int(16000 * seconds)
    assert abs(np.abs(out.samples).max() - 0.2) < 0.01


@pytest.mark.parametrize(
    ("subtype", "container"),
    [(s, c) for s in ("PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT") for c in ("wav", "aiff")] + [("PCM_16", "flac"), ("PCM_24", "flac")],
)
@pytest.mark.parametrize("channels", [1, 2])
def test_pcm_decodes_to_exactly_what_libsndfile_converts(tmp_path: Path, subtype: str, container: str, channels: int) -> None:
    # 16- and 32-bit PCM are read as integers and scaled by numpy (faster than libsndfile's own
    # conversion): the samples must be bit for bit what libsndfile's float read gives.
    rng = np.random.default_rng(7)
    x = np.clip(rng.standard_normal((16000 * 2 + 7, channels)) * 0.3, -1, 1).astype(np.float32)
    x[:4] = [[-1.0] * channels, [1.0] * channels, [0.0] * channels, [-0.5] * channels]  # the ends of the scale
    path = tmp_path / f"x.{container}"
    sf.write(str(path), x, 16000, subtype=subtype)
    expected, _ = sf.read(str(path), dtype="float32", always_2d=True)
    expected = expected[:, 0] if channels == 1 else expected.mean(axis=1, dtype=np.float32)
    out = decode_audio(str(path))
    assert out.samples.dtype == np.float32 and out.samples.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out.samples, expected)
    # The same through the crashed-recorder path (sizes never written: read as raw PCM).
    if container == "wav" and subtype in ("PCM_16", "PCM_32"):
        data = bytearray(path.read_bytes())
        data[4:8] = b"\0\0\0\0"
        data[data.index(b"data") + 4 : data.index(b"data") + 8] = b"\0\0\0\0"
        np.testing.assert_array_equal(decode_audio("unfinalized.wav", data=bytes(data)).samples, expected)
