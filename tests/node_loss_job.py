"""Run a transcribe job on a three-node `ray.cluster_utils.Cluster` and remove the worker node that
holds the ASR actor mid-run. Run as a script (a process can join one Ray cluster only, and the
test session has its own): prints one JSON line with what happened.

    python -m tests.node_loss_job MANIFEST OUTPUT MODEL CACHE
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq


def _committed(out: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for d in ("results", "failed") for p in (out / d).glob("*.parquet"))


def _asr_actor_node() -> str | None:
    from ray._private.state import actors

    for a in actors().values():
        if "AsrActor" in a.get("ActorClassName", "") and a.get("State") == "ALIVE":
            return a["Address"]["NodeID"]
    return None


def _death(cause) -> str:
    """An ActorDeathCause proto in a line: which context, and the end of its message."""
    kind = cause.WhichOneof("context")
    if not kind:
        return ""
    ctx = getattr(cause, kind)
    text = getattr(ctx, "formatted_exception_string", "") or getattr(ctx, "error_message", "") or str(ctx)
    return f"{kind}: " + " ".join(text.split())[-600:]


def _actor_states() -> list[dict]:
    """Every actor of the cluster as the GCS has it: class, state, restarts, node, why it died."""
    from ray._private.state import actors

    return [
        {
            "class": a["ActorClassName"], "state": a["State"], "restarts": a["NumRestarts"],
            "node": a["Address"]["NodeID"][:8], "death": _death(a["DeathCause"]),
        }
        for a in actors().values()
    ]  # fmt: skip


def main(manifest: str, out: str, model: str, cache: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.config import load_config
    from pipeline.transcribe import run
    from tests.test_resume import _settings

    # The head schedules nothing, as on a real cluster where the head is kept free: every task
    # and actor lives on one of the two workers, and either may go.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    settings = _settings(Path(manifest), Path(out), model, Path(cache))
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "transcribe.yaml", settings)
    result: dict = {}
    errors: list[str] = []

    def job() -> None:
        try:
            result["run"] = run(cfg)
        except Exception as e:  # reported, not raised: the test reads the JSON line
            errors.append(repr(e))

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    deadline = time.time() + 600
    while time.time() < deadline and thread.is_alive() and (_committed(Path(out)) < 4 or _asr_actor_node() is None):
        time.sleep(0.05)
    node_id = _asr_actor_node()
    removed = None
    at_removal = _committed(Path(out))
    for w in workers:
        if w.node_id == node_id:
            cluster.remove_node(w, allow_graceful=False)
            removed = node_id
    # Finished within a minute of the removal here (the replacement engine's start included).
    thread.join(timeout=300)
    r = result.get("run")
    print(json.dumps({
        "removed_node": removed,
        "at_removal": at_removal,
        "finished": not thread.is_alive(),
        "errors": errors,
        "rows": None if r is None else [r.rows_read, r.rows_written, r.rows_failed],
        "recovery": None if r is None else r.metrics.get("recovery"),
        "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
        # What Ray says about the actors, for a run that did not end.
        "actors": None if not thread.is_alive() else _actor_states(),
    }), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
