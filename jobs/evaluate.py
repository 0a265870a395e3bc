"""Evaluate a model on named test sets: `python -m jobs.evaluate --config configs/evaluate.yaml`.

Writes `<output>/evaluation.json` and `evaluation.md` (WER/CER per test set and language, with
S/D/I, language-identification accuracy, engine RTFx, end-to-end throughput, model and versions),
and under `<output>/<test set>/` each set's results, failed rows, metrics.json and report.html.
"""

from __future__ import annotations

import sys

from jobs import cli
from jobs.ray_session import start_ray
from pipeline.evaluate import EvaluateConfig, run_evaluation


def _evaluate(cfg: EvaluateConfig) -> int:
    start_ray(cfg.ray)
    result = run_evaluation(cfg)
    return 0 if all(s["rows_read"] == s["rows_written"] + s["rows_failed"] for s in result["sets"]) else 1


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        prog="python -m jobs.evaluate", doc=__doc__, example_config="configs/evaluate.yaml",
        schema=EvaluateConfig, body=_evaluate, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
