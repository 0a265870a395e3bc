"""An engine actor that dies for good mid-run is replaced, and the job goes on or fails; it never
waits forever.

Ray restarts a dead engine actor (``max_restarts=-1``), but an actor whose restart raises in its
constructor (an engine that no longer starts on the node it was moved to) is dead for good. Ray
Data 2.60 keeps it in a fixed-size pool and never replaces it: with lost blocks tolerated, the
job then waits forever (ray-project/ray#62746). Real parts: the session's Ray, Ray Data's actor
pool built with the job's own options (``actor_pool``, ``restarts``, ``tolerate_lost_blocks``).
The actor stands in for the engine actor: no input makes a real engine fail to restart on
demand. Its batches are one block each, in a fixed order, so which batch kills it is known.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pipeline.config import PoolConfig
from pipeline.recovery import tolerate_lost_blocks
from pipeline.transcribe import actor_pool, restarts

ROWS = 24
CRASH_AT = 8  # the id whose batch ends the first actor's process


def _engine_actor(crashed: Path, broken_for_good: bool):
    # Defined here, not at module level, so Ray ships the class by value to its workers.
    import os

    import numpy as np
    import ray

    class Engine:
        def __init__(self):
            # The restart of the crashed actor fails; so does every later actor when the engine
            # is broken for good (as on a cluster where it no longer fits anywhere).
            if ray.get_runtime_context().was_current_actor_reconstructed or (broken_for_good and crashed.exists()):
                raise RuntimeError("engine start failed: out of memory")

        def __call__(self, batch: dict) -> dict:
            if CRASH_AT in batch["id"] and not crashed.exists():
                crashed.touch()
                os._exit(1)  # as an engine segfault would: no exception, no cleanup
            batch["pid"] = np.full(len(batch["id"]), os.getpid())
            return batch

    return Engine


def _run(tmp_path: Path, broken_for_good: bool, timeout_s: float = 180) -> dict:
    import ray

    ds = ray.data.range(ROWS, override_num_blocks=ROWS // 2).map_batches(
        _engine_actor(tmp_path / "crashed", broken_for_good),
        batch_size=2,
        compute=actor_pool(1, 1, 1),
        **restarts(PoolConfig(task_retries=1)),
        num_cpus=0.5,
    )
    outcome: dict = {}

    def consume() -> None:
        try:
            with tolerate_lost_blocks(ds) as tolerant:
                outcome["rows"] = tolerant.take_all()
        except Exception as e:  # the test reads it
            outcome["error"] = e

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"the job still waited {timeout_s:.0f} s after its actor died for good"
    return outcome


def test_an_actor_dead_for_good_is_replaced_and_the_job_goes_on(ray_session, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.recovery"):
        outcome = _run(tmp_path, broken_for_good=False)
    assert "error" not in outcome, outcome.get("error")
    rows = outcome["rows"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    # Lost: the crashing batch and at most one more queued on the same actor (two in flight per
    # actor), whose rows the job's retry pass takes again. Every other row went through.
    lost = set(range(ROWS)) - set(ids)
    assert CRASH_AT in lost and len(lost) <= 4, sorted(lost)
    # Rows after the crash were handled by a new actor process, not by the dead one's restart.
    before, after = {r["pid"] for r in rows if r["id"] < CRASH_AT}, {r["pid"] for r in rows if r["id"] > CRASH_AT + 3}
    assert after and not before & after
    assert [r.message for r in caplog.records].count(
        "MapWorker(MapBatches(Engine)): an actor died for good (see the actor's log); starting another in its place"
    ) == 1


def test_a_job_whose_engine_never_starts_again_fails_with_its_error(ray_session, tmp_path):
    outcome = _run(tmp_path, broken_for_good=True)
    assert "rows" not in outcome
    assert "engine start failed: out of memory" in str(outcome["error"])

