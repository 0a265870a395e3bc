"""Transcribe the audio that arrived since the last run: `python -m jobs.etl --config configs/etl.yaml`.

Meant to run on a schedule over a growing prefix. Each run takes the files no committed run has
processed, writes them as a new partition `date=YYYY-MM-DD/run=<id>/` under `output.path` and
commits a record of them under `_etl/runs/`. A lock keeps two runs from working at once.
Exit codes: 0 done (or nothing new), 1 the run failed (nothing committed; the next run redoes it),
2 invalid config, `lock.busy_exit_code` (0 by default) when another run holds the lock.
"""

from __future__ import annotations

import sys

from jobs import cli
from pipeline.etl.config import EtlConfig


def _etl(cfg: EtlConfig) -> int:
    # Ray and the pipeline load only when there is work: a run with nothing new stays cheap.
    from pipeline.etl.lock import LockError, LockLost, describe_holder
    from pipeline.etl.run import EtlError, run_etl

    def transcribe(job_cfg):
        from jobs.ray_session import start_ray
        from pipeline.transcribe import run

        start_ray(cfg.ray)
        return run(job_cfg)

    try:
        result = run_etl(cfg, transcribe)
    except (EtlError, LockError, LockLost) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.status == "busy":
        print(
            f"another ETL run holds the lock on {cfg.output.path}: {describe_holder(result.holder or {})}; "
            f"waited {cfg.lock.wait_s:g} s, nothing done"
        )
        return cfg.lock.busy_exit_code
    if result.status == "nothing_new":
        print(f"nothing new under {cfg.source.prefix} ({result.files_listed} audio files, all processed)")
        return 0
    left = f"; {result.files_deferred} new files left for the next run" if result.files_deferred else ""
    print(
        f"run {result.run_id}: {result.files_new} new files, wrote {result.rows_written} results and "
        f"{result.rows_failed} failed rows to {result.partition}{left}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        prog="python -m jobs.etl", doc=__doc__, example_config="configs/etl.yaml",
        schema=EtlConfig, body=_etl, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
