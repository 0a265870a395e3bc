"""The embedded local Ray a job starts on one machine: its workers' priority."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.ray_session import worker_niceness
from pipeline.config import RayConfig

ROOT = Path(__file__).resolve().parents[1]

# A driver at niceness 2 starts the embedded Ray and reports what a task's worker runs at.
DRIVER = """
import os, sys
os.nice(2)
import ray
from jobs.ray_session import start_ray
from pipeline.config import RayConfig
start_ray(RayConfig(num_cpus=1, worker_niceness=int(sys.argv[1])))
print("worker niceness", ray.get(ray.remote(lambda: os.getpriority(os.PRIO_PROCESS, 0)).remote()))
"""


def test_workers_run_at_the_configured_niceness_not_rays_15() -> None:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, "7"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    # 7, not 2 + 7 (Ray adds its value to the inherited niceness) nor 2 + 15 (Ray's default).
    assert "worker niceness 7" in out.stdout, out.stdout + out.stderr[-2000:]


def test_unset_niceness_keeps_the_drivers_and_cannot_go_below_it(caplog: pytest.LogCaptureFixture) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert worker_niceness(RayConfig()) == 0  # nothing added to what workers inherit
    if own < 19:
        assert worker_niceness(RayConfig(worker_niceness=own + 1)) == 1
    if own > 0:
        assert worker_niceness(RayConfig(worker_niceness=0)) == 0
        assert "below this process's niceness" in caplog.text
    with pytest.raises(ValueError):
        RayConfig(worker_niceness=-5)
