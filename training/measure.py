"""Measure the tiny trained checkpoints through vLLM on the held-out synthetic test set.

Uses the project's own pieces end to end: ``pipeline.audio.decode.decode_audio`` (to 16 kHz mono),
``pipeline.audio.chunking.plan_chunks`` (recordings longer than ``asr.max_chunk_s``), the engine adapters
``actors.asr_engine.AsrEngine`` / ``actors.align_engine.AlignEngine``, ``pipeline.align.units`` and
``pipeline.align.timestamps`` for the aligner, and ``pipeline.score.wer`` for WER. Prints corpus WER and
language-ID accuracy (overall, per language, per voice split, per item kind) and the aligner's
absolute word-boundary error (mean / median, ms).

Run from the repository root, in the runtime environment, without network::

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m training.measure'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000


def load_items(manifest: str) -> list[dict]:
    from pipeline.audio.decode import decode_audio

    base = os.path.dirname(os.path.abspath(manifest))
    items = []
    with open(manifest, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                row["samples"] = decode_audio(os.path.join(base, row["audio"]), target_sr=SAMPLE_RATE).samples
                items.append(row)
    return items


async def run_asr(model: str, items: list[dict], max_chunk_s: float, language_forced: bool) -> float:
    from actors.asr_engine import AsrEngine
    from pipeline.audio.chunking import plan_chunks

    engine = AsrEngine(model, max_new_tokens=256, max_model_len=4096, enforce_eager=True, max_audio_s=max_chunk_s)
    try:
        t0 = time.perf_counter()

        async def one(row: dict) -> None:
            chunks = plan_chunks(row["samples"], SAMPLE_RATE, max_chunk_s)
            forced = row["language"] if language_forced else None
            outs = await asyncio.gather(*[engine.transcribe(row["samples"][a:b], language=forced) for a, b in chunks])
            row["hyp"] = " ".join(o["text"] for o in outs if o["text"])
            langs = [o["language"] for o in outs if o["language"]]
            row["hyp_language"] = max(set(langs), key=langs.count) if langs else None
            row["raw"] = [o["raw"] for o in outs]

        await asyncio.gather(*[one(row) for row in items])
        return time.perf_counter() - t0
    finally:
        engine.shutdown()


async def run_aligner(model: str, items: list[dict]) -> float:
    from actors.align_engine import AlignEngine
    from pipeline.align.timestamps import slots_to_words
    from pipeline.align.units import build_aligner_text, split_units

    engine = AlignEngine(model, enforce_eager=True, max_audio_s=30)
    try:
        t0 = time.perf_counter()

        async def one(row: dict) -> None:
            units = split_units(row["text"], row["language"])
            out = await engine.align(row["samples"], build_aligner_text(units))
            duration = len(row["samples"]) / SAMPLE_RATE
            row["aligned"] = slots_to_words(units, out["slot_classes"], out["segment_time_s"], duration_s=duration)

        await asyncio.gather(*[one(row) for row in items])
        return time.perf_counter() - t0
    finally:
        engine.shutdown()


def asr_report(items: list[dict]) -> dict:
    from pipeline.score.wer import corpus_error_rate, score_row

    groups: dict[str, list[dict]] = defaultdict(list)
    for row in items:
        groups["all"].append(row)
        if row["kind"] != "long":
            groups["short (all but long)"].append(row)
        groups[f"language {row['language']}"].append(row)
        groups[f"voices {row['split']}"].append(row)
        groups[f"kind {row['kind']}"].append(row)
    report = {}
    for name, rows in groups.items():
        scores = [score_row(r["text"], r["hyp"], r["language"]) for r in rows]
        report[name] = {
            "items": len(rows),
            "wer": corpus_error_rate(scores),
            "lid": sum(r["hyp_language"] == r["language"] for r in rows) / len(rows),
        }
    return report


def aligner_report(items: list[dict]) -> dict:
    errs: dict[str, list[float]] = defaultdict(list)
    for row in items:
        for ref, hyp in zip(row["words"], row["aligned"]):
            for key in ("start", "end"):
                e = abs(ref[key] - hyp[key]) * 1000
                errs["all"].append(e)
                errs[f"language {row['language']}"].append(e)
                errs[f"voices {row['split']}"].append(e)
    return {k: {"boundaries": len(v), "mean_ms": statistics.fmean(v), "median_ms": statistics.median(v)} for k, v in errs.items()}


def measure_asr(args, items: list[dict]) -> dict:
    from pipeline.score.wer import score_row

    asr_s = asyncio.run(run_asr(args.asr, items, args.max_chunk_s, False))
    report = {"asr": asr_report(items), "asr_seconds": round(asr_s, 2)}
    if args.forced_language:
        forced = [dict(r) for r in items]
        asyncio.run(run_asr(args.asr, forced, args.max_chunk_s, True))
        report["asr_forced_language"] = asr_report(forced)

    print(f"ASR {args.asr} on {len(items)} items ({asr_s:.1f} s, chunks <= {args.max_chunk_s:g} s)")
    for name, r in report["asr"].items():
        wer = "n/a" if r["wer"] is None else f"{100 * r['wer']:.1f} %"
        print(f"  {name:24s} items {r['items']:3d}  WER {wer:>8s}  language ID {100 * r['lid']:.1f} %")
    if args.forced_language:
        for name, r in report["asr_forced_language"].items():
            print(f"  forced {name:17s} items {r['items']:3d}  WER {100 * r['wer']:.1f} %")
    worst = sorted(items, key=lambda r: -score_row(r["text"], r["hyp"], r["language"]).errors)[: args.show]
    for r in worst:
        print(f"    {r['id']}: ref {r['text'][:80]!r} hyp {r['hyp'][:80]!r} ({r['hyp_language']})")
    return report


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import AsrConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr", default=str(REPO / "models" / "tiny-qwen3-asr-synth"))
    parser.add_argument("--aligner", default=str(REPO / "models" / "tiny-qwen3-aligner-synth"))
    parser.add_argument("--manifest", default=str(REPO / "tests" / "assets" / "synth" / "manifest.jsonl"))
    parser.add_argument("--max-chunk-s", type=float, default=AsrConfig().max_chunk_s, help="ASR chunk length (the pipeline's default)")
    parser.add_argument("--forced-language", action="store_true", help="also measure WER with the language forced")
    parser.add_argument("--skip-aligner", action="store_true")
    parser.add_argument("--skip-asr", action="store_true")
    parser.add_argument("--json", help="write the full results (per item) here")
    parser.add_argument("--show", type=int, default=8, help="print this many worst items")
    args = parser.parse_args(argv)

    items = load_items(args.manifest)
    report: dict = {"max_chunk_s": args.max_chunk_s}
    if not args.skip_asr:
        report.update(measure_asr(args, items))

    aligned = [r for r in items if r.get("words")]
    if aligned and not args.skip_aligner:
        align_s = asyncio.run(run_aligner(args.aligner, aligned))
        report["aligner"] = aligner_report(aligned)
        report["aligner_seconds"] = round(align_s, 2)
        print(f"Aligner {args.aligner} on {len(aligned)} items ({align_s:.1f} s)")
        for name, r in report["aligner"].items():
            print(f"  {name:24s} boundaries {r['boundaries']:3d}  mean {r['mean_ms']:.0f} ms  median {r['median_ms']:.0f} ms")

    if args.json:
        for r in items:
            r.pop("samples", None)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"report": report, "items": items}, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
