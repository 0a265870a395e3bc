"""Transcribe a corpus: `python -m jobs.transcribe --config configs/transcribe.yaml [--set a.b=c ...]`.

Under `ray job submit` it runs on that cluster; elsewhere on an embedded local Ray. With
`align.enabled: true` every row also gets word timestamps.
Exit codes: 0 done, 1 the run failed, 2 the config or manifest is invalid (nothing was processed).
"""

from __future__ import annotations

import sys

from jobs import cli
from pipeline.config import JobConfig


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        prog="python -m jobs.transcribe", description=__doc__.splitlines()[0],
        example_config="configs/transcribe.yaml", schema=JobConfig, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
