"""Credentials stay out of every output and log; a manifest cannot choose what the workers read or
where the job writes, and nothing in it is executed.

The end-to-end test runs `python -m jobs.transcribe` as a subprocess (its own embedded Ray, the
real vLLM engine on the tiny checkpoint, manifest and outputs on the S3 server on loopback, one
row over HTTP from a server on loopback) with canary credentials in the config, in the URLs of
manifest rows and in the environment, then searches every output file, its stdout/stderr and
Ray's whole session directory for them.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audio.decode import AudioError, check_source, decode_audio, host_allowed
from pipeline.audio.stage import decode_batch
from pipeline.config import ConfigError, load_config
from pipeline.io.manifest import normalize_manifest
from pipeline.io.storage import safe_name
from pipeline.redact import REDACTED, is_secret_key, redact, redact_text, redact_url, secret_values
from tests.conftest import SPEECH

REPO = Path(__file__).resolve().parents[1]
WAV = SPEECH / "en_wav16k.wav"

# Distinct values per place, so a leak says where it came from (AKIA + 16 characters is the shape
# of a real access key id).
CANARY = {
    "in_key": "AKIACANARYINPUT00000",
    "in_secret": "canary-in-secret-8c1f2a9d7e",
    "in_token": "canary-in-session-token-5b7d1e3a",
    "out_key": "AKIACANARYOUTPUT0000",
    "out_secret": "canary-out-secret-3e9a6c0b",
    "env_key": "AKIACANARYENVIRON000",
    "env_secret": "canary-env-secret-1d4f7a2c",
    "env_token": "canary-env-session-token-9e2b",
    "hf_token": "hf_canaryHubToken1234567890",
    "url_user": "canaryuser",
    "url_pass": "canary-url-pass-7f3e",
    "url_cred": "AKIACANARYPRESIGNED0",
    "url_sig": "canarysignature0123456789abcdef",
}


# --- redaction helpers ------------------------------------------------------------------------


def test_secret_key_names():
    for name in ("key", "secret", "token", "session_token", "aws_access_key_id", "aws_secret_access_key",
                 "accessKeyId", "X-Amz-Security-Token", "X-Amz-Signature", "X-Amz-Credential", "sig",
                 "password", "Authorization", "client_secret", "account_key", "sas_token",
                 "connection_string", "HF_TOKEN", "apiKey", "private_key", "credentials"):  # fmt: skip
        assert is_secret_key(name), name
    for name in ("max_new_tokens", "max_num_batched_tokens", "endpoint_url", "region_name", "anon",
                 "tokenizer", "X-Amz-Algorithm", "X-Amz-Date", "X-Amz-SignedHeaders", "column_map",
                 "model_cache_dir", "storage_options", "client_kwargs", "use_ssl"):  # fmt: skip
        assert not is_secret_key(name), name


def test_redact_url_keeps_what_identifies_the_object():
    url = (
        "https://bucket.s3.amazonaws.com/a/b.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={CANARY['url_cred']}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20260101T000000Z&X-Amz-Signature={CANARY['url_sig']}"
    )
    out = redact_url(url)
    assert out.startswith("https://bucket.s3.amazonaws.com/a/b.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    assert f"X-Amz-Credential={REDACTED}&X-Amz-Date=20260101T000000Z&X-Amz-Signature={REDACTED}" in out
    assert redact_url("http://user:pw@minio:9000/x") == f"http://{REDACTED}@minio:9000/x"
    assert redact_url("s3://bucket/path with spaces/a@b.wav") == "s3://bucket/path with spaces/a@b.wav"
    assert redact_url("/local/path.wav") == "/local/path.wav"
    assert redact_url("https://h/x.wav?sv=2024&sig=abc%2B#access_token=t0k3n") == f"https://h/x.wav?sv=2024&sig={REDACTED}#access_token={REDACTED}"


def test_redact_text_finds_credentials_in_messages():
    known = secret_values({"key": CANARY["in_key"], "secret": CANARY["in_secret"]}, environ=False)
    message = (
        f"read_error: s3://b/k.wav?X-Amz-Signature={CANARY['url_sig']}: cannot read file: "
        f"{{'key': '{CANARY['in_key']}', \"secret\": \"{CANARY['in_secret']}\"}} "
        f"Authorization: Bearer {CANARY['hf_token']} aws_session_token={CANARY['in_token']}; "
        f"proxy http://{CANARY['url_user']}:{CANARY['url_pass']}@10.0.0.1:3128 said no, "
        f"and {CANARY['in_secret']} once more"
    )
    out = redact_text(message, known)
    for value in CANARY.values():
        assert value not in out, value
    # What is not a credential stays, punctuation included.
    assert out.startswith(f"read_error: s3://b/k.wav?X-Amz-Signature={REDACTED}: cannot read file: ")
    assert "10.0.0.1:3128 said no" in out


def test_secret_values_come_from_options_urls_and_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY["hf_token"])
    options = {
        "key": CANARY["in_key"],
        "client_kwargs": {"aws_session_token": CANARY["in_token"], "region_name": "us-east-1"},
        "endpoint_url": f"http://{CANARY['url_user']}:{CANARY['url_pass']}@127.0.0.1:9000",
    }
    found = secret_values(options)
    assert {CANARY["in_key"], CANARY["in_token"], CANARY["url_pass"], CANARY["hf_token"]} <= found
    assert "us-east-1" not in found and "127.0.0.1:9000" not in found


@pytest.mark.parametrize("name", ["transcribe", "align", "label", "etl"])
def test_redacted_configs_keep_everything_but_secrets(name):
    from pipeline.config import AlignJobConfig, JobConfig, LabelJobConfig
    from pipeline.etl.config import EtlConfig

    schema = {"transcribe": JobConfig, "align": AlignJobConfig, "label": LabelJobConfig, "etl": EtlConfig}[name]
    cfg = load_config(REPO / "configs" / f"{name}.yaml", schema=schema)
    dumped = cfg.model_dump(mode="json")
    assert redact(dumped) == dumped  # nothing in a config without credentials is touched


def test_redacted_config_hides_every_kind_of_credential():
    options = {
        "key": CANARY["in_key"],
        "secret": CANARY["in_secret"],
        "token": CANARY["in_token"],
        "endpoint_url": f"http://{CANARY['url_user']}:{CANARY['url_pass']}@minio:9000",
        "client_kwargs": {"aws_session_token": CANARY["env_token"], "region_name": "eu-west-1"},
        "headers": {"Authorization": f"Bearer {CANARY['hf_token']}"},
        "anon": False,
    }
    cfg = load_config(REPO / "configs" / "transcribe.yaml", [f"input.storage_options={json.dumps(options)}"])
    out = json.dumps(redact(cfg.model_dump(mode="json")))
    for value in CANARY.values():
        assert value not in out, value
    so = redact(cfg.model_dump(mode="json"))["input"]["storage_options"]
    assert so["endpoint_url"] == f"http://{REDACTED}@minio:9000"
    assert so["client_kwargs"]["region_name"] == "eu-west-1" and so["anon"] is False
    assert so["key"] == so["secret"] == so["token"] == REDACTED


# --- what a manifest may make the workers read --------------------------------------------------


@pytest.mark.parametrize(
    ("source", "category"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "forbidden_url"),
        ("http://127.0.0.1:9/x.wav", "forbidden_url"),
        ("https://[fd00::1]/x.wav", "unsupported_scheme"),  # "::" is fsspec's chaining too
        ("http://2852039166/x.wav", "forbidden_url"),  # 169.254.169.254 as one number
        ("http://allowed.example.com\\@169.254.169.254/x.wav", "forbidden_url"),
        ("http://allowed.example.com.evil.net/x.wav", "forbidden_url"),
        ("ftp://allowed.example.com/x.wav", "unsupported_scheme"),
        ("memory://x.wav", "unsupported_scheme"),
        ("zip://x.wav::s3://bucket/a.zip", "unsupported_scheme"),
        ("simplecache::http://allowed.example.com/x.wav", "unsupported_scheme"),
        ("sftp://host/etc/passwd", "unsupported_scheme"),
    ],
)
def test_sources_a_manifest_cannot_name(source, category):
    with pytest.raises(AudioError) as err:
        check_source(source, allowed_hosts=["allowed.example.com", "*.cdn.example.org"])
    assert err.value.category == category


def test_sources_a_manifest_can_name():
    hosts = ["allowed.example.com", "*.cdn.example.org"]
    for source in ("/data/a.wav", "rel/a.wav", "file:///data/a.wav", "s3://bucket/a.wav", "gs://bucket/a.wav",
                   "https://allowed.example.com/a.wav", "HTTP://Allowed.Example.COM:8080/a.wav",
                   "https://eu.cdn.example.org/a.wav", "https://u:p@allowed.example.com/a.wav"):  # fmt: skip
        check_source(source, allowed_hosts=hosts)
    assert not host_allowed("cdn.example.org", hosts)  # the wildcard is for subdomains only
    with pytest.raises(AudioError, match="allow_local_paths") as err:
        check_source("/etc/passwd", allow_local_paths=False)
    assert err.value.category == "forbidden_path"
    with pytest.raises(AudioError):
        check_source("file:///etc/passwd", allow_local_paths=False)
    check_source("s3://bucket/a.wav", allow_local_paths=False)


def test_allowed_hosts_config_is_validated():
    base = ["input.manifest=m.jsonl", "output.path=out"]
    cfg = load_config(None, base + ["input.allowed_hosts=['Audio.Example.com', '*.cdn.example.org', 127.0.0.1]"])
    assert cfg.input.allowed_hosts == ["audio.example.com", "*.cdn.example.org", "127.0.0.1"]
    assert load_config(None, base).input.allowed_hosts == []  # no http(s) audio unless asked for
    for bad in ("['http://audio.example.com']", "['audio.example.com:443']", "['audio.example.com/x']", "['*']"):
        with pytest.raises(ConfigError, match="input.allowed_hosts"):
            load_config(None, base + [f"input.allowed_hosts={bad}"])


class _AudioServer:
    """Serves tests/assets/speech on loopback and records every request (and its auth header)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _redirect(self) -> bool:
                hits.append((self.command, self.path, self.headers.get("Authorization")))
                if not self.path.startswith("/redirect"):
                    return False
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_HEAD(self):
                if not self._redirect():
                    super().do_HEAD()

            def do_GET(self):
                if not self._redirect():
                    super().do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(SPEECH)))
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{path}"

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.hits]


@pytest.fixture(scope="module")
def audio_server():
    server = _AudioServer()
    yield server
    server.server.shutdown()


def test_http_audio_from_an_allowed_host(audio_server):
    userinfo = f"{CANARY['url_user']}:{CANARY['url_pass']}"
    # The input's storage_options are for the object store: they must neither break an http read
    # nor be sent to the web host.
    options = {"key": CANARY["in_key"], "secret": CANARY["in_secret"], "endpoint_url": "http://127.0.0.1:9"}
    out = decode_audio(audio_server.url(WAV.name, userinfo), storage_options=options, allowed_hosts=["127.0.0.1"])
    assert out.duration_s == pytest.approx(3.09, abs=0.01)
    expected = "Basic " + base64.b64encode(userinfo.encode()).decode()
    assert (f"/{WAV.name}", expected) in [(p, auth) for _, p, auth in audio_server.hits]


def test_http_audio_refused_before_any_connection(audio_server):
    before = len(audio_server.hits)
    for hosts in ([], ["localhost", "*.127.0.0.1"]):
        with pytest.raises(AudioError) as err:
            decode_audio(audio_server.url("never-fetched.wav"), allowed_hosts=hosts)
        assert err.value.category == "forbidden_url"
        assert "host 127.0.0.1 is not allowed" in str(err.value)
    assert len(audio_server.hits) == before


def test_http_redirects_are_not_followed(audio_server):
    with pytest.raises(AudioError) as err:
        decode_audio(audio_server.url("redirect/a.wav"), allowed_hosts=["127.0.0.1"])
    assert err.value.category == "forbidden_url"
    assert "redirects (302) to http://169.254.169.254/latest/meta-data/" in str(err.value)


def test_decode_stage_refuses_on_the_row_and_redacts(s3, audio_server):
    # moto takes any key: these are the ones the S3 reads below really use.
    options = {**s3.storage_options, "key": CANARY["in_key"], "secret": CANARY["in_secret"]}
    userinfo = f"{CANARY['url_user']}:{CANARY['url_pass']}"
    presigned = f"{audio_server.url('missing.wav', userinfo)}?X-Amz-Signature={CANARY['url_sig']}"
    sources = [
        str(WAV),
        presigned,
        "http://169.254.169.254/latest/meta-data/",
        "memory://x.wav",
        f"s3://{CANARY['in_secret']}/x.wav",  # a bucket named like a configured secret, echoed
    ]
    batch = pa.table({"id": [f"r{i}" for i in range(len(sources))], "audio": sources})
    out = decode_batch(batch, max_chunk_s=30.0, storage_options=options, allowed_hosts=["127.0.0.1"], allow_local_paths=True)
    errors = out.column("error").to_pylist()
    assert errors[0] is None
    assert errors[1].startswith("not_found: http://<redacted>@127.0.0.1:") and f"X-Amz-Signature={REDACTED}" in errors[1]
    assert errors[2].startswith("forbidden_url: ") and errors[3].startswith("unsupported_scheme: ")
    assert errors[4].startswith(f"not_found: s3://{REDACTED}/x.wav")
    text = json.dumps(out.select(["id", "audio", "error", "error_stage"]).to_pylist())
    for value in CANARY.values():
        assert value not in text, value
    assert out.column("audio").to_pylist()[0] == str(WAV)  # a plain path is kept as it is

    local_off = decode_batch(batch.slice(0, 1), max_chunk_s=30.0, allow_local_paths=False)
    assert local_off.column("error").to_pylist()[0].startswith("forbidden_path: ")


def test_derived_ids_carry_no_credentials():
    url = f"https://{CANARY['url_user']}:{CANARY['url_pass']}@h.example.com/a.wav?sig={CANARY['url_sig']}"
    out = normalize_manifest(pa.table({"audio": [url]}), manifest_dir="/m")
    assert out.column("id").to_pylist() == [f"https://{REDACTED}@h.example.com/a.wav?sig={REDACTED}"]


# --- where ids can make the job write ------------------------------------------------------------

HOSTILE_IDS = [
    "../../etc/passwd", "/abs/olute", "..", ".", "", "a/../../b", "..\\..\\windows", "nul\x00byte",
    "new\nline", "tab\there", "x" * 5000, "é" * 300, "%2e%2e%2fetc", "~/.ssh/id_rsa", "C:\\x", "a/b/c",
]  # fmt: skip


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_safe_name_is_one_harmless_path_segment(row_id):
    name = safe_name(row_id)
    assert name and len(name.encode()) <= 200
    assert not name.startswith(".") and not any(c in name for c in "/\\\x00\n\r")
    assert all(ord(c) >= 0x20 and c != "\x7f" for c in name)
    base = "/out/subtitles"
    assert os.path.dirname(os.path.normpath(os.path.join(base, name + ".srt"))) == base


def test_hostile_ids_get_distinct_names():
    names = [safe_name(i) for i in HOSTILE_IDS]
    assert len(set(names)) == len(names)


def _files_under(root: Path) -> list[Path]:
    return [Path(d, f) for d, _, files in os.walk(root) for f in files]


def test_subtitle_files_stay_under_the_output(tmp_path):
    from pipeline.align.subtitle_stage import write_subtitles

    out = tmp_path / "job" / "out"
    words = [{"text": "hello", "start": 0.0, "end": 0.5}]
    batch = pa.table({"id": HOSTILE_IDS, "words": [words] * len(HOSTILE_IDS), "language": ["English"] * len(HOSTILE_IDS)})
    written = write_subtitles(batch, output_path=str(out), formats=["srt", "vtt"], options={})
    assert sum(written.column("subtitle_files").to_pylist()) == 2 * len(HOSTILE_IDS)
    files = _files_under(tmp_path)
    assert len(files) == 2 * len(HOSTILE_IDS)
    assert all(f.parent == out / "subtitles" for f in files), files


def test_label_audio_stays_under_the_output(tmp_path):
    import numpy as np

    from pipeline.label.stage import UTTERANCE, finish_batch

    out = tmp_path / "job" / "out"
    utterance = {"index": 0, "start": 0.0, "end": 0.5, "text": "hello", "language": "English", "reasons": []}
    n = len(HOSTILE_IDS)
    samples = pa.array([np.full(16000, 0.1, np.float32)] * n, pa.list_(pa.float32()))
    batch = pa.table(
        {
            "id": HOSTILE_IDS,
            "samples": samples,
            "utterances": pa.array([[utterance]] * n, pa.list_(UTTERANCE)),
            "error": pa.nulls(n, pa.string()),
        }
    )
    finished = finish_batch(batch, filter={}, output_path=str(out), audio_format="wav")
    files = _files_under(tmp_path)
    assert len(files) == n
    for f in files:
        assert f.parent.parent == out / "audio", f
    paths = [u[0]["audio_path"] for u in finished.column("utterances").to_pylist()]
    assert sorted(paths) == sorted(str(f) for f in files)


# --- nothing from a manifest is evaluated or unpickled ---------------------------------------------

_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "loads"), ("marshal", "loads"),
                 ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("dill", "loads")}  # fmt: skip


def test_no_code_reads_data_with_an_unsafe_loader():
    found = []
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("actors/*.py"), *REPO.glob("jobs/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id in _UNSAFE_CALLS:
                found.append(f"{path.name}:{node.lineno} {f.id}")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in _UNSAFE_ATTRS:
                found.append(f"{path.name}:{node.lineno} {f.value.id}.{f.attr}")
    assert not found


class _Payload:
    """Unpickling this creates the marker file: proof that something executed manifest data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _read(manifest: Path, tmp_path: Path) -> list[dict]:
    from pipeline.transcribe import read_manifest

    cfg = load_config(None, [f"input.manifest={manifest}", f"output.path={tmp_path / 'out'}"])
    return read_manifest(cfg).take_all()


def test_parquet_manifest_metadata_is_not_unpickled(ray_session, tmp_path):
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Payload(marker))
    # Arrow's retired PyExtensionType stored its type as a pickle in the field metadata (CVE-2023-
    # 47248), and pandas metadata rides in the schema: neither may be acted on.
    legacy = pa.field(
        "extra", pa.binary(),
        metadata={b"ARROW:extension:name": b"arrow.py_extension_type", b"ARROW:extension:metadata": payload},
    )  # fmt: skip
    schema = pa.schema(
        [pa.field("id", pa.string()), pa.field("audio", pa.string()), legacy],
        metadata={b"pandas": json.dumps({"columns": [], "attributes": base64.b64encode(payload).decode()}).encode()},
    )
    table = pa.table([["a"], [str(WAV)], [payload]], schema=schema)
    manifest = tmp_path / "legacy.parquet"
    pq.write_table(table, manifest)

    rows = _read(manifest, tmp_path)
    assert [(r["id"], r["audio"]) for r in rows] == [("a", str(WAV))]
    assert not marker.exists()


def test_parquet_manifest_with_pickled_objects_is_refused(ray_session, tmp_path):
    from ray.data._internal.object_extensions.arrow import ArrowPythonObjectType

    marker = tmp_path / "executed"
    payload = pickle.dumps(_Payload(marker))
    pickled = pa.ExtensionArray.from_storage(ArrowPythonObjectType(), pa.array([payload], pa.large_binary()))
    manifest = tmp_path / "pickled.parquet"
    pq.write_table(pa.table({"id": ["a"], "audio": [str(WAV)], "text": pickled}), manifest)

    # Ray Data's Parquet reader refuses its own pickled-object columns unless
    # RAY_DATA_AUTOLOAD_PICKLE_OBJECT_SCALAR=1 is set (README: never for untrusted manifests).
    assert os.environ.get("RAY_DATA_AUTOLOAD_PICKLE_OBJECT_SCALAR") in (None, "", "0")
    with pytest.raises(Exception, match="arrow_pickled_object"):
        _read(manifest, tmp_path)
    assert not marker.exists()


# --- canary credentials through a whole job ----------------------------------------------------------


def _upload(fs, local: Path, key: str) -> None:
    fs.put_file(str(local), key)


def _s3_outputs(fs, prefix: str) -> dict[str, bytes]:
    return {key: fs.cat_file(key) for key in fs.find(prefix)}


def _parquet_rows(blobs: dict[str, bytes], folder: str) -> list[dict]:
    rows = []
    for key, blob in sorted(blobs.items()):
        if f"/{folder}/" in key and key.endswith(".parquet"):
            rows.extend(pq.read_table(io.BytesIO(blob)).to_pylist())
    return rows


def _leaks(blob: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in blob]


@pytest.mark.engine
def test_canary_credentials_appear_nowhere(s3, tiny_asr_dir, audio_server, tmp_path):
    fs = s3.fs()
    if not fs.exists("canary"):
        fs.mkdir("canary")
    _upload(fs, WAV, "canary/in/audio/en_wav16k.wav")
    userinfo = f"{CANARY['url_user']}:{CANARY['url_pass']}"
    presigned = (
        "s3://canary/in/audio/gone.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={CANARY['url_cred']}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Signature={CANARY['url_sig']}"
    )
    rows = [
        {"id": "s3_ok", "audio": "audio/en_wav16k.wav", "text": "the quick brown fox"},
        {"audio": audio_server.url(WAV.name, userinfo)},  # no id: derived from the URL
        {"id": "presigned", "audio": presigned},
        {"id": "metadata", "audio": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"},
        {"id": "not_allowed", "audio": f"http://localhost:{audio_server.port}/never-fetched.wav"},
        {"id": "scheme", "audio": "memory://x.wav"},
    ]
    fs.pipe_file("canary/in/manifest.jsonl", "\n".join(json.dumps(r) for r in rows).encode() + b"\n")

    # Credentials go in the config file (never on the command line: Ray keeps a driver's command
    # line as its job's entrypoint).
    in_options = {"endpoint_url": s3.url, "key": CANARY["in_key"], "secret": CANARY["in_secret"], "token": CANARY["in_token"]}
    out_options = {"endpoint_url": s3.url, "key": CANARY["out_key"], "secret": CANARY["out_secret"]}
    config = {
        "input": {"manifest": "s3://canary/in/manifest.jsonl", "storage_options": in_options, "allowed_hosts": ["127.0.0.1"]},
        "output": {"path": "s3://canary/out", "storage_options": out_options, "overwrite": True},
        "decode": {"batch_size": 2},
        "asr": {"model": tiny_asr_dir, "max_new_tokens": 8, "batch_size": 4, "engine": {"max_model_len": 2048, "enforce_eager": True}},
        "ray": {"num_cpus": 2},
    }
    config_file = tmp_path / "job.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML

    # A short private Ray temp dir: the job's whole session (logs included) is searched, and Unix
    # socket paths under it must stay short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": CANARY["env_key"],
        "AWS_SECRET_ACCESS_KEY": CANARY["env_secret"],
        "AWS_SESSION_TOKEN": CANARY["env_token"],
        "HF_TOKEN": CANARY["hf_token"],
        "RAY_TMPDIR": str(ray_tmp),
    }
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.transcribe", "--config", str(config_file)],
            cwd=REPO, env=env, capture_output=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]

        outputs = _s3_outputs(fs, "canary/out")
        results, failed = _parquet_rows(outputs, "results"), _parquet_rows(outputs, "failed")
        metrics = json.loads(outputs["canary/out/metrics.json"])

        # The run did what the test needs: credentials were used (S3 reads, HTTP basic auth) and
        # echoed where they could leak (URLs in ids, errors and the audio column).
        by_id = {r["id"]: r for r in results + failed}
        assert {r["id"] for r in results} >= {"s3_ok"} and len(results) == 2, by_id
        http_row = next(r for r in results if r["id"] != "s3_ok")
        assert http_row["id"] == http_row["audio"] == f"http://{REDACTED}@127.0.0.1:{audio_server.port}/{WAV.name}"
        auth = "Basic " + base64.b64encode(userinfo.encode()).decode()
        assert ("GET", f"/{WAV.name}", auth) in audio_server.hits
        assert "/never-fetched.wav" not in audio_server.paths()
        assert f"X-Amz-Signature={REDACTED}" in by_id["presigned"]["error"]
        assert by_id["metadata"]["error"].startswith("forbidden_url: ")
        assert by_id["not_allowed"]["error"].startswith("forbidden_url: ")
        assert by_id["scheme"]["error"].startswith("unsupported_scheme: ")
        assert metrics["failures_by_reason"]["decode:forbidden_url"] == 2
        so = metrics["config"]["input"]["storage_options"]
        assert so == {"endpoint_url": s3.url, "key": REDACTED, "secret": REDACTED, "token": REDACTED}

        needles = {name: value.encode() for name, value in CANARY.items()}
        needles["basic_auth"] = base64.b64encode(userinfo.encode())
        leaks = {}
        for key, blob in outputs.items():
            if found := _leaks(blob, needles):
                leaks[f"s3://{key}"] = found
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            if found := _leaks(stream, needles):
                leaks[name] = found
        sessions = list((ray_tmp / "ray").glob("session_*"))
        assert sessions, "the job's Ray session directory was not found"
        logs = [p for p in _files_under(ray_tmp) if p.is_file() and not p.is_symlink()]
        searched = 0
        for path in logs:
            try:
                blob = path.read_bytes()
            except OSError:  # a file removed while Ray shut down
                continue
            searched += blob.count(b"decode_tables")
            if found := _leaks(blob, needles):
                leaks[str(path)] = found
        assert searched, "the search did not reach Ray's logs (Ray Data logs its plan, decode_tables included)"
        assert not leaks, leaks
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
