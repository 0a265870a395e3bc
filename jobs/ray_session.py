"""Connect to the job's Ray cluster, or start an embedded local one on a laptop."""

from __future__ import annotations

import logging
import os

from jobs import logs
from pipeline.config import RayConfig
from pipeline.watchdog import watch

logger = logging.getLogger(__name__)


def start_ray(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` RAY_ADDRESS points at the cluster that runs the job.
        ray.init(address=address, **logs.ray_init_kwargs())
        logger.info("connected to Ray at %s", address)
        logs.announce_log_dir()
        return
    # An embedded Ray belongs to this job: a watcher ends gcs_server, the raylet, its agents,
    # workers and engines once this driver is gone, however it ends (SIGKILL, the OOM killer, a
    # closed terminal), which Ray's own fate-sharing does not fully do (see pipeline/watchdog.py).
    # Once a second: this tree has hundreds of threads to read, and most of it dies with the
    # driver anyway (Ray's PR_SET_PDEATHSIG).
    watch(interval_s=1.0)
    ray.init(
        # "local": always a new instance. Without it ray.init joins whatever `ray start` cluster
        # runs on this machine (its /tmp/ray/ray_current_cluster) and then refuses num_cpus.
        address="local",
        num_cpus=cfg.num_cpus,
        object_store_memory=cfg.object_store_memory,
        include_dashboard=False,
        _system_config={"worker_niceness": worker_niceness(cfg)},
        **logs.ray_init_kwargs(),
    )
    resources = ray.cluster_resources()
    logger.info(
        "started an embedded local Ray: %g CPUs, %g GPUs", resources.get("CPU", 0), resources.get("GPU", 0)
    )
    logs.announce_log_dir()


def worker_niceness(cfg: RayConfig) -> int:
    """Ray's ``worker_niceness`` for an embedded Ray: how much nicer than the driver its workers
    run (Ray adds it to the niceness a worker inherits). ``cfg.worker_niceness`` is the niceness
    the workers should have; unset, the driver's own (``nice -n 10 python -m jobs.transcribe``
    runs its workers at 10 too). A value below the driver's is not reachable without privileges:
    the workers stay at the driver's, with a warning.

    Not Ray's default of 15: the decode tasks would then yield to every ordinary process and
    kernel thread on the machine, the driver that feeds them included (on this project's 2-core
    machine decoding through the pipeline ran a few percent slower next to the same loop at the
    driver's niceness).
    """
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if cfg.worker_niceness is None:
        return 0
    if cfg.worker_niceness < own:
        logger.warning(
            "ray.worker_niceness %d is below this process's niceness %d: workers run at %d", cfg.worker_niceness, own, own
        )
        return 0
    return cfg.worker_niceness - own
