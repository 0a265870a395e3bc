"""The load test: the whole transcribe job on manifests of many short clips, one driver process
per size attached to one Ray, its peak memory read from the kernel when it exits.

The driver must hold per-row state only in the object store and in files: its peak resident
memory at 20,000 rows should be that at 2,000 rows. A job's driver is a process of its own under
`ray job submit` too, so a child process is what is measured, not this one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pydantic import Field

from pipeline.config import JobBase, RayConfig


class LoadConfig(JobBase):
    rows: list[int] = Field(default_factory=lambda: [2000, 20000], min_length=1, description="Manifest sizes, run in order")
    clips: str = Field(
        default="tests/assets/speech/manifest.jsonl",
        description="Manifest whose short clips (<= max_clip_s) the generated manifests cycle through",
    )
    max_clip_s: float = Field(default=5.0, gt=0)
    job_config: str = Field(default="configs/transcribe.yaml", description="The transcribe job's config")
    job_overrides: list[str] = Field(
        default_factory=list, description="--set overrides for every run, e.g. asr.model=build/tiny-qwen3-asr"
    )
    output: str = Field(default="out/load", description="Local folder: manifests, job outputs, load.json, load.md")
    timeout_s: float = Field(default=7200, gt=0, description="Per run")
    ray: RayConfig = Field(default_factory=RayConfig)


def short_clips(manifest: str, max_clip_s: float) -> list[str]:
    import soundfile as sf

    base = Path(manifest).resolve().parent
    clips = []
    for line in Path(manifest).read_text().splitlines():
        if not line.strip():
            continue
        audio = json.loads(line)["audio"]
        path = Path(audio) if os.path.isabs(audio) else base / audio
        try:
            if sf.info(str(path)).duration <= max_clip_s:
                clips.append(str(path))
        except (sf.LibsndfileError, RuntimeError):
            continue  # a format soundfile cannot read here (e.g. opus on old libsndfile)
    if not clips:
        raise ValueError(f"{manifest}: no clip of at most {max_clip_s} s")
    return clips


def write_manifest(path: Path, rows: int, clips: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for k in range(rows):
            f.write(json.dumps({"id": f"row-{k:06d}", "audio": clips[k % len(clips)]}) + "\n")


def run_driver(cfg: LoadConfig, rows: int, clips: list[str], address: str) -> dict:
    """One transcribe job of ``rows`` rows in a driver process of its own; its peak RSS,
    wall time and accounting."""
    work = Path(cfg.output) / f"rows-{rows}"
    manifest, out = work / "manifest.jsonl", work / "out"
    write_manifest(manifest, rows, clips)
    settings = [
        f"input.manifest={manifest.resolve()}", f"output.path={out.resolve()}", "output.overwrite=true",
        f"ray.address={address}", *cfg.job_overrides,
    ]  # fmt: skip
    command = [sys.executable, "-m", "jobs.transcribe", "--config", cfg.job_config, *[a for s in settings for a in ("--set", s)]]
    log = (work / "driver.log").open("w")
    t = time.perf_counter()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + cfg.timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t
    log.close()
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    accounting = metrics.get("accounting", {})
    return {
        "rows": rows,
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall, 1) if wall else None,
        "driver_peak_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "rows_written": accounting.get("rows_written"),
        "rows_failed": accounting.get("rows_failed"),
        "balanced": accounting.get("balanced"),
        "log": str(work / "driver.log"),
    }


def spill_stats() -> dict:
    """Bytes the object store spilled and restored so far (Ray's own memory summary)."""
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(stats_only=True)
    except Exception as e:  # the summary is diagnostics only; a missing one must not fail the test
        return {"error": str(e)}
    stats = {}
    for key, pattern in (("spilled_mib", r"Spilled (\d+) MiB"), ("restored_mib", r"Restored (\d+) MiB")):
        m = re.search(pattern, text)
        stats[key] = int(m.group(1)) if m else 0
    return stats
