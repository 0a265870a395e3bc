"""The online application (actors/serve/) on loopback: one real Serve application for the whole
module (1 replica each of the API, the ASR engine and the aligner, on the bundled trained tiny
models), called with the official openai client, a WebSocket client, plain HTTP and headless
Chromium. Every answer is asserted from that one application: engine starts cost about 12 s each.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "tests" / "assets" / "synth"
ASR_MODEL = REPO / "models" / "tiny-qwen3-asr-synth"
ALIGNER_MODEL = REPO / "models" / "tiny-qwen3-aligner-synth"
ROWS = {r["id"]: r for r in map(json.loads, (SYNTH / "manifest.jsonl").read_text().splitlines()) if r}
KEY = "test-key-3f9a1c7e5b2d"
OTHER_KEY = "test-key-other-8d41b0a2"
MAX_UPLOAD_MB = 2.0
MAX_AUDIO_S = 30.0
PER_KEY = 4
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not (ASR_MODEL / "config.json").exists(), reason="the trained tiny checkpoints are not built"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words_of(text: str) -> list[str]:
    return text.lower().split()


def word_errors(hyp: str, ref: str) -> float:
    import jiwer

    return jiwer.wer(ref, hyp) if hyp.strip() else 1.0


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory):
    from ray import serve

    from actors.serve.api import build
    from actors.serve.config import ServeConfig

    tmp = tmp_path_factory.mktemp("serve")
    keys = tmp / "api-keys"
    keys.write_text(f"# one key per line\n{KEY}\n{OTHER_KEY}\n")
    engine = {"max_model_len": 2048, "enforce_eager": True}
    cfg = ServeConfig.model_validate({
        "api_cpus_per_replica": 0.1,
        "asr": {"model": str(ASR_MODEL), "max_chunk_s": 5.0, "max_new_tokens": 64, "cpus_per_replica": 0.1,
                "model_cache_dir": str(tmp / "cache"), "engine": engine},
        "align": {"model": str(ALIGNER_MODEL), "max_chunk_s": 10.0, "cpus_per_replica": 0.1,
                  "model_cache_dir": str(tmp / "cache"), "engine": engine},
        "api_replicas": {"min_replicas": 1, "max_replicas": 1},
        "auth": {"api_keys_env": None, "api_keys_file": str(keys)},
        "limits": {"max_upload_mb": MAX_UPLOAD_MB, "max_audio_s": MAX_AUDIO_S, "max_concurrent_per_key": PER_KEY,
                   "request_timeout_s": 120, "max_stream_s": 120},
    })  # fmt: skip
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    t0 = time.perf_counter()
    serve.run(build(cfg), name="asr-test", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "cfg": cfg, "start_s": time.perf_counter() - t0, "tmp": tmp}
    serve.shutdown()


@pytest.fixture(scope="module")
def client(app):
    import openai

    return openai.OpenAI(base_url=app["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _post(app, files=None, data=None, key=KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(app["url"] + "/v1/audio/transcriptions", files=files, data=data, headers=headers, timeout=120, **kw)


def _wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _pcm16k(name: str) -> np.ndarray:
    from pipeline.audio.decode import decode_audio

    return decode_audio(str(SYNTH / name)).samples


# --- the transcription endpoint through the openai client ------------------------------------


def test_json_detects_the_language_and_transcribes(client):
    for rid in ("en_sent_016", "de_sent_040", "fr_align_069"):
        row = ROWS[rid]
        with open(SYNTH / row["audio"], "rb") as f:
            out = client.audio.transcriptions.create(model="qwen3-asr", file=f)
        assert out.language == row["language"].lower(), (rid, out)
        assert 0.5 < out.language_probability <= 1.0, (rid, out)
        assert word_errors(out.text, row["text"]) <= 0.4, (rid, out.text, row["text"])
        assert "<asr_text>" not in out.text and not out.text.startswith("language")
        assert out.duration == pytest.approx(sf.info(str(SYNTH / row["audio"])).duration, abs=0.05)


def test_forced_language_is_really_forced(client):
    row = ROWS["en_sent_004"]
    with open(SYNTH / row["audio"], "rb") as f:
        forced = client.audio.transcriptions.create(model="qwen3-asr", file=f, language="fr")
    assert forced.language == "french"  # the model was told French and answered as told
    assert forced.language_probability is None  # nothing was detected
    with open(SYNTH / "de_sent_024.wav", "rb") as f:
        german = client.audio.transcriptions.create(model="qwen3-asr", file=f, language="de-DE", prompt="Zahlen, Farben")
    assert german.language == "german" and word_errors(german.text, ROWS["de_sent_024"]["text"]) <= 0.5


def test_text_srt_and_vtt(client):
    import srt
    import webvtt

    row = ROWS["en_align_022"]  # an mp3
    path = SYNTH / row["audio"]
    text = client.audio.transcriptions.create(model="qwen3-asr", file=path.open("rb"), response_format="text")
    assert isinstance(text, str) and word_errors(text.strip(), row["text"]) <= 0.5
    subtitles = client.audio.transcriptions.create(model="qwen3-asr", file=path.open("rb"), response_format="srt")
    cues = list(srt.parse(subtitles))
    assert cues and " ".join(c.content for c in cues).split() == text.split()
    assert all(c.end > c.start for c in cues) and cues[-1].end.total_seconds() <= 3.6
    vtt = client.audio.transcriptions.create(model="qwen3-asr", file=path.open("rb"), response_format="vtt")
    captions = webvtt.from_buffer(io.StringIO(vtt))
    assert " ".join(c.text for c in captions).split() == text.split()


def test_verbose_json_with_segments_and_word_timestamps(client):
    row = ROWS["fr_align_069"]
    path = SYNTH / row["audio"]
    out = client.audio.transcriptions.create(
        model="qwen3-asr", file=path.open("rb"), response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert out.language == "french" and out.duration == pytest.approx(2.36, abs=0.05)
    words = out.words
    assert [w.word for w in words] == out.text.split()
    assert all(0 <= w.start < w.end <= out.duration + 1e-6 for w in words)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:]))
    assert out.segments and out.segments[0].start <= words[0].start and out.segments[-1].end >= words[-1].end - 1e-6
    # Segments only (OpenAI's default granularity): no words.
    plain = client.audio.transcriptions.create(model="qwen3-asr", file=path.open("rb"), response_format="verbose_json")
    assert plain.segments and getattr(plain, "words", None) is None


def test_long_audio_is_chunked_as_the_batch_path(client):
    # 25 s of the long German recording: five 5 s chunks, cut at quiet points.
    samples = _pcm16k("de_long_073.mp3")[: 25 * 16000]
    out = client.audio.transcriptions.create(
        model="qwen3-asr", file=("long.wav", _wav_bytes(samples)), response_format="verbose_json"
    )
    assert out.language == "german" and len(out.segments) >= 5
    assert out.segments[0].start == 0 and out.segments[-1].end == pytest.approx(25.0, abs=0.01)
    assert len(out.text.split()) >= 20


# --- errors: clear 4xx answers, and the replica keeps serving ---------------------------------


def test_missing_or_wrong_key_is_401(app):
    import openai

    wav = (SYNTH / "en_sent_008.wav").read_bytes()
    for key in (None, "not-a-key"):
        r = _post(app, files={"file": ("a.wav", wav)}, key=key)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    bad = openai.OpenAI(base_url=app["url"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(model="qwen3-asr", file=("a.wav", wav))


def test_upload_and_duration_limits_are_413(app):
    big = b"RIFF" + bytes(int(MAX_UPLOAD_MB * 1e6) + 10)
    r = _post(app, files={"file": ("big.wav", big)})
    assert r.status_code == 413 and "MB limit" in r.json()["error"]["message"]
    long = _wav_bytes(np.zeros(int((MAX_AUDIO_S + 5) * 16000), np.float32) + 0.01)
    r = _post(app, files={"file": ("long.wav", long)})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_long" and "30 s" in r.json()["error"]["message"]


def test_bad_inputs_are_400_and_the_replica_keeps_serving(app, client):
    wav = (SYNTH / "en_sent_008.wav").read_bytes()
    cases = [
        ({"file": ("x.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 50)}, {}, None),
        ({"file": ("x.mp3", b"<html><body>not audio</body></html>")}, {}, None),
        ({"file": ("a.wav", wav)}, {"language": "klingon"}, "unsupported_language"),
        ({"file": ("a.wav", wav)}, {"response_format": "xml"}, "invalid_value"),
        ({"file": ("a.wav", wav)}, {"timestamp_granularities[]": "word"}, "invalid_value"),  # needs verbose_json
        ({"file": ("a.wav", wav)}, {"language": "th", "response_format": "verbose_json", "timestamp_granularities[]": "word"},
         "unsupported_language_for_timestamps"),
        (None, {"model": "qwen3-asr"}, None),
    ]  # fmt: skip
    for files, data, code in cases:
        r = _post(app, files=files, data=data)
        assert r.status_code == 400, (data, r.text)
        error = r.json()["error"]
        assert error["message"] and (code is None or error["code"] == code), error
    out = client.audio.transcriptions.create(model="qwen3-asr", file=("a.wav", wav))
    assert out.text.strip()


def test_per_key_concurrency_is_429(app):
    wav = (SYNTH / "en_align_022.mp3").read_bytes()
    with concurrent.futures.ThreadPoolExecutor(3 * PER_KEY) as pool:
        codes = list(pool.map(lambda _: _post(app, files={"file": ("a.mp3", wav)}, key=OTHER_KEY).status_code, range(3 * PER_KEY)))
    assert set(codes) == {200, 429} and codes.count(200) >= PER_KEY, codes
    # The other key was never held up.
    assert _post(app, files={"file": ("a.mp3", wav)}).status_code == 200


def test_health_ready_and_models(app):
    assert httpx.get(app["url"] + "/health").json() == {"status": "ok"}
    ready = httpx.get(app["url"] + "/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["asr"]["model"] == str(ASR_MODEL)
    models = httpx.get(app["url"] + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert models["data"][0]["id"] == "qwen3-asr"


# --- the toolkit's chat request shape -----------------------------------------------------------


def test_chat_completions_with_a_data_url(client, app):
    row = ROWS["de_align_046"]
    data = base64.b64encode((SYNTH / row["audio"]).read_bytes()).decode()
    messages = [
        {"role": "system", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": f"data:audio/mpeg;base64,{data}"}}]},
    ]
    out = client.chat.completions.create(model="qwen3-asr", messages=messages)
    content = out.choices[0].message.content
    assert content.startswith("language German<asr_text>"), content
    from actors.asr_engine import parse_asr_output

    language, text = parse_asr_output(content, None)  # what the toolkit's examples do with it
    assert language == "German" and word_errors(text, row["text"]) <= 0.5
    # An http(s) URL whose host is not allowed is refused before anything is fetched.
    r = httpx.post(app["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60, json={
        "model": "qwen3-asr",
        "messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "http://169.254.169.254/a.wav"}}]}],
    })  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "forbidden_url"


# --- streaming ---------------------------------------------------------------------------------


def _stream(app, samples: np.ndarray, *, pace: float, frame_s: float = 0.1, start: dict | None = None) -> dict:
    """Send 16 kHz PCM s16le at ``pace`` x real time; the messages and their arrival times."""
    from websockets.sync.client import connect

    url = app["url"].replace("http://", "ws://") + "/v1/audio/stream"
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    step = int(frame_s * 16000) * 2
    got: list[tuple[float, dict]] = []
    with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=30) as ws:
        ws.send(json.dumps({"encoding": "pcm_s16le", "sample_rate": 16000, **(start or {})}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        t0 = time.perf_counter()
        for k in range(0, len(pcm), step):
            ws.send(pcm[k : k + step])
            target = t0 + (k + step) / 2 / 16000 / pace
            while (left := target - time.perf_counter()) > 0:
                try:
                    got.append((time.perf_counter() - t0, json.loads(ws.recv(timeout=left))))
                except TimeoutError:
                    break
        sent_at = time.perf_counter() - t0
        ws.send(json.dumps({"type": "stop"}))
        while True:
            message = json.loads(ws.recv(timeout=60))
            got.append((time.perf_counter() - t0, message))
            if message.get("is_last") or message["type"] == "error":
                break
    return {"messages": got, "sent_at": sent_at}


def test_streaming_partials_and_finals_keep_context_and_never_leak_the_tag(app):
    a, b = ROWS["en_align_022"], ROWS["de_align_047"]
    gap = np.zeros(int(1.0 * 16000), np.float32)
    samples = np.concatenate([_pcm16k(a["audio"]), gap, _pcm16k(b["audio"]), gap[:4000]])
    run = _stream(app, samples, pace=2.0)
    messages = [m for _, m in run["messages"]]
    kinds = [m["type"] for m in messages]
    assert "error" not in kinds, messages
    assert kinds.count("partial") >= 2 and kinds.count("final") >= 2, kinds
    for m in messages:
        assert "<asr_text>" not in m["text"] and not m["text"].lower().startswith("language "), m
    finals = [m for m in messages if m["type"] == "final" and m["segment"]["text"]]
    assert finals[0]["segment"]["language"] == "English" and finals[-1]["segment"]["language"] == "German"
    assert word_errors(finals[0]["segment"]["text"], a["text"]) <= 0.5
    last = messages[-1]
    assert last["is_last"] and word_errors(last["text"], a["text"] + " " + b["text"]) <= 0.5, last
    # Times: each message's segment lies within the audio sent, finals one after another.
    assert all(0 <= m["segment"]["start"] < m["segment"]["end"] <= len(samples) / 16000 + 1e-6 for m in messages if m["segment"])
    assert finals[1]["segment"]["start"] >= finals[0]["segment"]["end"] - 1e-6


def test_streaming_refuses_a_missing_key_and_bad_encoding(app):
    from websockets.sync.client import connect

    url = app["url"].replace("http://", "ws://") + "/v1/audio/stream"
    for start, code in (({"encoding": "pcm_s16le"}, 1008), ({"encoding": "mulaw", "api_key": KEY}, 1003)):
        with connect(url, open_timeout=30) as ws:
            ws.send(json.dumps(start))
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "error" and message["error"]["message"]
            ws.recv_bytes = None
            try:
                ws.recv(timeout=10)
            except Exception:
                pass
            assert ws.close_code == code


# --- the demo page in headless Chromium ------------------------------------------------------


class _Cdp:
    """A minimal Chrome DevTools Protocol client over a real WebSocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_the_page_transcribes_an_uploaded_file_in_chromium(app, tmp_path):
    profile = tmp_path / "profile"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1000,1200", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            assert time.time() < deadline and browser.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        cdp = _Cdp(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=app["url"] + "/")
        deadline = time.time() + 30
        while cdp.evaluate("document.readyState") != "complete":
            assert time.time() < deadline
            time.sleep(0.1)
        cdp.evaluate(f"document.getElementById('key').value = {json.dumps(KEY)}")
        cdp.evaluate("document.getElementById('words').checked = true")
        root = cdp.call("DOM.getDocument")["root"]["nodeId"]
        node = cdp.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        row = ROWS["en_align_021"]
        cdp.call("DOM.setFileInputFiles", nodeId=node, files=[str(SYNTH / row["audio"])])
        cdp.evaluate("document.getElementById('file').dispatchEvent(new Event('change'))")
        cdp.evaluate("document.getElementById('send').click()")
        deadline = time.time() + 60
        while not (text := cdp.evaluate("document.getElementById('transcript').textContent")):
            status = cdp.evaluate("document.getElementById('status').textContent")
            assert time.time() < deadline and "error" not in (cdp.evaluate("document.getElementById('status').className") or ""), status
            time.sleep(0.2)
        assert word_errors(text, row["text"]) <= 0.5, text
        assert cdp.evaluate("document.getElementById('language').textContent") == "language: english"
        assert cdp.evaluate("document.querySelectorAll('#wordtable tr').length") == len(text.split()) + 1
        shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
        errors = [
            e for e in cdp.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]  # fmt: skip
        assert errors == [], errors
    finally:
        browser.terminate()
        browser.wait(30)
    from PIL import Image

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert len(image.getcolors(maxcolors=1 << 24)) > 50  # text in several colours, not a blank page


# --- metrics and the load test's smoke run (last: they read what the tests above did) ---------


def test_load_smoke_and_streaming_latency(app):
    from jobs.serve_load import load_level, read_clips, stream_latency

    clips = read_clips(str(SYNTH / "manifest.jsonl"), 3.0)
    level = load_level(app["url"], KEY, clips, requests=8, concurrency=PER_KEY)
    assert level["errors"] == 0 and level["statuses"] == {"200": 8}, level
    assert 0 < level["p50_s"] <= level["p95_s"] and level["audio_s_per_s"] > 0
    latency = stream_latency(app["url"], KEY, {"path": str(SYNTH / "en_sent_000.wav")})
    assert latency["first_partial_s"] is not None and 0 < latency["final_after_end_s"] < 10, latency


def test_prometheus_metrics_on_rays_export(app):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = ("ray_asr_requests_total", "ray_asr_audio_seconds_total", "ray_asr_request_latency_seconds_bucket", "ray_asr_engine_busy_share")
    deadline = time.time() + 40  # Ray's agents export every few seconds
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in wanted) and 'status="401"' in text and 'status="429"' in text:
            break
        assert time.time() < deadline, [n for n in wanted if n not in text]
        time.sleep(2)
    ok = [line for line in text.splitlines() if line.startswith("ray_asr_requests_total") and 'route="transcriptions"' in line and 'status="200"' in line]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= 10
    assert 'engine="asr"' in text and 'engine="align"' in text
    assert KEY not in text and OTHER_KEY not in text


# --- the configs (no Ray) ------------------------------------------------------------------------


def test_serve_configs_validate_and_fit_the_cluster():
    import yaml

    from jobs.serve import ServeFile
    from tests.test_infra import by_kind, cluster_spec, gpus_of

    local = ServeFile.model_validate(yaml.safe_load((REPO / "configs" / "serve.yaml").read_text()))
    assert local.app.asr.model == "models/tiny-qwen3-asr-synth" and not local.app.auth.allow_anonymous
    (service,) = by_kind("RayService")
    cfg = ServeFile.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    app = cfg.app
    assert cfg.http_options["host"] == "0.0.0.0" and app.auth.api_keys_env == "ASR_API_KEYS"
    max_gpus = sum(g["maxReplicas"] * gpus_of(g["template"]) for g in cluster_spec(service)["workerGroupSpecs"])
    asked = app.asr.autoscaling.max_replicas * app.asr.gpus_per_replica + app.align.autoscaling.max_replicas * app.align.gpus_per_replica
    assert 0 < asked <= max_gpus
    envs = [e["name"] for g in cluster_spec(service)["workerGroupSpecs"] for e in g["template"]["spec"]["containers"][0]["env"]]
    assert "ASR_API_KEYS" in envs
