"""The command line shared by the jobs: `--config FILE`, `--set a.b=c`, exit codes.

Exit codes: 0 done, 1 the run failed, 2 the config or manifest is invalid (nothing was processed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from pipeline.config import ConfigError, load_config


def parse_args(prog: str, description: str, example_config: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=f"YAML job config ({example_config})")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field, e.g. --set output.path=s3://bucket/out (repeatable)",
    )
    return parser.parse_args(argv)


def main(
    *,
    prog: str,
    description: str,
    example_config: str,
    schema: type[BaseModel],
    argv: list[str] | None = None,
    runner: Callable[[Any], Any] | None = None,
) -> int:
    """``runner(cfg)`` runs the job and returns a RunResult; unset = the transcribe/align run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(prog, description, example_config, argv)
    try:
        cfg = load_config(args.config, args.overrides, schema=schema)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from jobs.ray_session import start_ray
    from pipeline.transcribe import run

    start_ray(cfg.ray)
    result = (runner or run)(cfg)
    print(f"wrote {result.rows_written} results and {result.rows_failed} failed rows to {cfg.output.path}")
    return 0
