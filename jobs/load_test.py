"""Load test: `python -m jobs.load_test --config configs/load_test.yaml`.

Runs the transcribe job on generated manifests of short clips (2,000 and 20,000 rows by default),
each in a driver process of its own attached to one Ray, and prints, side by side, each run's
throughput, its driver's peak memory and the ratio of the largest run's peak to the smallest's
(1.0: the driver does not grow with the row count). Every run must account for every row and the
object store must not fail to spill. Writes load.json and load.md into `output`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from jobs import cli
from jobs.ray_session import start_ray
from pipeline.benchmark.load import LoadConfig, run_driver, short_clips, spill_stats

logger = logging.getLogger("load_test")


def run_load_test(cfg: LoadConfig) -> dict:
    import ray

    start_ray(cfg.ray)
    address = ray.get_runtime_context().gcs_address
    clips = short_clips(cfg.clips, cfg.max_clip_s)
    runs = []
    for rows in cfg.rows:
        logger.info("load test: %d rows", rows)
        run = run_driver(cfg, rows, clips, address)
        run["object_store"] = spill_stats()
        logger.info("load test: %s", run)
        runs.append(run)
    small, large = min(runs, key=lambda r: r["rows"]), max(runs, key=lambda r: r["rows"])
    report = {
        "runs": runs,
        "driver_peak_ratio": round(large["driver_peak_mb"] / small["driver_peak_mb"], 3),
        "rows_ratio": round(large["rows"] / small["rows"], 1),
        "ok": all(r["exit_code"] == 0 and r["balanced"] for r in runs),
    }
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "load.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return report


def to_markdown(report: dict) -> str:
    lines = [
        "| rows | exit | wall s | rows/s | driver peak MB | written | failed | balanced | spilled MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|:-:|---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['rows']} | {r['exit_code']} | {r['wall_s']} | {r['rows_per_s']} | {r['driver_peak_mb']} | "
            f"{r['rows_written']} | {r['rows_failed']} | {r['balanced']} | {r['object_store'].get('spilled_mib', '?')} |"
        )
    lines += ["", f"Driver peak memory, largest run / smallest run: **{report['driver_peak_ratio']}** "
              f"(row ratio {report['rows_ratio']})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        prog="python -m jobs.load_test", doc=__doc__, example_config="configs/load_test.yaml",
        schema=LoadConfig, body=lambda cfg: 0 if run_load_test(cfg)["ok"] else 1, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
