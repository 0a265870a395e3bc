"""No process outlives its job. Real processes, no mocks: plain process trees for the watcher
itself. A real `python -m jobs.transcribe` driver with its own embedded Ray and vLLM engine,
SIGKILLed mid-run, leaves nothing behind: tests/test_resume.py (its killed run is that job).

Processes are told apart by pid and start time (``/proc/<pid>/stat``), so a pid reused meanwhile
never counts as a survivor; a zombie (exited, not yet reaped) counts as gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.watchdog import LINEAGE_ENV, WATCHER_NAME, _signal, watch

REPO = Path(__file__).resolve().parents[1]


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, parent pid, start time) or None; read here, not through the module under test."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    return head.partition(b"(")[2].decode(), fields[0].decode(), int(fields[1]), int(fields[19])


def _alive(pid: int, start: int) -> bool:
    info = _stat(pid)
    return info is not None and info[3] == start and info[1] not in "ZXx"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` now: pid -> start time (one full pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None and info[1] not in "ZXx":
            children.setdefault(info[2], []).append(int(entry))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found and (info := _stat(child)) is not None:
                found[child] = info[3]
                stack.append(child)
    return found


def _wait_gone(procs: dict[int, int], timeout: float) -> tuple[float, dict[int, int]]:
    """Seconds until none of ``procs`` is alive (or the timeout), and those still alive then."""
    t0 = time.monotonic()
    while True:
        left = {p: s for p, s in procs.items() if _alive(p, s)}
        elapsed = time.monotonic() - t0
        if not left or elapsed > timeout:
            return elapsed, left
        time.sleep(0.05)


def _watchers_of(pids: set[int]) -> dict[int, int]:
    """Live watchers whose watched pid is one of ``pids``."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None and info[0] == WATCHER_NAME:
            # python -I -S .../watchdog.py PID START GRACE INTERVAL
            argv = _cmdline(int(entry)).split()
            if len(argv) >= 5 and argv[3].endswith("watchdog.py") and int(argv[4]) in pids:
                out[int(entry)] = info[3]
    return out


def _kill_all(procs: dict[int, int]) -> None:
    for pid, start in procs.items():
        if _alive(pid, start):
            _signal(pid, start, signal.SIGKILL)


# A parent as the engine's actor process is one: it starts its own watcher, then a tree of
# children (a sleeping child, a child with a grandchild, one in its own session, one that ignores
# SIGTERM, and a grandchild orphaned before the parent dies), prints their pids and waits.
_PARENT = """
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.watchdog import watch
watcher = watch(grace_s=1.0, interval_s=0.1)
py = sys.executable
kids = [
    subprocess.Popen(["sleep", "300"]),
    subprocess.Popen([py, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"]),
    subprocess.Popen(["sleep", "300"], start_new_session=True),
]
stubborn = subprocess.Popen(
    [py, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(300)"],
    stdout=subprocess.PIPE,
)
stubborn.stdout.readline()
# Its parent (sh) lives a second, long enough to be recorded, then the sleep is init's child.
orphaner = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; sleep 1"], stdout=subprocess.PIPE, text=True)
orphan = int(orphaner.stdout.readline())
print(json.dumps({"watcher": watcher, "orphaner": orphaner.pid, "orphan": orphan}), flush=True)
if sys.argv[2] == "exit":
    orphaner.wait()
    sys.exit(0)
time.sleep(300)
"""


def _start_parent(mode: str) -> tuple[subprocess.Popen, dict]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(REPO), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    info = json.loads(parent.stdout.readline())
    return parent, info


def test_a_killed_process_tree_ends_with_it_and_nothing_else_does():
    bystander = subprocess.Popen(["sleep", "300"])  # the test's own child: not the parent's descendant
    parent, info = _start_parent("wait")
    orphan = {info["orphan"]: _stat(info["orphan"])[3]}
    tree: dict[int, int] = {}
    try:
        assert info["watcher"] is not None
        watcher = {info["watcher"]: _stat(info["watcher"])[3]}
        # Let the orphaner exit: its sleep is then nobody's descendant in /proc, only in the record.
        while (orphaner := _stat(info["orphaner"])) is not None and orphaner[1] not in "ZXx":
            time.sleep(0.05)
        time.sleep(0.3)  # a few recording rounds
        tree = descendants(parent.pid)
        assert len(tree) == 5 and info["orphan"] not in tree, tree
        assert info["watcher"] not in tree, "the watcher must not be the parent's child (Ray kills those)"

        parent.kill()
        parent.wait()
        # SIGTERM right away, SIGKILL after the 1 s grace for the one that ignores SIGTERM.
        took, left = _wait_gone({**tree, **orphan}, timeout=10)
        assert not left, f"left after {took:.1f}s: {[(p, _cmdline(p)) for p in left]}"
        assert 0.9 < took < 4, took
        took, left = _wait_gone(watcher, timeout=5)
        assert not left, "the watcher did not exit once its work was done"
        assert bystander.poll() is None, "a process that is not a descendant was ended"
    finally:
        _kill_all({**tree, **orphan, **descendants(parent.pid)})
        parent.kill()
        bystander.kill()
        bystander.wait()


# A parent that is recorded once, then starts a process whose own parent exits at once: the
# process is init's child before any record sees it, as a Ray worker is that the raylet started
# a moment before the driver's SIGKILL took the raylet with it.
_LATE = """
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.watchdog import watch
watcher = watch(grace_s=1.0, interval_s=120)  # one record now, the next in two minutes
late = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, text=True)
orphan = int(late.stdout.readline())
late.wait()
print(watcher, orphan, flush=True)
time.sleep(300)
"""


def test_a_process_started_after_the_last_record_ends_with_its_job():
    # Both carry an older mark: the parent's own is added to it; the bystander has only the old one.
    env = {**os.environ, LINEAGE_ENV: "1.1"}
    bystander = subprocess.Popen(["sleep", "300"], env=env)
    parent = subprocess.Popen([sys.executable, "-c", _LATE, str(REPO)], stdout=subprocess.PIPE, env=env, text=True)
    watcher, orphan = map(int, parent.stdout.readline().split())
    procs = {orphan: _stat(orphan)[3], watcher: _stat(watcher)[3]}
    try:
        assert orphan not in descendants(parent.pid), "the late process must be nobody's descendant here"
        mark = Path(f"/proc/{orphan}/environ").read_bytes().split(b"\0")
        assert f"{LINEAGE_ENV}=1.1,{parent.pid}.{_stat(parent.pid)[3]}".encode() in mark
        parent.kill()
        parent.wait()
        took, left = _wait_gone(procs, timeout=10)
        assert not left, f"left after {took:.1f}s: {[(p, _cmdline(p)) for p in left]}"
        assert bystander.poll() is None, "a process with another job's mark was ended"
    finally:
        _kill_all(procs)
        parent.kill()
        bystander.kill()
        bystander.wait()


def test_a_normal_exit_ends_what_it_left_behind_and_says_nothing():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(REPO), "exit"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    info = json.loads(parent.stdout.readline())
    tree = descendants(parent.pid)
    watcher = {info["watcher"]: _stat(info["watcher"])[3]}
    try:
        # The pipes close once every process holding them (the left-behind children) is gone.
        out, err = parent.communicate(timeout=30)
        assert parent.returncode == 0
        assert out == "" and err == "", (out, err)
        took, left = _wait_gone({**tree, **watcher}, timeout=10)
        assert not left, [(p, _cmdline(p)) for p in left]
    finally:
        _kill_all(tree)
        parent.kill()


def test_one_small_watcher_per_process_that_leaves_when_its_process_has():
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        first = watch(sleeper.pid, interval_s=0.1)
        assert first is not None and watch(sleeper.pid) == first
        assert _stat(first)[0] == WATCHER_NAME
        rss_kb = int(Path(f"/proc/{first}/status").read_text().split("VmRSS:")[1].split()[0])
        assert rss_kb < 24 * 1024, rss_kb
        start = _stat(first)[3]
        sleeper.kill()
        sleeper.wait()
        took, left = _wait_gone({first: start}, timeout=5)
        assert not left and took < 2, took
    finally:
        sleeper.kill()


def test_a_signal_goes_only_to_the_process_recorded():
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        start = _stat(sleeper.pid)[3]
        # Same pid, another start time: a reused pid, not the recorded process.
        assert not _signal(sleeper.pid, start + 1, signal.SIGKILL)
        time.sleep(0.1)
        assert sleeper.poll() is None
        assert _signal(sleeper.pid, start, signal.SIGTERM)
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        sleeper.kill()
