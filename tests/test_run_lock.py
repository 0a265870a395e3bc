"""The ETL run lock on a real S3 server (moto on loopback) and on local disk: one holder at a time,
races, heartbeats, stale takeover, a holder that lost the lock. No Ray, no engine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.etl.lock import LockLost, RunLock, open_store, read_holder

REPO = Path(__file__).resolve().parents[1]
BUCKET = "etl-locks"


@pytest.fixture(params=["local", "s3"])
def lock_uri(request, tmp_path):
    """A fresh lock location and its storage options, on each backend."""
    name = f"lock-{uuid.uuid4().hex[:8]}.json"
    if request.param == "local":
        return str(tmp_path / "_etl" / name), {}
    s3 = request.getfixturevalue("s3")
    fs = s3.fs()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return f"s3://{BUCKET}/root/_etl/{name}", s3.storage_options


def make_lock(
    uri: str, so: dict, run_id: str, *, stale_after_s: float = 60, heartbeat_s: float = 10, poll_s: float = 0.1
) -> RunLock:
    store, path = open_store(uri, so)
    return RunLock(store, path, run_id=run_id, stale_after_s=stale_after_s, heartbeat_s=heartbeat_s, poll_s=poll_s)


def write_dead_holder(uri: str, so: dict, age_s: float) -> None:
    store, path = open_store(uri, so)
    then = time.time() - age_s
    payload = {"owner": "dead", "run_id": "dead-run", "host": "gone", "pid": 1, "heartbeat_epoch": then}
    assert store.create(path, json.dumps(payload).encode()) is not None


def test_one_holder_at_a_time(lock_uri):
    uri, so = lock_uri
    a, b = make_lock(uri, so, "run-a"), make_lock(uri, so, "run-b")
    assert a.acquire(0)
    t = time.monotonic()
    assert not b.acquire(0.5)
    assert 0.5 <= time.monotonic() - t < 5  # it waited wait_s, then gave up
    assert b.holder["run_id"] == "run-a" and b.holder["pid"] > 0
    a.release()
    assert read_holder(*open_store(uri, so)) is None
    assert b.acquire(0)
    assert read_holder(*open_store(uri, so))["run_id"] == "run-b"
    b.release()


def test_racing_threads_exactly_one_wins(lock_uri):
    base, so = lock_uri
    for round_ in range(5):
        uri = f"{base}.{round_}"
        locks = [make_lock(uri, so, f"run-{i}") for i in range(6)]
        barrier = threading.Barrier(len(locks))
        won = [False] * len(locks)

        def race(i: int) -> None:
            barrier.wait()
            won[i] = locks[i].acquire(0)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(len(locks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(won) == 1, won
        winner = won.index(True)
        assert read_holder(*open_store(uri, so))["run_id"] == f"run-{winner}"
        assert all(lk.holder["run_id"] == f"run-{winner}" for i, lk in enumerate(locks) if i != winner)
        locks[winner].release()


_RACER = """
import json, sys, time
from pipeline.etl.lock import RunLock, open_store
uri, so, start_at, run_id, tried, racers = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:7]
store, path = open_store(uri, so)
lock = RunLock(store, path, run_id=run_id, stale_after_s=60, heartbeat_s=10)
time.sleep(max(0.0, start_at - time.time()))
won = lock.acquire(0)
with open(tried, "a") as f:
    f.write(run_id + "\\n")
print("WON" if won else "LOST", flush=True)
if won:
    deadline = time.time() + 30
    while len(open(tried).read().split()) < int(racers) and time.time() < deadline:
        time.sleep(0.05)  # hold until every racer has tried
    lock.release()
"""


def test_racing_processes_exactly_one_wins(lock_uri, tmp_path):
    uri, so = lock_uri
    start_at = time.time() + 3  # about when every interpreter has imported; a late one just loses
    tried = tmp_path / "tried"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, uri, json.dumps(so), str(start_at), f"proc-{i}", str(tried), "3"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [o[0].strip() for o in outs]
    assert sorted(results) == ["LOST", "LOST", "WON"], results
    assert read_holder(*open_store(uri, so)) is None


def test_stale_lock_is_taken_over_by_exactly_one(lock_uri):
    uri, so = lock_uri
    write_dead_holder(uri, so, age_s=3600)
    locks = [make_lock(uri, so, f"run-{i}") for i in range(5)]
    barrier = threading.Barrier(len(locks))
    won = [False] * len(locks)

    def race(i: int) -> None:
        barrier.wait()
        won[i] = locks[i].acquire(0)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(locks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1, won
    winner = locks[won.index(True)]
    assert winner.took_over["run_id"] == "dead-run"
    winner.release()
    assert read_holder(*open_store(uri, so)) is None


def test_a_fresh_lock_is_not_taken_over(lock_uri):
    uri, so = lock_uri
    write_dead_holder(uri, so, age_s=5)
    lk = make_lock(uri, so, "run-x", stale_after_s=60)
    assert not lk.acquire(0)
    assert lk.holder["run_id"] == "dead-run"


def test_heartbeat_keeps_a_long_run_alive(lock_uri):
    uri, so = lock_uri
    a = make_lock(uri, so, "run-a", stale_after_s=1.0, heartbeat_s=0.2)
    assert a.acquire(0)
    first = read_holder(*open_store(uri, so))["heartbeat_epoch"]
    time.sleep(2.0)  # twice stale_after_s: without heartbeats the lock would look dead
    b = make_lock(uri, so, "run-b", stale_after_s=1.0, heartbeat_s=0.2)
    assert not b.acquire(0)
    assert b.holder["heartbeat_epoch"] > first
    a.confirm()
    a.release()


def test_a_waiting_run_gets_the_lock_when_released(lock_uri):
    uri, so = lock_uri
    a = make_lock(uri, so, "run-a")
    assert a.acquire(0)
    threading.Timer(1.0, a.release).start()
    b = make_lock(uri, so, "run-b", poll_s=0.2)
    t = time.monotonic()
    assert b.acquire(wait_s=20)
    assert 0.9 <= time.monotonic() - t < 10
    b.release()


def test_a_holder_taken_over_cannot_commit_or_release_the_new_lock(lock_uri):
    uri, so = lock_uri
    slow = make_lock(uri, so, "run-slow", stale_after_s=0.5, heartbeat_s=100)  # heartbeats stalled
    assert slow.acquire(0)
    time.sleep(0.7)
    new = make_lock(uri, so, "run-new", stale_after_s=0.5, heartbeat_s=100)
    assert new.acquire(0) and new.took_over["run_id"] == "run-slow"
    with pytest.raises(LockLost):
        slow.confirm()
    slow.release()  # must leave the new holder's lock alone
    assert read_holder(*open_store(uri, so))["run_id"] == "run-new"
    new.confirm()
    new.release()
    assert read_holder(*open_store(uri, so)) is None


def test_an_unreadable_lock_ages_by_its_storage_time(lock_uri):
    uri, so = lock_uri
    store, path = open_store(uri, so)
    assert store.create(path, b"not json") is not None
    lk = make_lock(uri, so, "run-x", stale_after_s=60)
    assert not lk.acquire(0)
    assert lk.holder.get("unreadable")
