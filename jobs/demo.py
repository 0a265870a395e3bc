"""The first run: `python -m jobs.demo [--model M]` (what `make demo` runs).

Transcribes bundled recordings with the transcribe job on an embedded local Ray and prints the
summary and a few transcripts next to their references. The model is, in order: ``--model``
(hub id, local directory or s3:// prefix); else the default of configs/transcribe.yaml
(Qwen/Qwen3-ASR-0.6B from the Hugging Face hub) on the bundled speech clips; and when that
cannot be fetched (no network, no hub access), the bundled tiny model trained on synthetic
speech (models/tiny-qwen3-asr-synth) on the bundled synthetic test recordings, which it knows.
A model given with ``--model`` that cannot be loaded is an error (exit 2), never swapped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import cli
from pipeline.config import JobConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/transcribe.yaml"
# The bundled trained tiny model and the held-out synthetic set it was trained for; its
# 2-layer decoder loses its place in long chunks, so it runs at 5 s chunks (training/README.md).
TINY_MODEL = "models/tiny-qwen3-asr-synth"
TINY_SET = "tests/assets/synth/manifest.jsonl"
TINY_OVERRIDES = [f"asr.model={ROOT / TINY_MODEL}", f"input.manifest={ROOT / TINY_SET}", "asr.max_chunk_s=5"]
SHOWN = 5  # transcripts printed next to their references


def plan(model: str | None) -> tuple[list[str], str | None]:
    """(overrides, note): the demo's model and recordings, and a one-line note on a fallback."""
    if model:
        return [f"asr.model={model}"], None
    from actors.model_source import model_problem

    default = load_config(str(ROOT / CONFIG), [f"input.manifest={ROOT / 'tests/assets/speech/manifest.jsonl'}"]).asr.model
    problem = model_problem(default)
    if problem is None:
        return [], None
    note = (
        f"note: {default} cannot be fetched ({problem}); running the bundled tiny model {TINY_MODEL} "
        f"on the bundled synthetic recordings instead (make demo MODEL=<dir, hub id or s3://> picks another)"
    )
    return TINY_OVERRIDES, note


def show_transcripts(output: str, n: int = SHOWN) -> None:
    """Print ``n`` results (id order) as reference / hypothesis pairs."""
    import pyarrow.parquet as pq

    results = Path(output) / "results"
    if not results.is_dir():
        return
    table = pq.read_table(results, columns=["id", "language", "reference", "text"]).sort_by("id")
    rows = table.to_pylist()
    step = max(1, len(rows) // n)
    print(f"\n{min(n, len(rows))} of {len(rows)} transcripts (all in {results}):")
    for row in rows[::step][:n]:
        print(f"  {row['id']} [{row['language'] or '?'}]")
        if row["reference"]:
            print(f"    reference:  {row['reference']}")
        print(f"    transcript: {row['text']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id, local directory or s3:// prefix")
    parser.add_argument("--output", default="out/demo", help="output folder (replaced on each run)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one field of configs/transcribe.yaml, e.g. --set input.limit=10 (repeatable)",
    )
    args = parser.parse_args(argv)

    overrides, note = plan(args.model)
    if note:
        print(note, flush=True)
    overrides += [f"output.path={args.output}", "output.overwrite=true", *args.overrides]
    job_argv = ["--config", str(ROOT / CONFIG)] + [a for o in overrides for a in ("--set", o)]
    code = cli.main(
        prog="python -m jobs.demo", description=__doc__.splitlines()[0], example_config=CONFIG,
        schema=JobConfig, argv=job_argv,
    )  # fmt: skip
    if code == 0:
        show_transcripts(args.output)
    return code


if __name__ == "__main__":
    sys.exit(main())
