"""GPU defaults follow what the autoscaler can add, not only the nodes up at job start (a real
local Ray; the autoscaler's record is written where the KubeRay/launcher autoscaler writes it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def autoscaler_config(ray_session):
    import ray._raylet as raylet
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    namespace = raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    key = raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode()

    def publish(groups: list[dict]) -> None:
        config = autoscaler_pb2.ClusterConfig()
        for group in groups:
            g = config.node_group_configs.add()
            g.resources.update(group["resources"])
            g.max_count = group["max_count"]
        _internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=namespace)

    try:
        yield publish
    finally:  # the session's Ray is shared: later jobs must see a CPU-only cluster again
        _internal_kv_del(key, namespace=namespace)


def test_no_gpus_and_no_autoscaler_means_cpu_engines(ray_session):
    from pipeline.transcribe import actor_gpus, cluster_has_gpus, engine_cpus

    assert not cluster_has_gpus()
    assert actor_gpus(None, 0.5) == 0.0
    assert engine_cpus(None, 2) == 0.5 and engine_cpus(None, 3) == pytest.approx(1 / 3)
    assert actor_gpus(0.25, 0.5) == 0.25 and engine_cpus(2.0, 3) == 2.0


def test_gpu_group_scaled_to_zero_still_gets_gpu_engines(autoscaler_config):
    from pipeline.transcribe import actor_gpus, cluster_has_gpus, engine_cpus

    autoscaler_config([{"resources": {"CPU": 16}, "max_count": 4}])
    assert not cluster_has_gpus()  # CPU groups only
    autoscaler_config([{"resources": {"CPU": 16}, "max_count": 4}, {"resources": {"CPU": 8, "GPU": 1}, "max_count": 8}])
    assert cluster_has_gpus()
    assert actor_gpus(None, 0.5) == 0.5
    assert engine_cpus(None, 3) == 1.0
