"""Evaluate a model on named test sets: `python -m jobs.evaluate --config configs/evaluate.yaml`.

Writes `<output>/evaluation.json` and `evaluation.md` (WER/CER per test set and language, with
S/D/I, language-identification accuracy, engine RTFx, end-to-end throughput, model and versions),
and under `<output>/<test set>/` each set's results, failed rows, metrics.json and report.html.
"""

from __future__ import annotations

import logging
import sys

from jobs import cli
from jobs.ray_session import start_ray
from pipeline.config import ConfigError, load_config
from pipeline.evaluate import EvaluateConfig, run_evaluation


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = cli.parse_args("python -m jobs.evaluate", __doc__.splitlines()[0], "configs/evaluate.yaml", argv)
    try:
        cfg = load_config(args.config, args.overrides, schema=EvaluateConfig)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start_ray(cfg.ray)
    result = run_evaluation(cfg)
    return 0 if all(s["rows_read"] == s["rows_written"] + s["rows_failed"] for s in result["sets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
