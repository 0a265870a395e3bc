"""``<output>/report.html``: one static page (no server, nothing fetched: styles, plots and the
one small script inline) that shows what a job did.

Built on the driver at the end of a job from metrics.json's dict and the committed results/ and
failed/ Parquet under the output prefix, read file by file and only the columns a plot needs, so
the driver holds aggregates whatever the output's size: duration histograms with a fixed number
of bins, error sums per language, counts per failure reason, the ``TOP_ROWS`` worst rows. Only
those rows' texts are read, in a second pass over the files that hold them.

Strings from rows and from the config are passed through ``pipeline.redact`` and HTML-escaped.
"""

from __future__ import annotations

import heapq
import html
import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import storage
from pipeline.languages import language_key
from pipeline.redact import redact, redact_text, redact_url, secret_values
from pipeline.report import plots

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
TOP_ROWS = 20
FAILED_EXAMPLES = 10
# Failure reasons are the rows' error_category (older files: the text before the first colon of
# the error); an error without one would make its whole message a reason. Past this many distinct reasons the rest count as "other".
_MAX_REASONS = 200
_SHOWN_REASONS = 25
_TEXT_CHARS = 600
_FILES_AT_ONCE = 32
_ERR_COLUMNS = ("errors", "substitutions", "deletions", "insertions", "ref_units")


class DurationHistogram:
    """Exact counts in equal bins from 0, in one pass: when a value falls past the last bin,
    neighbouring bins merge (the width doubles) until it fits."""

    def __init__(self, bins: int = 48, width: float = 0.25) -> None:
        self.bins = bins
        self.width = width
        self.series: dict[str, np.ndarray] = {}

    def add(self, name: str, values: np.ndarray) -> None:
        values = values[np.isfinite(values) & (values >= 0)]
        counts = self.series.setdefault(name, np.zeros(self.bins, np.int64))
        if not len(values):
            return
        while values.max() >= self.width * self.bins:
            for key, c in self.series.items():
                self.series[key] = np.concatenate([c.reshape(-1, 2).sum(axis=1), np.zeros(self.bins // 2, np.int64)])
            self.width *= 2
            counts = self.series[name]
        counts += np.bincount((values // self.width).astype(np.int64), minlength=self.bins)[: self.bins]

    def trimmed(self) -> dict[str, np.ndarray]:
        """The series without the empty bins past the last count."""
        total = sum(self.series.values(), np.zeros(self.bins, np.int64))
        filled = np.nonzero(total)[0]
        end = int(filled[-1]) + 1 if len(filled) else 0
        return {k: v[:end] for k, v in self.series.items() if v[:end].any()}


@dataclass
class OutputSummary:
    rows_ok: int = 0
    rows_failed: int = 0
    durations: DurationHistogram = field(default_factory=DurationHistogram)
    errors: dict = field(default_factory=dict)  # (language, unit) -> sums of _ERR_COLUMNS and rows
    worst: list = field(default_factory=list)  # heap of (wer, errors, path, index)
    reasons: Counter = field(default_factory=Counter)  # (stage, reason) -> rows
    failed_examples: list = field(default_factory=list)


def summarize_output(out: str, storage_options: dict | None = None, *, results_dir: str = "results", failed_dir: str = "failed") -> OutputSummary:
    summary = OutputSummary()
    fs, _ = storage.fsspec_fs(out, storage_options)
    results = storage.parquet_files(storage.join(out, results_dir), storage_options)
    failed = storage.parquet_files(storage.join(out, failed_dir), storage_options)
    # Object-store reads are latency-bound: a few files at once, in order, a bounded batch at a time.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(results), _FILES_AT_ONCE):
            for part in pool.map(lambda p: _scan_results(fs, p), results[start : start + _FILES_AT_ONCE]):
                _merge_results(summary, part)
        for start in range(0, len(failed), _FILES_AT_ONCE):
            for part in pool.map(lambda p: _scan_failed(fs, p), failed[start : start + _FILES_AT_ONCE]):
                _merge_failed(summary, part)
    summary.worst = _worst_rows(fs, summary.worst)
    return summary


def _read(fs, path: str, wanted: tuple[str, ...]) -> pa.Table:
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        return pf.read(columns=[c for c in wanted if c in names])


def _column(table: pa.Table, name: str, typ: pa.DataType) -> pa.ChunkedArray | pa.Array:
    return table.column(name) if name in table.column_names else pa.nulls(table.num_rows, typ)


def _scan_results(fs, path: str) -> dict:
    t = _read(fs, path, ("duration_s", *_ERR_COLUMNS, "unit", "language_hint", "language"))
    n = t.num_rows
    durations = _column(t, "duration_s", pa.float64()).to_numpy(zero_copy_only=False).astype(float)
    ref = _column(t, "ref_units", pa.int64())
    scored = pc.fill_null(pc.is_valid(ref), False)
    groups: dict = {}
    worst: list = []
    if n and pc.any(scored).as_py():
        st = t.filter(scored)
        lang = pc.coalesce(_column(st, "language_hint", pa.string()), _column(st, "language", pa.string()))
        keys = {v: language_key(v) for v in pc.unique(lang).to_pylist()}
        keyed = pa.table(
            {
                "language": pa.array([keys[v] for v in lang.to_pylist()], pa.string()),
                "unit": pc.coalesce(_column(st, "unit", pa.string()), pa.scalar("word")),
                **{c: pc.coalesce(_column(st, c, pa.int64()), pa.scalar(0, pa.int64())) for c in _ERR_COLUMNS},
            }
        )
        agg = keyed.group_by(["language", "unit"]).aggregate([(c, "sum") for c in _ERR_COLUMNS] + [("language", "count")])
        for row in agg.to_pylist():
            groups[(row["language"], row["unit"])] = {c: row[f"{c}_sum"] for c in _ERR_COLUMNS} | {"rows": row["language_count"]}
        errors = pc.coalesce(_column(t, "errors", pa.int64()), pa.scalar(0, pa.int64())).to_numpy(zero_copy_only=False)
        units = pc.coalesce(ref, pa.scalar(0, pa.int64())).to_numpy(zero_copy_only=False)
        rate = np.divide(errors, units, out=np.full(n, -1.0), where=units > 0)
        for i in np.argsort(-rate, kind="stable")[:TOP_ROWS]:
            if rate[i] >= 0:
                worst.append((float(rate[i]), int(errors[i]), path, int(i)))
    return {"rows": n, "durations": durations, "groups": groups, "worst": worst}


def _merge_results(summary: OutputSummary, part: dict) -> None:
    summary.rows_ok += part["rows"]
    summary.durations.add("transcribed", part["durations"])
    for key, sums in part["groups"].items():
        into = summary.errors.setdefault(key, dict.fromkeys((*_ERR_COLUMNS, "rows"), 0))
        for c, v in sums.items():
            into[c] += v
    for item in part["worst"]:
        if len(summary.worst) < TOP_ROWS:
            heapq.heappush(summary.worst, item)
        else:
            heapq.heappushpop(summary.worst, item)


def _reason(error: str | None) -> str:
    """"not_found" from "not_found: s3://..." (the text before the first colon)."""
    return (error or "").partition(":")[0].strip()[:60] or "(no message)"


def _scan_failed(fs, path: str) -> dict:
    t = _read(fs, path, ("id", "audio", "duration_s", "error_stage", "error_category", "error"))
    stages = _column(t, "error_stage", pa.string()).to_pylist()
    errors = _column(t, "error", pa.string()).to_pylist()
    categories = _column(t, "error_category", pa.string()).to_pylist()
    reasons = Counter(
        (stage or "?", (cat or "")[:60] or _reason(err)) for stage, cat, err in zip(stages, categories, errors)
    )
    examples = []
    for i in range(min(FAILED_EXAMPLES, t.num_rows)):
        examples.append(
            {
                "id": _column(t, "id", pa.string())[i].as_py(),
                "audio": _column(t, "audio", pa.string())[i].as_py(),
                "stage": stages[i],
                "error": errors[i],
            }
        )
    durations = _column(t, "duration_s", pa.float64()).to_numpy(zero_copy_only=False).astype(float)
    return {"rows": t.num_rows, "reasons": reasons, "examples": examples, "durations": durations}


def _merge_failed(summary: OutputSummary, part: dict) -> None:
    summary.rows_failed += part["rows"]
    summary.durations.add("failed", part["durations"])
    for (stage, reason), n in part["reasons"].items():
        key = (stage, reason) if (stage, reason) in summary.reasons or len(summary.reasons) < _MAX_REASONS else (stage, "other")
        summary.reasons[key] += n
    room = FAILED_EXAMPLES - len(summary.failed_examples)
    summary.failed_examples.extend(part["examples"][: max(0, room)])


def _worst_rows(fs, heap: list) -> list[dict]:
    """The texts of the worst rows, read from the files that hold them; worst first."""
    by_file: dict[str, list] = {}
    for wer, errors, path, index in heap:
        by_file.setdefault(path, []).append((wer, errors, index))
    rows = []
    for path, items in by_file.items():
        t = _read(fs, path, ("id", "audio", "language_hint", "language", "unit", "ref_units", "reference", "text"))
        t = t.take(pa.array([i for _, _, i in items], pa.int64()))
        for (wer, errors, _), row in zip(items, t.to_pylist()):
            rows.append({"wer": wer, "errors": errors, **row})
    return sorted(rows, key=lambda r: (-r["wer"], -r["errors"], r.get("id") or ""))


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:20px}
header .sub{color:#b8c0d0;font-size:13px;word-break:break-all}
main{padding:18px 28px;max-width:1400px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin-bottom:18px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px #0002}
.tile .v{font-size:22px;font-weight:600}
.tile .k{color:#5b6475;font-size:12px}
.tile.bad .v{color:#c0392b}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002;margin-bottom:14px;overflow-x:auto}
section h2{font-size:15px;margin:0 0 8px}
figure{margin:0}
figure svg{width:100%;height:auto;display:block}
.note{color:#5b6475;font-size:12px;margin:6px 0 0}
.empty{color:#5b6475;font-style:italic}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{text-align:left;vertical-align:top;padding:4px 6px;border-bottom:1px solid #e4e7ec}
th{background:#f0f2f5;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap}
td.text{max-width:420px;white-space:pre-wrap;word-break:break-word}
td.path{max-width:260px;word-break:break-all;color:#3b4556}
details pre{font-size:11px;background:#f6f8fa;padding:8px;overflow-x:auto}
"""

# Marks the page as drawn when every plot has a size: lets a headless browser (and a person
# looking at the DOM) tell a complete page from a broken one.
_SCRIPT = """
window.addEventListener('load', function () {
  var drawn = 0;
  document.querySelectorAll('figure svg').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && svg.querySelectorAll('path,rect,use').length > 0) drawn++;
  });
  document.body.setAttribute('data-plots-drawn', String(drawn));
});
"""


class _Page:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.plots = 0

    def text(self, value) -> str:
        """A value from data or config, redacted and escaped for HTML."""
        return html.escape(redact_text("" if value is None else str(value), self.known))

    def figure(self, title: str, svg: str | None, note: str = "", empty: str = "") -> str:
        body = f'<p class="empty">{html.escape(empty)}</p>'
        if svg is not None:
            self.plots += 1
            body = f"<figure>{svg}</figure>"
        note_html = f'<p class="note">{note}</p>' if note else ""
        return f"<section><h2>{html.escape(title)}</h2>{body}{note_html}</section>"


def _num(value, spec: str = ",.2f", suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS] + " …"


def render_report(metrics: dict, summary: OutputSummary, *, output: str = "", known: set[str] | None = None) -> str:
    m = redact(metrics)
    page = _Page(set(known or ()))
    job = m.get("job", "transcribe")
    rows_resumed = int(m.get("rows_resumed") or 0)
    this_run = max(0, int(m.get("rows_read") or 0) - rows_resumed)
    wall = m.get("wall_s") or 0.0

    corpus = _corpus(summary.errors)
    tiles = [
        (_num(m.get("rows_read"), ","), "rows read", False),
        (_num(m.get("rows_written"), ","), "rows written", False),
        (_num(m.get("rows_failed"), ","), "rows failed", bool(m.get("rows_failed"))),
        (_num(m.get("audio_hours"), ",.3f"), "audio hours transcribed (this run)", False),
    ]
    if m.get("rows_with_decode_warnings"):
        # Written, yet part of their audio was lost (decode.on_truncation: keep, damaged packets).
        tiles.append((_num(m["rows_with_decode_warnings"], ","), "rows with decode warnings", True))
    for unit, c in corpus.items():
        tiles.append((_num(100 * c["rate"] if c["rate"] is not None else None, ".2f", "%"), f"corpus {'CER' if unit == 'char' else 'WER'} ({c['rows']:,} rows)", False))
    if not corpus:
        tiles.append(("–", "WER (no references)", False))
    tiles += [
        (_num(m.get("throughput_audio_s_per_s"), ",.1f"), "audio s per wall s", False),
        (_num(this_run / wall if wall else None, ",.2f"), "rows per wall s", False),
        (_num(m.get("engine_rtfx"), ",.1f"), "engine RTFx", False),
        (_clock(wall), "wall time", False),
    ]
    if m.get("align"):
        a = m["align"]
        tiles.append((_num(a.get("rows_aligned"), ","), f"rows aligned ({_num(a.get('words'), ',')} words)", False))
    if m.get("vad"):
        v = m["vad"]
        share = v.get("speech_share")
        tiles.append((_num(100 * share if share is not None else None, ".1f", "%"), "speech share (VAD)", False))
        tiles.append((_num(v.get("engine_s_saved_estimate"), ",.1f"), f"engine s saved (~, {_num(v.get('audio_s_not_sent'), ',.1f')} audio s not sent)", False))
    for flag, rows in ((f["flag"], f["rows"]) for f in m.get("flags") or ()):
        # Loops and echoes are results to look at; no_speech and a retry that worked are not.
        tiles.append((_num(rows, ","), f"rows flagged {flag}", flag in ("repetition", "context_echo", "token_limit")))
    if m.get("label"):
        lab = m["label"]
        tiles.append((f"{lab.get('kept', 0):,} / {lab.get('utterances', 0):,}", "utterances kept", False))
        tiles.append((_num(lab.get("kept_hours"), ",.3f"), "kept hours", False))
    tiles_html = "".join(
        f'<div class="tile{" bad" if bad else ""}"><div class="v">{page.text(v)}</div><div class="k">{page.text(k)}</div></div>'
        for v, k, bad in tiles
    )

    sections = []
    groups = [
        {"language": lang, "unit": unit, **sums}
        for (lang, unit), sums in sorted(summary.errors.items())
    ]
    sections.append(
        page.figure(
            "Error rate by language",
            plots.render(plots.error_rates, groups, height=1.5 + 0.32 * len(groups)) if groups else None,
            "Corpus rate per language over every row in results/: substitutions, deletions and insertions "
            "per reference unit (words; characters for Chinese, Cantonese, Japanese, Thai).",
            empty="No row has a reference: nothing to score.",
        )
    )
    hist = summary.durations.trimmed()
    sections.append(
        page.figure(
            "Recording durations",
            plots.render(plots.duration_histogram, summary.durations.width, hist) if hist else None,
            f"{summary.durations.width:g} s bins; results/ and failed/ rows with a known duration.",
            empty="No recording with a known duration.",
        )
    )
    samples = m.get("progress") or []
    sections.append(
        page.figure(
            "Throughput over time",
            plots.render(plots.throughput, samples, height=3.6) if len(samples) >= 2 else None,
            "Rows count when committed (output.rows_per_file at a time); this run only."
            + (f" {rows_resumed:,} rows were committed by an earlier run." if rows_resumed else ""),
            empty="No progress samples in metrics.json (no rows were processed in this run).",
        )
    )
    stage = m.get("stage_s") or {}
    wall_phases = {k.removesuffix("_s"): float(v) for k, v in stage.items() if not _is_work(k) and v is not None}
    work = {k.removesuffix("_s"): float(v) for k, v in stage.items() if _is_work(k) and v}
    sections.append(
        page.figure(
            "Time per stage",
            plots.render(plots.stage_times, wall_phases, work, width=8.0, height=1.4 + 0.35 * max(len(wall_phases), len(work), 1))
            if wall_phases or work
            else None,
            "Worker time is summed over tasks and actors: with several workers it exceeds the wall clock.",
            empty="No stage times in metrics.json.",
        )
    )
    reasons = _top_reasons(summary.reasons)
    sections.append(
        page.figure(
            "Failures by reason",
            plots.render(plots.failures, [(redact_text(s, page.known), redact_text(r, page.known), n) for s, r, n in reasons], height=1.2 + 0.3 * len(reasons))
            if reasons
            else None,
            "Reason: a failed row's error_category; colour: its error_stage.",
            empty="No failed rows.",
        )
    )
    tables = [_worst_table(page, summary.worst), _failed_table(page, summary.failed_examples), _left_out_table(page, m), _details(page, m)]

    title = f"{job} job report"
    sub = " · ".join(
        page.text(x)
        for x in (
            redact_url(output, page.known) if output else None,
            f"model {m.get('model')}" if m.get("model") else None,
            f"finished {m.get('finished_at')}" if m.get("finished_at") else None,
        )
        if x
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f'<body data-plots="{page.plots}" data-plots-drawn="0">'
        f'<header><h1>{html.escape(title)}</h1><div class="sub">{sub}</div></header>'
        f'<main><div class="tiles">{tiles_html}</div><div class="grid">{"".join(sections)}</div>{"".join(tables)}</main>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _is_work(key: str) -> bool:
    return key.endswith(("_task_s", "_busy_s", "_request_s"))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds or 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _corpus(errors: dict) -> dict:
    out: dict = {}
    for (_, unit), sums in errors.items():
        c = out.setdefault(unit, {"errors": 0, "ref_units": 0, "rows": 0})
        for k in c:
            c[k] += sums[k]
    for c in out.values():
        c["rate"] = c["errors"] / c["ref_units"] if c["ref_units"] else None
    return dict(sorted(out.items()))


def _top_reasons(reasons: Counter) -> list[tuple[str, str, int]]:
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [(s, r, n) for (s, r), n in ranked[:_SHOWN_REASONS]]
    rest = sum(n for _, n in ranked[_SHOWN_REASONS:])
    if rest:
        shown.append(("*", "other reasons", rest))
    return shown


def _worst_table(page: _Page, rows: list[dict]) -> str:
    if not rows:
        return '<section><h2>Worst rows</h2><p class="empty">No scored rows (no references).</p></section>'
    body = "".join(
        "<tr>"
        f'<td class="num">{100 * r["wer"]:.1f}%</td>'
        f'<td class="num">{r["errors"]} / {r.get("ref_units") or 0}</td>'
        f"<td>{page.text(r.get('id'))}</td>"
        f"<td>{page.text(r.get('language_hint') or r.get('language') or '')}</td>"
        f'<td class="path">{page.text(r.get("audio"))}</td>'
        f'<td class="text">{page.text(_clip(r.get("reference")))}</td>'
        f'<td class="text">{page.text(_clip(r.get("text")))}</td>'
        "</tr>"
        for r in rows
    )
    return (
        f"<section><h2>Worst rows ({len(rows)} highest per-row error rate)</h2><table>"
        "<tr><th>rate</th><th>errors / ref</th><th>id</th><th>language</th><th>audio</th><th>reference</th><th>hypothesis</th></tr>"
        f"{body}</table><p class=\"note\">Texts as stored (raw); scoring normalizes them first.</p></section>"
    )


def _failed_table(page: _Page, rows: list[dict]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{page.text(r['id'])}</td><td>{page.text(r['stage'])}</td>"
        f'<td class="text">{page.text(_clip(r["error"]))}</td><td class="path">{page.text(r["audio"])}</td></tr>'
        for r in rows
    )
    return (
        f"<section><h2>Failed rows (first {len(rows)})</h2><table>"
        f"<tr><th>id</th><th>stage</th><th>error</th><th>audio</th></tr>{body}</table></section>"
    )


def _left_out_table(page: _Page, m: dict) -> str:
    """The scheduled ETL run's source files that its filter passed over (``metrics["etl"]``, written
    by pipeline/etl/run.py): never processed, so they must be visible where the run is read."""
    etl = m.get("etl") or {}
    count = int(etl.get("files_left_out") or 0)
    if not count:
        return ""
    rows = "".join(
        f"<tr><td>{page.text(f.get('path'))}</td><td>{page.text(f.get('reason'))}</td></tr>" for f in etl.get("left_out") or []
    )
    named = len(etl.get("left_out") or [])
    more = f" (the first {named} by name)" if named < count else ""
    return (
        f"<section><h2>Source files not processed: {count:,}</h2>"
        f"<p>Under the source prefix, passed over by the source filter (source.extensions / source.pattern){more}.</p>"
        f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table></section>"
    )


def _details(page: _Page, m: dict) -> str:
    versions = m.get("versions") or {}
    rows = "".join(f"<tr><td>{page.text(k)}</td><td>{page.text(v)}</td></tr>" for k, v in versions.items())
    config = page.text(json.dumps(m.get("config") or {}, indent=2, default=str))
    return (
        "<section><h2>Versions and config</h2>"
        f"<table><tr><th>package</th><th>version</th></tr>{rows}</table>"
        f"<details><summary>config (credentials redacted)</summary><pre>{config}</pre></details></section>"
    )


def write_report(
    out: str, metrics: dict, storage_options: dict | None = None, *, results_dir: str = "results", failed_dir: str = "failed"
) -> str | None:
    """Write ``<out>/report.html``; returns its URI, or None when it could not be made (logged:
    the job's outputs are written by then and a report must not fail it)."""
    uri = storage.join(out, REPORT_FILE)
    try:
        t = time.perf_counter()
        summary = summarize_output(out, storage_options, results_dir=results_dir, failed_dir=failed_dir)
        known = secret_values(storage_options or {}, metrics.get("config") or {})
        page = render_report(metrics, summary, output=out, known=known)
        fs, path = storage.fsspec_fs(uri, storage_options)
        with fs.open(path, "w", encoding="utf-8") as f:
            f.write(page)
        logger.info("report: %s (%.1f s)", redact_url(uri), time.perf_counter() - t)
        return uri
    except Exception:
        logger.exception("report: could not write %s", redact_url(uri))
        return None
