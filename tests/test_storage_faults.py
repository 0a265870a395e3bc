"""Storage faults between the pipeline and a real S3 server (moto on loopback), injected by a
reverse proxy (tests/fault_proxy.py): transient ones are retried and the work completes, permanent
ones fail their row at once, and a fault that never stops fails in bounded time with its cause."""

from __future__ import annotations

import io
import json
import pickle
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.audio.decode import AudioError, decode_audio
from pipeline.io import storage
from tests.conftest import SPEECH
from tests.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[1]
BUCKET = "faults-unit"
KEY = f"/{BUCKET}/en_wav16k.wav"
URI = f"s3:/{KEY}"
CLIP_S = 3.09  # en_wav16k.wav


@pytest.fixture(scope="module")
def proxy(s3):
    fs = s3.fs()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put_file(str(SPEECH / "en_wav16k.wav"), KEY.lstrip("/"))
    with FaultProxy(s3.url) as p:
        yield p


@pytest.fixture(autouse=True)
def _clean_rules(request):
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").clear()


def _options(proxy: FaultProxy, retries: int | None = None, attempts: int | None = None, read_timeout: float | None = None) -> dict:
    """The user's storage_options: the endpoint, plus any retry settings a test shrinks."""
    options: dict = {"endpoint_url": proxy.url, "key": "testing", "secret": "testing"}
    config: dict = {}
    if retries is not None:
        options["retries"] = retries
    if attempts is not None:
        config["retries"] = {"mode": "standard", "total_max_attempts": attempts}
    if read_timeout is not None:
        config["read_timeout"] = read_timeout
    if config:
        options["config_kwargs"] = config
    return options


def _decode(proxy: FaultProxy, **settings):
    started = time.monotonic()
    out = decode_audio(URI, storage_options=_options(proxy, **settings))
    return out, time.monotonic() - started


def _decode_error(proxy: FaultProxy, **settings) -> tuple[AudioError, float]:
    started = time.monotonic()
    with pytest.raises(AudioError) as info:
        decode_audio(URI, storage_options=_options(proxy, **settings))
    return info.value, time.monotonic() - started


def _gets(proxy: FaultProxy) -> int:
    return proxy.count(KEY + "$", method="GET")


# --- the defaults ----------------------------------------------------------------------------------


def test_s3_defaults_fill_in_and_never_override(monkeypatch):
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    filled = storage.options_for("s3://b/k", {"endpoint_url": "http://x"})
    assert filled["endpoint_url"] == "http://x"
    assert filled["retries"] == storage.S3_RETRIES
    assert filled["config_kwargs"] == storage.S3_CONFIG
    mine = {"retries": 7, "config_kwargs": {"read_timeout": 99, "retries": {"max_attempts": 1}}}
    kept = storage.options_for("s3://b/k", mine)
    assert kept["retries"] == 7
    assert kept["config_kwargs"] == {"read_timeout": 99, "connect_timeout": 5, "retries": {"max_attempts": 1}}
    assert mine == {"retries": 7, "config_kwargs": {"read_timeout": 99, "retries": {"max_attempts": 1}}}  # not mutated
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")
    assert storage.options_for("s3://b/k")["config_kwargs"]["retries"] == {"mode": "standard"}
    assert storage.options_for("gs://b/k", {"token": "anon"}) == {"token": "anon"}
    assert storage.options_for("/local/path") == {}


def test_retry_setting_survives_pickling_into_a_worker(s3):
    fs, path = storage.fsspec_fs("s3://bucket/key", {**s3.storage_options, "retries": 2})
    assert path == "bucket/key" and fs.retries == 2
    assert pickle.loads(pickle.dumps(fs)).retries == 2  # how Ray ships it to tasks
    with pytest.raises(ValueError, match="retries"):
        storage.fsspec_fs("s3://bucket/key", {**s3.storage_options, "retries": 0, "skip_instance_cache": True})


# --- transient faults: retried, the read completes ------------------------------------------------


def test_503_slowdown_twice_then_ok(proxy):
    proxy.fail(KEY + "$", "SlowDown", times=2, method="GET")
    out, _ = _decode(proxy)
    assert out.duration_s == pytest.approx(CLIP_S, abs=0.01)
    assert _gets(proxy) == 3  # botocore's standard retries; s3fs did not add its own on top


def test_503_on_head_then_ok(proxy):
    proxy.fail(KEY + "$", "ServiceUnavailable", times=2, method="HEAD")
    out, _ = _decode(proxy)
    assert out.duration_s == pytest.approx(CLIP_S, abs=0.01)
    assert proxy.count(KEY + "$", method="HEAD") == 3


def test_slow_response_within_the_read_timeout(proxy):
    proxy.delay(KEY + "$", 1.0, method="GET")
    out, elapsed = _decode(proxy, read_timeout=5)
    assert out.duration_s == pytest.approx(CLIP_S, abs=0.01)
    assert _gets(proxy) == 1 and elapsed >= 1.0


@pytest.mark.parametrize("body_bytes", [None, 2000], ids=["before-headers", "mid-body"])
def test_stall_past_the_read_timeout_is_retried(proxy, body_bytes):
    proxy.delay(KEY + "$", 30, method="GET", body_bytes=body_bytes)
    out, elapsed = _decode(proxy, read_timeout=1)
    assert out.duration_s == pytest.approx(CLIP_S, abs=0.01)
    assert _gets(proxy) == 2 and elapsed < 15


@pytest.mark.parametrize("body_bytes", [None, 2000], ids=["before-headers", "mid-body"])
def test_dropped_connection_is_retried(proxy, body_bytes):
    proxy.drop(KEY + "$", method="GET", body_bytes=body_bytes)
    out, _ = _decode(proxy)
    assert out.duration_s == pytest.approx(CLIP_S, abs=0.01)
    assert _gets(proxy) == 2


# --- permanent faults: one request, a failed row with its cause -----------------------------------


def test_403_is_access_denied_after_one_request(proxy):
    proxy.deny(KEY + "$")
    err, elapsed = _decode_error(proxy)
    assert err.category == "access_denied"
    assert proxy.count(KEY + "$") == 1 and elapsed < 5


def test_404_is_not_found_after_one_request(proxy):
    proxy.missing(KEY + "$")
    err, elapsed = _decode_error(proxy)
    assert err.category == "not_found"
    # s3fs then lists the key as a prefix (is it a directory?): one request to the bucket, not a retry
    assert proxy.count(KEY + "$") == 1 and elapsed < 5


# --- faults that never stop: bounded attempts and time, the real cause ----------------------------


@pytest.mark.parametrize("code", ["SlowDown", "InternalError"])
def test_endless_5xx_is_a_storage_error_in_bounded_time(proxy, code):
    proxy.fail(KEY + "$", code, method="GET")
    err, elapsed = _decode_error(proxy, retries=2, attempts=2)
    # Not what libsndfile makes of a short read (unsupported_format): the storage failure itself.
    assert err.category == "storage_error"
    # botocore's 2 attempts; s3fs repeats those only for SlowDown
    assert _gets(proxy) == (4 if code == "SlowDown" else 2)
    assert elapsed < 15


def test_endless_stall_is_a_storage_error_in_bounded_time(proxy):
    proxy.delay(KEY + "$", 30, method="GET", times=None)
    err, elapsed = _decode_error(proxy, retries=1, attempts=2, read_timeout=1)
    assert err.category == "storage_error" and "ReadTimeout" in str(err)
    assert _gets(proxy) == 2 and elapsed < 15


def test_endless_drops_mid_body_are_a_storage_error(proxy):
    proxy.drop(KEY + "$", method="GET", body_bytes=2000, times=None)
    err, elapsed = _decode_error(proxy, retries=3)
    assert err.category == "storage_error"
    assert _gets(proxy) == 3 and elapsed < 15


# --- the other storage users: writes, pyarrow reads, model copies ---------------------------------


def test_json_write_retries_a_503_put(proxy, s3):
    proxy.fail(r"/state\.json$", "SlowDown", times=1, method="PUT")
    storage.write_json(f"s3://{BUCKET}/w/state.json", {"ok": 1}, _options(proxy))
    assert proxy.count(r"/state\.json$", method="PUT") == 2
    assert json.loads(s3.fs().cat_file(f"{BUCKET}/w/state.json")) == {"ok": 1}


def test_arrow_read_survives_a_dropped_body(proxy, s3):
    import pyarrow as pa

    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(5000))}), buf)
    s3.fs().pipe_file(f"{BUCKET}/t/x.parquet", buf.getvalue())
    proxy.drop(r"/t/x\.parquet$", method="GET", body_bytes=1000)
    fs, path = storage.arrow_fs(f"s3://{BUCKET}/t/x.parquet", _options(proxy))
    assert pq.read_table(path, filesystem=fs).column("x").to_pylist() == list(range(5000))
    assert proxy.requests and any(r.fault == "drop" for r in proxy.requests)


def test_model_copy_resumes_a_dropped_download(proxy, s3, tmp_path):
    from actors.model_source import resolve_model

    weights = bytes(range(256)) * 1200
    s3.fs().pipe_file(f"{BUCKET}/m/tiny/config.json", b"{}")
    s3.fs().pipe_file(f"{BUCKET}/m/tiny/model.safetensors", weights)
    proxy.drop(r"/m/tiny/model\.safetensors$", method="GET", body_bytes=100_000)
    proxy.fail(r"/m/tiny/config\.json$", "SlowDown", times=1, method="GET")
    local = resolve_model(f"s3://{BUCKET}/m/tiny", str(tmp_path), _options(proxy))
    assert (Path(local) / "model.safetensors").read_bytes() == weights
    assert proxy.count(r"/m/tiny/model\.safetensors$", method="GET") == 2  # the second resumes at the cut


# --- end to end: the transcribe job through the faulty proxy --------------------------------------


E2E_ROWS = {  # id -> (audio file, fault on its GET)
    "slowdown": ("en_wav16k.wav", "503 x2"),
    "slow": ("de_wav8k.wav", "stalls past the read timeout once"),
    "dropped": ("fr_mp3_22k.mp3", "connection dropped mid-body once"),
    "clean": ("de_flac44k_stereo.flac", None),
    "denied": ("en_opus48k.opus", "403"),
    "missing": ("does_not_exist.wav", "404: not uploaded"),
}


def _read_parquet_dir(fs, prefix: str) -> list[dict]:
    rows = []
    for key in sorted(fs.find(prefix)) if fs.exists(prefix) else []:
        if key.endswith(".parquet"):
            rows.extend(pq.read_table(io.BytesIO(fs.cat_file(key))).to_pylist())
    return rows


@pytest.fixture(scope="module")
def faulty_run(s3, ray_session, tiny_asr_dir, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.transcribe import run

    fs = s3.fs()
    for bucket in ("faults-corpus", "faults-models", "faults-out"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    for path in sorted(Path(tiny_asr_dir).iterdir()):
        fs.put_file(str(path), f"faults-models/tiny/{path.name}")
    rows = []
    for row_id, (name, _) in E2E_ROWS.items():
        if (SPEECH / name).exists():
            fs.put_file(str(SPEECH / name), f"faults-corpus/audio/{name}")
        rows.append({"id": row_id, "audio": f"audio/{name}"})
    fs.pipe_file("faults-corpus/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())

    audio = "^/faults-corpus/audio/"
    with FaultProxy(s3.url) as proxy:
        rules = {
            "manifest 503": proxy.fail(r"^/faults-corpus/manifest\.jsonl$", "SlowDown", times=2, method="GET"),
            "audio 503": proxy.fail(audio + r"en_wav16k\.wav$", "SlowDown", times=2, method="GET"),
            "audio stall": proxy.delay(audio + r"de_wav8k\.wav$", 20, method="GET"),
            "audio drop": proxy.drop(audio + r"fr_mp3_22k\.mp3$", method="GET", body_bytes=4096),
            "audio 403": proxy.deny(audio + r"en_opus48k\.opus$"),
            "model drop": proxy.drop(r"^/faults-models/tiny/model\.safetensors$", method="GET", body_bytes=100_000),
            "results 503": proxy.fail(r"^/faults-out/run/results/.*\.parquet$", "SlowDown", times=1, method="PUT"),
            "failed 503": proxy.fail(r"^/faults-out/run/failed/.*\.parquet$", "SlowDown", times=1, method="PUT"),
            "metrics 503": proxy.fail(r"^/faults-out/run/metrics\.json$", "SlowDown", times=1, method="PUT"),
        }
        # A short read timeout so the stalled GET is retried within seconds.
        options = {**s3.storage_options, "endpoint_url": proxy.url, "config_kwargs": {"read_timeout": 4}}
        cfg = load_config(
            REPO / "configs" / "transcribe.yaml",
            [
                "input.manifest=s3://faults-corpus/manifest.jsonl",
                f"input.storage_options={json.dumps(options)}",
                "output.path=s3://faults-out/run",
                f"output.storage_options={json.dumps(options)}",
                "output.overwrite=true",
                "asr.model=s3://faults-models/tiny",
                f"asr.model_cache_dir={tmp_path_factory.mktemp('model-cache')}",
                "asr.max_new_tokens=8",
                "asr.engine.max_model_len=2048",
                "asr.engine.enforce_eager=true",
                "decode.batch_size=2",
                "score.enabled=false",
            ],
        )
        started = time.monotonic()
        result = run(cfg)
        wall_s = time.monotonic() - started
        requests = proxy.requests
    return {
        "result": result,
        "wall_s": wall_s,
        "rules": {name: rule.hits for name, rule in rules.items()},
        "requests": requests,
        "results": _read_parquet_dir(fs, "faults-out/run/results"),
        "failed": _read_parquet_dir(fs, "faults-out/run/failed"),
        "metrics": json.loads(fs.cat_file("faults-out/run/metrics.json")),
    }


def test_job_completes_through_every_fault(faulty_run):
    hits = faulty_run["rules"]
    assert all(hits[name] >= 1 for name in hits), hits  # every fault was met on the way
    r = faulty_run["result"]
    assert (r.rows_read, r.rows_written, r.rows_failed) == (6, 4, 2)
    assert r.rows_read == r.rows_written + r.rows_failed
    assert faulty_run["metrics"]["rows_read"] == 6


def test_transient_faults_leave_every_row_in_results_once(faulty_run):
    ids = [row["id"] for row in faulty_run["results"]]
    assert sorted(ids) == ["clean", "dropped", "slow", "slowdown"]
    for row in faulty_run["results"]:
        assert row["error"] is None and isinstance(row["text"], str)
        assert row["duration_s"] > 0


def test_permanent_faults_fail_their_rows_once_without_retries(faulty_run):
    failed = {row["id"]: row for row in faulty_run["failed"]}
    assert set(failed) == {"denied", "missing"}
    assert failed["denied"]["error_stage"] == "decode" and failed["denied"]["error"].startswith("access_denied:")
    assert failed["missing"]["error_stage"] == "decode" and failed["missing"]["error"].startswith("not_found:")
    for name in ("en_opus48k.opus", "does_not_exist.wav"):
        seen = [q for q in faulty_run["requests"] if q.path == f"/faults-corpus/audio/{name}"]
        assert len(seen) == 1, seen
    assert faulty_run["metrics"]["failures_by_reason"] == {"decode:access_denied": 1, "decode:not_found": 1}
