"""Online load test: `python -m jobs.serve_load --config configs/serve_load.yaml`.

Deploys the online application (configs/serve.yaml) on an embedded local Ray, sends a bounded
number of transcription requests from a bounded number of clients on loopback at each
concurrency level, and measures p50/p95 latency, errors and throughput (audio seconds per wall
second). Then the batch transcribe job runs the same clips through the same engine settings in
the same Ray, and the table puts the two throughputs side by side as a ratio. A streaming run at
real-time pace measures the first partial (from the first audio sent) and the final result after
the end of speech (from the last audio sent). Writes serve_load.json and serve_load.md into
`output`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

from pydantic import Field

from jobs import cli
from pipeline.config import JobBase

logger = logging.getLogger("serve_load")


class ServeLoadConfig(JobBase):
    serve_config: str = Field(default="configs/serve.yaml", description="The `serve run` config to deploy")
    url: str | None = Field(default=None, description="Load an application already running here instead (no deploy, no batch run)")
    api_key_env: str = Field(default="ASR_API_KEYS", description="The key for `url`, from this variable (first key)")
    clips: str = Field(default="tests/assets/synth/manifest.jsonl", description="Manifest whose clips the requests cycle through")
    max_clip_s: float = Field(default=5.0, gt=0)
    requests: int = Field(default=200, gt=0, description="Requests per concurrency level")
    concurrency: list[int] = Field(default_factory=lambda: [1, 4, 16, 32], min_length=1)
    batch: bool = Field(default=True, description="Also run the batch job on the same clips for the ratio")
    batch_config: str = Field(default="configs/transcribe.yaml")
    batch_overrides: list[str] = Field(default_factory=list, description="--set overrides for the batch run")
    streaming_clips: int = Field(default=3, ge=0, description="Clips streamed at real-time pace for the latency figures")
    output: str = Field(default="out/serve_load")


def read_clips(manifest: str, max_clip_s: float) -> list[dict]:
    """``[{"path", "duration_s", "text", "language"}]`` for the manifest's clips of at most
    ``max_clip_s`` seconds (paths relative to the manifest resolved)."""
    import soundfile as sf

    base = Path(manifest).resolve().parent
    out = []
    for line in Path(manifest).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        path = base / row["audio"]
        duration = sf.info(str(path)).duration
        if duration <= max_clip_s:
            out.append({"path": str(path), "duration_s": duration, "text": row.get("text"), "language": row.get("language")})
    if not out:
        raise ValueError(f"{manifest}: no clip of at most {max_clip_s} s")
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(len(values) - 1, int(pos) + 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def load_level(url: str, key: str, clips: list[dict], requests: int, concurrency: int) -> dict:
    """``requests`` POSTs of /v1/audio/transcriptions (json) from ``concurrency`` clients, each
    client one connection, clips taken in turn. Latencies in seconds; throughput in audio
    seconds per wall second."""
    import httpx

    data = [(c, Path(c["path"]).read_bytes()) for c in clips]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    audio_s = 0.0
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        nonlocal audio_s
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            for i in counter:
                clip, body = data[i % len(data)]
                t0 = time.perf_counter()
                try:
                    status = http.post("/v1/audio/transcriptions", files={"file": (Path(clip["path"]).name, body)}).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        audio_s += clip["duration_s"]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": requests - statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(percentile(latencies, 0.95), 4),
        "wall_s": round(wall, 3),
        "requests_per_s": round(requests / wall, 2),
        "audio_s_per_s": round(audio_s / wall, 2),
    }


def stream_latency(url: str, key: str, clip: dict, *, frame_s: float = 0.1, tail_s: float = 0.8) -> dict:
    """Stream one clip (plus ``tail_s`` of silence) as 16 kHz PCM at real-time pace. Returns the
    seconds from the first audio sent to the first partial, and from the last audio sent to the
    final result."""
    import numpy as np
    from websockets.sync.client import connect

    from pipeline.audio.decode import decode_audio

    samples = np.concatenate([decode_audio(clip["path"]).samples, np.zeros(int(tail_s * 16000), np.float32)])
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    step = int(frame_s * 16000) * 2
    first_partial = final = None
    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/audio/stream"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=60) as ws:
        ws.send(json.dumps({"encoding": "pcm_s16le", "sample_rate": 16000}))
        json.loads(ws.recv(timeout=60))
        t0 = time.perf_counter()
        for k in range(0, len(pcm), step):
            ws.send(pcm[k : k + step])
            target = t0 + (k + step) / 2 / 16000
            while (left := target - time.perf_counter()) > 0:
                try:
                    message = json.loads(ws.recv(timeout=left))
                except TimeoutError:
                    break
                if message["type"] == "partial" and first_partial is None:
                    first_partial = time.perf_counter() - t0
        sent = time.perf_counter()
        ws.send(json.dumps({"type": "stop"}))
        while True:
            message = json.loads(ws.recv(timeout=120))
            if message["type"] == "partial" and first_partial is None:
                first_partial = time.perf_counter() - t0
            if message.get("is_last"):
                final = time.perf_counter() - sent
                break
    return {"clip_s": round(len(samples) / 16000, 2), "first_partial_s": first_partial and round(first_partial, 3),
            "final_after_end_s": round(final, 3), "text": message["text"]}  # fmt: skip


def run_batch(cfg: ServeLoadConfig, serve_cfg, clips: list[dict], out: Path) -> dict:
    """The transcribe job on ``cfg.requests`` rows of the same clips, with the online ASR
    deployment's model, chunk length and engine settings: its metrics.json figures."""
    from pipeline.config import load_config
    from pipeline.transcribe import run

    manifest = out / "batch-manifest.jsonl"
    with manifest.open("w") as f:
        for i in range(cfg.requests):
            f.write(json.dumps({"id": f"r{i:05d}", "audio": clips[i % len(clips)]["path"]}) + "\n")
    asr = serve_cfg.asr
    overrides = [
        f"input.manifest={manifest}", f"output.path={out / 'batch'}", "output.overwrite=true", "score.enabled=false",
        f"asr.model={asr.model}", f"asr.max_chunk_s={asr.max_chunk_s}", f"asr.max_new_tokens={asr.max_new_tokens}",
        *(f"asr.engine.{k}={v}" for k, v in asr.engine.model_dump(exclude={"extra"}).items() if v is not None),
        *cfg.batch_overrides,
    ]  # fmt: skip
    job = load_config(cfg.batch_config, overrides)
    result = run(job)
    m = result.metrics
    return {
        "rows": result.rows_read, "failed": result.rows_failed, "wall_s": round(m["wall_s"], 2),
        "audio_s_per_s": round(m["throughput_audio_s_per_s"], 2), "engine_rtfx": round(m["engine_rtfx"], 2),
    }  # fmt: skip


def to_markdown(report: dict) -> str:
    lines = [
        "| clients | requests | errors | p50 s | p95 s | requests/s | audio s/s | / batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    batch = report.get("batch")
    for r in report["levels"]:
        ratio = f"{r['audio_s_per_s'] / batch['audio_s_per_s']:.2f}" if batch else "-"
        lines.append(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
            f"{r['requests_per_s']:.1f} | {r['audio_s_per_s']:.1f} | {ratio} |"
        )
    if batch:
        lines += ["", f"Batch job, same clips and engine settings: {batch['rows']} rows, {batch['failed']} failed, "
                  f"{batch['audio_s_per_s']} audio s/s over its whole run ({batch['wall_s']} s, engine start included; "
                  f"engine RTFx {batch['engine_rtfx']})."]  # fmt: skip
    if report.get("streaming"):
        lines += ["", "| streamed clip s | first partial s | final after end of audio s |", "|---:|---:|---:|"]
        lines += [f"| {s['clip_s']} | {s['first_partial_s']} | {s['final_after_end_s']} |" for s in report["streaming"]]
    return "\n".join(lines) + "\n"


def run_serve_load(cfg: ServeLoadConfig) -> dict:
    """Deploy (unless ``cfg.url``), load each concurrency level, stream, run the batch job;
    write and return the report."""
    import yaml

    from jobs.serve import ServeFile, start

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    clips = read_clips(cfg.clips, cfg.max_clip_s)
    serve_file = ServeFile.model_validate(yaml.safe_load(Path(cfg.serve_config).read_text()))
    if cfg.url:
        url, key = cfg.url, os.environ.get(cfg.api_key_env, "").split(",")[0]
    else:
        # A key of this run's own, in the environment the embedded Ray (and so every replica) inherits.
        key = secrets.token_urlsafe(24)
        # One key drives every client here: its concurrency limit must not be what is measured.
        serve_file.app.limits.max_concurrent_per_key = max(serve_file.app.limits.max_concurrent_per_key, *cfg.concurrency)
        os.environ[serve_file.app.auth.api_keys_env or "ASR_API_KEYS"] = key
        url = start(serve_file, blocking=False)
    levels = []
    for c in cfg.concurrency:
        level = load_level(url, key, clips, cfg.requests, c)
        logger.info("serve load: %s", level)
        levels.append(level)
    streaming = [stream_latency(url, key, clip) for clip in clips[: cfg.streaming_clips]]
    report = {"url": url, "clips": len(clips), "levels": levels, "streaming": streaming}
    if cfg.batch and not cfg.url:
        from ray import serve

        serve.shutdown()  # the batch job gets the cores the application held
        report["batch"] = run_batch(cfg, serve_file.app, clips, out)
    report["ok"] = all(r["errors"] == 0 for r in levels)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "serve_load.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        prog="python -m jobs.serve_load", doc=__doc__, example_config="configs/serve_load.yaml",
        schema=ServeLoadConfig, body=lambda cfg: 0 if run_serve_load(cfg)["ok"] else 1, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
