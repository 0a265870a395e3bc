"""The cluster path as users take it: a head started with the real `ray start --head` CLI, the
transcribe job sent to it with the Job Submission SDK and a `working_dir`, and Ray 2.60's token
authentication as that head sets it up.

Ray 2.60 (ray/_private/authentication/authentication_token_setup.py): `ray start --head` with
RAY_AUTH_MODE unset turns token authentication on when it finds a token (RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which `ray get-auth-token --generate` and any local
`ray.init()` write), else starts unauthenticated with a warning. A client sends the token only
with RAY_AUTH_MODE=token in its own environment (http_token_authentication.py); without it a
submission is refused with "Authentication required", even beside the token file.

`ray stop` is not used: it signals every Ray process on the machine by name (scripts.py `stop`),
other test sessions' included. The head runs in a session of its own and is ended with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import SPEECH

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/ (not resolved: that would leave the venv)
RAY = str(BIN / "ray")
MANIFEST_ROWS = sum(1 for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip())
# Left out of the upload besides what .gitignore already keeps out (.venv/, build/, out/): history,
# training checkpoints, the aligner and the synthetic set (the job reads none of them).
EXCLUDES = [
    "/.git", "/.venv", "/build", "/out", "/training", "/.hypothesis", "/.pytest_cache", "/.ci",
    "/tests/assets/synth", "/models/tiny-qwen3-aligner-synth", "__pycache__", "*.egg-info",
]  # fmt: skip
JOB_TIMEOUT_S = 600
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sessions: set[int]) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) in sessions and not _is_zombie(int(entry)):
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _pids_naming(path: str) -> list[int]:
    """Processes whose command line names ``path`` (a worker that left the head's session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if path in cmdline and not _is_zombie(int(entry)):
                pids.append(int(entry))
    return pids


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _end_head(proc: subprocess.Popen, temp_dir: str) -> list[int]:
    """What `ray stop` does (SIGTERM, a grace period, SIGKILL), but only to this head's processes:
    its session, the sessions its descendants made (the job supervisor starts each job's driver in
    a session of its own) and anything naming its temp dir. Returns the pids still alive after."""
    sessions = {proc.pid}

    def ours() -> list[int]:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    sessions.add(os.getsid(child.pid))
                except (ProcessLookupError, PermissionError):
                    pass
        except psutil.NoSuchProcess:
            pass
        return sorted(set(_session_pids(sessions)) | set(_pids_naming(temp_dir)))

    _signal(ours(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while ours() and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(3):
        left = ours()
        if not left:
            break
        _signal(left, signal.SIGKILL)
        time.sleep(0.5)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return ours()


def _head_env(home: Path) -> dict[str, str]:
    """The test's environment without any Ray setting of its own (the suite's embedded Ray sets
    RAY_AUTH_MODE in this process), with the venv on PATH as on a head whose image has the deps,
    and a HOME of its own: ~/.ray/auth_token is this head's token, not the machine user's. The
    user's caches stay (a fresh matplotlib font cache alone costs the report 5-20 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k.startswith("RAY_DATA_")}
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    env.setdefault("XDG_CONFIG_HOME", str(Path.home() / ".config"))
    env["HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(BIN.parent)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@dataclass
class Head:
    address: str  # the dashboard (Jobs API), as `ray job submit --address` takes it
    token: str
    home: Path  # HOME of the head's user: the token is at home/.ray/auth_token
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    base = tmp_path_factory.mktemp("head")
    home, log = base / "home", base / "ray-start.log"
    # Ray's Unix socket paths under --temp-dir must stay under 108 bytes: a short folder of its
    # own in /tmp (pytest's, under an xdist worker, is too deep).
    temp_dir = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    home.mkdir()
    env = _head_env(home)
    # The documented step before `ray start`: writes ~/.ray/auth_token unless one exists.
    gen = _cli(["get-auth-token", "--generate"], env)
    assert gen.returncode == 0, gen.stderr[-2000:]
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert token and gen.stdout.strip() == token

    dashboard_port = _free_port()
    command = [
        RAY, "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
        f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
        "--num-cpus=2", "--object-store-memory=500000000", f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    address = f"http://127.0.0.1:{dashboard_port}"
    with log.open("wb") as out:
        # A session of its own: everything the head starts (GCS, raylet, dashboard, workers, the
        # job's driver, vLLM's engine processes) stays in it and is ended with it.
        proc = subprocess.Popen(command, env=env, cwd=base, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"ray start exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            try:
                with _HTTP.open(f"{address}/api/authentication_mode", timeout=5) as r:
                    mode = json.loads(r.read())["authentication_mode"]
                break
            except (OSError, ValueError):
                assert time.monotonic() < deadline, f"no dashboard at {address}:\n{log.read_text()[-4000:]}"
                time.sleep(0.5)
        # Ray 2.60's default with a token present and RAY_AUTH_MODE unset.
        assert mode == "token", log.read_text()[-4000:]
        yield Head(address, token, home, env, log)
    finally:
        left = _end_head(proc, str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"head processes left after teardown: {left}"


def test_head_refuses_a_client_without_the_token(head):
    # The Jobs API itself.
    with pytest.raises(urllib.error.HTTPError) as e:
        _HTTP.open(f"{head.address}/api/jobs/", timeout=10)
    assert e.value.code == 401
    request = urllib.request.Request(f"{head.address}/api/jobs/", headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as e:
        _HTTP.open(request, timeout=10)
    assert e.value.code == 403
    # The user report: the CLI on the head's own machine, its token file right there, but no
    # RAY_AUTH_MODE=token: it sends no token and is refused.
    proc = _cli(["job", "list", "--address", head.address], head.env)
    assert proc.returncode != 0
    assert "Authentication required" in proc.stdout + proc.stderr, proc.stderr[-2000:]


@dataclass
class Submitted:
    job_id: str
    status: str
    logs: str
    out: Path
    wall_s: float


def _submit(client, deadline: float, **kwargs) -> str:
    """``client.submit_job(**kwargs)``, tried again while the head's job agent is still starting."""
    while True:
        try:
            return client.submit_job(**kwargs)
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(2)
        try:
            return client.get_job_info(kwargs["submission_id"]).submission_id  # the last try got through
        except Exception:
            pass


@pytest.fixture(scope="module")
def submitted(head, tmp_path_factory) -> Submitted:
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path_factory.mktemp("submit") / "out"
    entrypoint = " ".join([
        "python -m jobs.transcribe --config configs/transcribe.yaml",
        "--set asr.model=models/tiny-qwen3-asr-synth",
        "--set asr.max_chunk_s=5",
        "--set asr.max_new_tokens=8",
        "--set asr.engine.max_model_len=2048",
        "--set asr.engine.enforce_eager=true",  # torch.compile on 2 CPU cores costs a minute
        f"--set output.path={out}",
    ])  # fmt: skip
    runtime_env = {
        "working_dir": str(REPO),
        "excludes": EXCLUDES,
        "env_vars": {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
    }
    # The SDK's own way to carry the token: an Authorization header (it adds one itself only when
    # this process has RAY_AUTH_MODE=token, which the test session's own Ray may or may not have set).
    client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {head.token}"})
    start = time.monotonic()
    job_id = _submit(client, start + 60, entrypoint=entrypoint, runtime_env=runtime_env, submission_id=f"transcribe-{os.getpid()}")
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while (status := client.get_job_status(job_id)) not in terminal:
        if time.monotonic() - start > JOB_TIMEOUT_S:
            client.stop_job(job_id)
            pytest.fail(f"job still {status} after {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job_id)[-6000:]}")
        time.sleep(1)
    wall_s = time.monotonic() - start
    print(f"\nsubmitted job {job_id}: {status} in {wall_s:.1f} s")
    return Submitted(job_id, status.value, client.get_job_logs(job_id), out, wall_s)


def test_submitted_job_succeeds_and_logs_its_summary(submitted):
    assert submitted.status == "SUCCEEDED", submitted.logs[-6000:]
    assert "=== transcribe summary ===" in submitted.logs
    # jobs/cli.py's last line: "wrote N results and M failed rows to <output.path>".
    summary = re.findall(rf"^wrote (\d+) results and (\d+) failed rows to {re.escape(str(submitted.out))}$", submitted.logs, re.MULTILINE)
    assert summary, submitted.logs[-4000:]
    assert int(summary[-1][0]) + int(summary[-1][1]) == MANIFEST_ROWS


def test_outputs_hold_every_manifest_row(submitted):
    assert submitted.status == "SUCCEEDED", submitted.logs[-6000:]
    results = pq.read_table(submitted.out / "results") if (submitted.out / "results").exists() else None
    failed = pq.read_table(submitted.out / "failed") if (submitted.out / "failed").exists() else None
    ids = (results.column("id").to_pylist() if results is not None else []) + (
        failed.column("id").to_pylist() if failed is not None else []
    )
    assert len(ids) == len(set(ids)) == MANIFEST_ROWS
    metrics = json.loads((submitted.out / "metrics.json").read_text())
    assert metrics["rows_read"] == MANIFEST_ROWS
    assert metrics["rows_written"] + metrics["rows_failed"] == MANIFEST_ROWS
    assert metrics["config"]["asr"]["max_chunk_s"] == 5


def test_cli_with_the_readme_settings_reads_the_job(head, submitted, tmp_path):
    # What README.md tells a user on another machine: RAY_AUTH_MODE=token and the head's token in
    # RAY_AUTH_TOKEN (this HOME has no token file).
    env = {**head.env, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token}
    proc = _cli(["job", "logs", submitted.job_id, "--address", head.address], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"failed rows to {submitted.out}" in proc.stdout
