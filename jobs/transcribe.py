"""Transcribe a corpus: `python -m jobs.transcribe --config configs/transcribe.yaml [--set a.b=c ...]`.

Under `ray job submit` it runs on that cluster; elsewhere on an embedded local Ray.
Exit codes: 0 done, 1 the run failed, 2 the config or manifest is invalid (nothing was processed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.transcribe", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML job config (configs/transcribe.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field, e.g. --set asr.model=/models/tiny (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from jobs.ray_session import start_ray
    from pipeline.transcribe import DuplicateIdError, run

    start_ray(cfg.ray)
    try:
        result = run(cfg)
    except DuplicateIdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {result.rows_written} results and {result.rows_failed} failed rows to {cfg.output.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
