"""Rows whose task was lost get a second chance, alone; a row that still fails is a failed row.

Ray restarts an engine actor whose process died and retries its batch (``pool.task_retries``
times), and retries a CPU task lost with its node. When those retries run out, or a task raises,
the whole job would abort and the hours spent on every other row would be lost. Instead the
main pass lets Ray Data drop such a block (``DataContext.max_errored_blocks``) and the rows it
held are found afterwards as the manifest ids that are neither in results/ nor in failed/. They
are run again one row per batch, so a row that kills its worker (a poison row) takes down only
itself; rows still missing after that are written to failed/ as ``worker_crashed``.

Nothing is duplicated by this: rows are committed only by the last stage, under a file name made
from the ids they hold (``commit_stage``), and the retry pass reads what is committed first.

An engine actor can also die for good: Ray does not restart an actor whose restart raised in its
constructor (an engine that no longer starts on the node it was moved to) or that exited on
purpose. Ray Data 2.60 keeps such an actor in its pool and never replaces it, so a fixed-size
pool has no actor left and the job waits forever (ray-project/ray#62746); ``release_dead_actors``
makes the pool let it go, and Ray Data starts a new one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

import pyarrow as pa
import ray

from pipeline.io.commit import commit_rows, committed_ids, committed_rows, drop_done
from pipeline.io.schema import with_columns

logger = logging.getLogger(__name__)

CATEGORY = "worker_crashed"


@contextlib.contextmanager
def tolerate_lost_blocks(ds: ray.data.Dataset) -> Iterator[ray.data.Dataset]:
    """Run ``ds`` with failed blocks dropped (logged by Ray Data) instead of aborting; the rows
    they held are left to ``retry_lost_rows``. The setting lives on the dataset's own context,
    so other datasets of the driver keep failing loudly."""
    context = ds.context
    before = context.max_errored_blocks
    context.max_errored_blocks = -1
    try:
        yield ds
    finally:
        context.max_errored_blocks = before


def release_dead_actors() -> None:
    """Make Ray Data's actor pools release an actor that died for good, so the pool starts a new
    one instead of waiting on it forever. Idempotent; patches this (driver) process, where Ray
    Data's executor runs.

    The change follows the fix proposed upstream (ray-project/ray#65543, for #62746): after each
    refresh of actor states, actors whose state is DEAD leave the pool (an unknown state, which can
    be transient, is left alone as before), and a task that completes on an actor already released
    is not counted again. A new actor's own failure to start still fails the job, with its error
    (``DataContext.max_consecutive_actor_init_deaths``). Written for the pinned Ray 2.60; a Ray
    without these internals raises ``RuntimeError`` here rather than running unguarded.
    """
    try:
        from ray.data._internal.execution.operators import actor_pool_map_operator as apm

        pool_cls, dead = apm._ActorPool, apm._ACTOR_STATE_DEAD
        refresh, completed = pool_cls.refresh_actor_state, pool_cls.on_task_completed
        release = pool_cls._release_running_actor
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"release_dead_actors: Ray {ray.__version__} lacks the actor pool internals it patches") from e
    if getattr(pool_cls, "_releases_dead_actors", False):
        return

    def refresh_actor_state(self) -> None:
        refresh(self)
        for actor in [a for a in self._running_actors if a._get_local_state() == dead]:
            logger.warning(
                "%s: an actor died for good (see the actor's log); starting another in its place",
                self.map_worker_cls_name,
            )
            release(self, actor)

    def on_task_completed(self, actor) -> None:
        # A task of a released actor fails after the release, which already uncounted it.
        if actor in self._running_actors:
            completed(self, actor)

    pool_cls.refresh_actor_state = refresh_actor_state
    pool_cls.on_task_completed = on_task_completed
    pool_cls._releases_dead_actors = True


def one_row_at_a_time(cfg):
    """The job's config with every stage batching one row, so a failure names its row."""
    update = {"decode": cfg.decode.model_copy(update={"batch_size": 1, "batches_per_task": 1})}
    update["output"] = cfg.output.model_copy(update={"rows_per_file": 1})
    for stage in ("asr", "align", "agreement"):
        section = getattr(cfg, stage, None)
        if section is not None:
            update[stage] = section.model_copy(update={"batch_size": 1})
    return cfg.model_copy(update=update)


def missing_rows(manifest: ray.data.Dataset, uris: list[str], storage_options: dict) -> ray.data.Dataset:
    """The manifest rows whose id is in no complete file under ``uris``."""
    done = committed_ids(uris, storage_options)
    return manifest.map_batches(drop_done, fn_kwargs={"done": done}, batch_format="pyarrow", num_cpus=0.25).materialize()


def retry_lost_rows(
    cfg,
    manifest: ray.data.Dataset,
    *,
    results_uri: str,
    failed_uri: str,
    run_pass: Callable[..., ray.data.Dataset],
    committed_before: int = 0,
) -> tuple[dict, ray.data.Dataset | None]:
    """Re-run, one row per batch, the manifest rows no file holds; fail those still missing.

    ``run_pass(cfg, rows, isolate=True)`` runs the job's own stages on ``rows``, one batch per
    engine actor at a time, and commits them (under ``tolerate_lost_blocks``), returning what its
    last stage passed on. Returns the counts for
    metrics.json and that output (None when no row was lost). ``committed_before``: rows an
    earlier run of the job committed (resume), not part of ``manifest``.
    """
    so = cfg.output.storage_options
    record = {"rows_lost_in_first_pass": 0, "rows_retried_alone": 0, "rows_failed_as_worker_crashed": 0}
    # The usual case, from the Parquet footers alone: every row is in a file.
    committed = committed_rows(results_uri, so) + committed_rows(failed_uri, so)
    if committed == committed_before + manifest.count():
        return record, None
    lost = missing_rows(manifest, [results_uri, failed_uri], so)
    n_lost = record["rows_lost_in_first_pass"] = lost.count()
    if not n_lost:
        return record, None
    logger.warning(
        "%d rows were lost with their tasks (a worker died, a node left, or a task raised after its retries): "
        "running each alone once more", n_lost,
    )
    record["rows_retried_alone"] = n_lost
    retry_cfg = one_row_at_a_time(cfg)
    # Alone on its actor, too: a batch queued behind a row that kills the actor would die with it.
    retried = run_pass(retry_cfg, lost.repartition(target_num_rows_per_block=1), isolate=True)
    still = missing_rows(lost, [results_uri, failed_uri], so)
    rows = still.take_all()
    if rows:
        tries = 1 + _task_retries(cfg)
        message = (
            f"{CATEGORY}: the row's task failed in the job's pass and again alone, {tries} tries each "
            "(its worker process died, its node left, or the task raised); see the job log"
        )
        table = pa.Table.from_pylist(rows)
        table = with_columns(
            table,
            {
                "error_stage": pa.array(["worker"] * len(rows), pa.string()),
                "error": pa.array([message] * len(rows), pa.string()),
            },
        )
        commit_rows(table, results_uri=results_uri, failed_uri=failed_uri, storage_options=so)
        logger.error("%d rows failed as %s (poison rows): %s", len(rows), CATEGORY, ", ".join(r["id"] for r in rows[:20]))
    record["rows_failed_as_worker_crashed"] = len(rows)
    return record, retried


def _task_retries(cfg) -> int:
    pools = [getattr(cfg, s).pool for s in ("asr", "align") if getattr(cfg, s, None) is not None]
    return max((p.task_retries for p in pools), default=0)
