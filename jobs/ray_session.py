"""Connect to the job's Ray cluster, or start an embedded local one on a laptop."""

from __future__ import annotations

import logging
import os

from pipeline.config import RayConfig

logger = logging.getLogger(__name__)


def start_ray(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` RAY_ADDRESS points at the cluster that runs the job.
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to Ray at %s", address)
        return
    ray.init(
        num_cpus=cfg.num_cpus,
        object_store_memory=cfg.object_store_memory,
        include_dashboard=False,
        log_to_driver=True,
    )
    logger.info("started an embedded local Ray: %s", ray.cluster_resources())
