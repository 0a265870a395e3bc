"""A worker node removed mid-run (ray.cluster_utils.Cluster, in a process of its own: see
tests/node_loss_job.py) loses no row: the ASR actor is replaced on the other node.
"""

from __future__ import annotations

import json
import os
import signal

from tests.test_crashes import ROWS, _every_id_once, _manifest
from tests.test_transcribe_e2e import REPO


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
    assert report["removed_node"], ("the ASR actor was on no worker node", report)
    assert report["at_removal"] < ROWS, "the node left after the last row"
    assert report["finished"] and not report["errors"], report
    assert report["alive_nodes"] == 2
    assert report["rows"] == [ROWS, ROWS, 0]
    assert _every_id_once(out) == ids
