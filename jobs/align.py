"""Align existing transcripts to their audio: `python -m jobs.align --config configs/align.yaml`.

For a corpus that already has text and needs times (dataset labeling): each manifest row's
`text` is aligned to its audio by Qwen3-ForcedAligner, without running ASR, and written in the
transcribe job's results schema with `words` (and subtitles if `output.subtitles` is set).
Exit codes: 0 done, 1 the run failed, 2 the config or manifest is invalid (nothing was processed).
"""

from __future__ import annotations

import sys

from jobs import cli
from pipeline.config import AlignJobConfig


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        prog="python -m jobs.align", description=__doc__.splitlines()[0],
        example_config="configs/align.yaml", schema=AlignJobConfig, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
