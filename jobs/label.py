"""Label a corpus for training: `python -m jobs.label --config configs/label.yaml`.

Transcribes with word timestamps, cuts long recordings into training-sized utterances at pauses,
scores each one (second-model agreement, repetition, speech rate, language, level), keeps or
rejects it by the config's filter, and exports the kept ones as cut audio + train.jsonl (the
Qwen3-ASR fine-tuning format) and as Parquet with the audio embedded (Hugging Face datasets).
Exit codes: 0 done, 1 the run failed, 2 the config or manifest is invalid (nothing was processed).
"""

from __future__ import annotations

import sys

from jobs import cli
from pipeline.config import LabelJobConfig


def _run(cfg: LabelJobConfig):
    from pipeline.label.run import run_label

    return run_label(cfg)


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        prog="python -m jobs.label", description=__doc__.splitlines()[0],
        example_config="configs/label.yaml", schema=LabelJobConfig, argv=argv, runner=_run,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
