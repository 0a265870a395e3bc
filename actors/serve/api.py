"""The ingress deployment: the HTTP and WebSocket API in front of the engine deployments.

Routes (OpenAI audio API reference for the first; the Qwen3-ASR toolkit's server for the chat
route):
- ``POST /v1/audio/transcriptions``: multipart ``file``, ``model``, ``language``, ``prompt``,
  ``response_format``, ``timestamp_granularities[]``;
- ``POST /v1/chat/completions``: an ``audio_url`` content part (a ``data:`` URL, or http(s) from
  ``allowed_hosts``), answered ``language X<asr_text>...``;
- ``WS /v1/audio/stream``: streaming recognition (actors/serve/streaming.py);
- ``GET /v1/models``, ``GET /health`` (this replica answers), ``GET /ready`` (the engines
  answer), ``GET /`` (the demo page).

Every error is an OpenAI error object with a 4xx status for what the client can fix (401 key,
400 input, 413 size, 429 concurrency) and 5xx for the rest; the replica keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from actors.serve.config import ServeConfig
from actors.serve.guard import BodyLimit, GuardError, KeyGuard, load_keys
from actors.serve.requests import (
    ApiError,
    add_words,
    check_alignable,
    check_format,
    forced_language,
    render,
    toolkit_answer,
    transcribe,
)
from actors.serve.streaming import SAMPLE_RATE, StreamSession
from pipeline.audio.decode import decode_audio
from pipeline.audio.errors import AudioError
from pipeline.redact import redact_text

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
STREAM_ENCODINGS = ("pcm_s16le", "pcm_f32le", "container")
# AudioError categories that are about the request's size, not its content.
_TOO_LARGE = {"too_long"}
_FETCH_REFUSED = {"forbidden_url", "unsupported_scheme", "forbidden_path"}

app = FastAPI(title="Qwen3-ASR online transcription", docs_url=None, redoc_url=None)
app.add_middleware(BodyLimit)


@app.exception_handler(ApiError)
async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@app.exception_handler(GuardError)
async def _guard_error(request: Request, e: GuardError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
    return JSONResponse(ApiError(e.status, str(e), e.code).body(), status_code=e.status, headers=headers)


def _audio_error(e: AudioError, param: str) -> ApiError:
    status = 413 if e.category in _TOO_LARGE else 400
    return ApiError(status, redact_text(str(e)), e.category, param)


# Defined before the deployment class: Serve serializes the class when it is decorated, and a
# helper defined after it would be missing in the replica.
def _alignable(language: str) -> bool:
    try:
        check_alignable(language)
        return True
    except ApiError:
        return False


async def _ws_error(ws: WebSocket, e: ApiError, code: int) -> None:
    try:
        await ws.send_json({"type": "error", **e.body()})
        await ws.close(code)
    except Exception:
        pass  # the client is already gone


def _chat_parts(messages: list) -> tuple[str, str]:
    """(context from system/text parts, the audio URL) of a toolkit-style chat request. Raises
    ApiError 400 without exactly one audio part."""
    context: list[str] = []
    urls: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(400, "each message must be an object", "invalid_request", "messages")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "audio_url":
                url = (part.get("audio_url") or {}).get("url") if isinstance(part.get("audio_url"), dict) else part.get("audio_url")
                if isinstance(url, str):
                    urls.append(url)
            elif part.get("type") == "text" and message.get("role") == "system" and part.get("text"):
                context.append(str(part["text"]))
    if len(urls) != 1:
        raise ApiError(400, f"expected one audio_url content part, got {len(urls)}", "invalid_request", "messages")
    return "\n".join(context), urls[0]


def _data_url(url: str) -> bytes:
    """The bytes of a base64 ``data:`` URL (RFC 2397). Raises ApiError 400."""
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise ApiError(400, "data: URLs must be base64 (data:audio/wav;base64,...)", "invalid_audio_url", "audio_url")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the data: URL is not valid base64", "invalid_audio_url", "audio_url") from None


@serve.deployment(name="api")
@serve.ingress(app)
class AsrApi:
    def __init__(self, cfg: dict, asr: Any, align: Any | None) -> None:
        from actors.serve.metrics import ApiMetrics

        self.cfg = ServeConfig.model_validate(cfg)
        self.asr = asr
        self.align = align
        keys = load_keys(self.cfg.auth.api_keys_env, self.cfg.auth.api_keys_file)
        if not keys and not self.cfg.auth.allow_anonymous:
            logger.warning("no API key configured (auth.api_keys_env / auth.api_keys_file): every request is refused")
        self.guard = KeyGuard(keys, allow_anonymous=self.cfg.auth.allow_anonymous, max_concurrent=self.cfg.limits.max_concurrent_per_key)
        app.state.max_body_bytes = int(self.cfg.limits.max_upload_mb * 1e6)
        self.metrics = ApiMetrics()

    # -- plumbing -------------------------------------------------------------------------------

    async def _asr_call(self, audio: np.ndarray, context: str, language: str | None, prefix: str = "") -> dict:
        return await self.asr.transcribe.remote(audio, context, language, prefix, True)

    async def _align_call(self, samples: np.ndarray, spans: list, language: str | None) -> dict:
        return await self.align.align.remote(samples, spans, language)

    async def _guarded(self, route: str, authorization: str | None, work) -> Response:
        """Authenticate, hold a concurrency slot, run ``work()`` -> (Response, audio seconds)
        within the request timeout, and record the metrics whatever the outcome."""
        t0 = time.perf_counter()
        status, audio_s = 500, 0.0
        try:
            who = self.guard.authenticate(authorization)
            self.guard.acquire(who)
            try:
                response, audio_s = await asyncio.wait_for(work(), self.cfg.limits.request_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"the request took longer than {self.cfg.limits.request_timeout_s:g} s (limits.request_timeout_s)", "timeout") from None
            finally:
                self.guard.release(who)
            status = response.status_code
            return response
        except (ApiError, GuardError) as e:
            status = e.status
            raise
        finally:
            self.metrics.record(route, status, time.perf_counter() - t0, audio_s)

    async def _decode(self, data: bytes | None, source: str | None, param: str) -> Any:
        try:
            return await asyncio.to_thread(
                decode_audio, source, data, target_sr=SAMPLE_RATE, max_duration_s=self.cfg.limits.max_audio_s,
                allowed_hosts=self.cfg.allowed_hosts, allow_local_paths=False,
            )  # fmt: skip
        except AudioError as e:
            if e.category in _FETCH_REFUSED:
                raise ApiError(400, redact_text(str(e)), e.category, param) from None
            raise _audio_error(e, param) from None

    async def _row(self, samples: np.ndarray, *, context: str, language: str | None, words: bool) -> dict:
        row = await transcribe(samples, self._asr_call, max_chunk_s=self.cfg.asr.max_chunk_s, context=context, language=language)
        if words:
            row = await add_words(row, samples, self._align_call, language=language)
        return row

    def _want_words(self, fmt: str, granularities: set[str], language: str | None) -> bool:
        if "word" in granularities:
            if self.align is None:
                raise ApiError(400, "word timestamps are not available: this deployment runs without the aligner", "timestamps_unavailable", "timestamp_granularities[]")
            check_alignable(language)
            return True
        # Subtitles read better cut at words: aligned where the aligner can, else by segments.
        return fmt in ("srt", "vtt") and self.align is not None and (language is None or _alignable(language))

    # -- routes ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(self) -> JSONResponse:
        checks = {"asr": self.asr.ready.remote()}
        if self.align is not None:
            checks["align"] = self.align.ready.remote()
        out: dict[str, Any] = {}
        ok = True
        for name, call in checks.items():
            try:
                out[name] = await asyncio.wait_for(call, 10)
            except Exception as e:  # an engine that cannot answer is simply not ready
                ok, out[name] = False, f"not ready: {type(e).__name__}"
        return JSONResponse({"ready": ok, **out}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self.guard.authenticate(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": self.cfg.served_model_name, "object": "model", "owned_by": "qwen3-asr-batch"}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(self, request: Request) -> Response:
        async def work():
            try:
                form = await request.form(max_files=1, max_fields=32)
            except Exception as e:
                raise ApiError(400, f"expected a multipart/form-data body: {e}", "invalid_request") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "the audio file is missing: send it as the multipart field 'file'", "missing_file", "file")
            fmt, granularities = check_format(form.get("response_format"), form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities"))
            language = forced_language(form.get("language"), self.cfg.language)
            words = self._want_words(fmt, granularities, language)
            decoded = await self._decode(await upload.read(), None, "file")
            row = await self._row(decoded.samples, context=str(form.get("prompt") or ""), language=language, words=words)
            body, media_type = render(row, fmt, granularities)
            if isinstance(body, str):
                return Response(body, media_type=media_type), row["duration_s"]
            return JSONResponse(body), row["duration_s"]

        return await self._guarded("transcriptions", request.headers.get("authorization"), work)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        async def work():
            try:
                body = await request.json()
                messages = body["messages"]
                assert isinstance(messages, list)
            except Exception:
                raise ApiError(400, "expected a JSON body with a 'messages' list", "invalid_request", "messages") from None
            context, url = _chat_parts(messages)
            if url.startswith("data:"):
                decoded = await self._decode(_data_url(url), None, "audio_url")
            else:
                decoded = await self._decode(None, url, "audio_url")
            language = forced_language(body.get("language"), self.cfg.language)
            row = await self._row(decoded.samples, context=context, language=language, words=False)
            answer = toolkit_answer(row)
            return JSONResponse({
                "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or self.cfg.served_model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "seconds": round(row["duration_s"], 3)},
            }), row["duration_s"]  # fmt: skip

        return await self._guarded("chat", request.headers.get("authorization"), work)

    @app.websocket("/v1/audio/stream")
    async def stream(self, ws: WebSocket) -> None:
        """Streaming recognition. The client sends a JSON start message ``{"language",
        "prompt", "encoding": pcm_s16le | pcm_f32le | container, "sample_rate": 16000,
        "api_key" (when it cannot send an Authorization header, as browsers cannot)}``, then
        binary audio, then ``{"type": "stop"}``; the server answers ``{"type": "ready"}``, then
        partial and final messages (actors/serve/streaming.py), the last with ``is_last``, and
        closes. Errors: ``{"type": "error", "error": {...}}`` and a close (1008 for the key and
        limits, 1003 for bad input)."""
        await ws.accept()
        t0 = time.perf_counter()
        status, who, session = 200, None, None
        try:
            try:
                start = json.loads(await asyncio.wait_for(ws.receive_text(), 30))
                assert isinstance(start, dict)
            except (asyncio.TimeoutError, ValueError, AssertionError, KeyError):
                raise ApiError(400, "the first message must be a JSON start message", "invalid_request") from None
            who = self.guard.authenticate(ws.headers.get("authorization") or start.get("api_key"))
            self.guard.acquire(who)
            encoding = start.get("encoding", "pcm_s16le")
            if encoding not in STREAM_ENCODINGS:
                raise ApiError(400, f"encoding must be one of {', '.join(STREAM_ENCODINGS)}", "invalid_value", "encoding")
            if encoding != "container" and int(start.get("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE:
                raise ApiError(400, "PCM must be 16000 Hz mono (or send a container: encoding=container)", "invalid_value", "sample_rate")
            language = forced_language(start.get("language"), self.cfg.language)
            session = StreamSession(self._stream_call, self.cfg.streaming, language=language, context=str(start.get("prompt") or ""))
            await ws.send_json({"type": "ready"})
            await self._stream_loop(ws, session, encoding)
        except WebSocketDisconnect:
            status = 499
        except (ApiError, GuardError) as e:
            status = e.status
            await _ws_error(ws, ApiError(e.status, str(e), e.code), 1008 if e.status in (401, 413, 429) else 1003)
        except Exception as e:  # the replica keeps serving; the client learns why its stream ended
            status = 500
            logger.exception("stream failed")
            await _ws_error(ws, ApiError(500, f"stream failed: {type(e).__name__}", "server_error"), 1011)
        finally:
            if who is not None:
                self.guard.release(who)
            self.metrics.record("stream", status, time.perf_counter() - t0, session.seconds if session else 0.0)

    async def _stream_call(self, audio: np.ndarray, context: str, language: str | None, prefix: str) -> dict:
        return await self.asr.transcribe.remote(audio, context, language, prefix)

    async def _stream_loop(self, ws: WebSocket, session: StreamSession, encoding: str) -> None:
        container = bytearray()
        limit_s = self.cfg.limits.max_stream_s
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                data = message["bytes"]
                if encoding == "container":
                    container += data
                    if len(container) > self.cfg.limits.max_upload_mb * 1e6:
                        raise ApiError(413, "stream larger than limits.max_upload_mb", "upload_too_large")
                    try:  # a growing file: decode what has come so far, keep whatever decodes
                        decoded = await asyncio.to_thread(decode_audio, None, bytes(container), target_sr=SAMPLE_RATE, on_truncation="keep")
                        session.replace(decoded.samples)
                    except AudioError:
                        pass  # not enough of the file yet
                else:
                    dtype = np.int16 if encoding == "pcm_s16le" else np.float32
                    if len(data) % np.dtype(dtype).itemsize:
                        raise ApiError(400, f"{encoding} frames must hold whole samples", "invalid_audio")
                    samples = np.frombuffer(data, dtype=dtype)
                    session.feed(samples.astype(np.float32) / 32768.0 if dtype == np.int16 else samples)
                if session.seconds > limit_s:
                    raise ApiError(413, f"stream longer than {limit_s:g} s (limits.max_stream_s)", "too_long")
                if not np.isfinite(session.audio[-min(len(session.audio), SAMPLE_RATE):]).all():
                    raise ApiError(400, "the audio holds NaN or infinite samples", "invalid_samples")
                for out in await session.poll():
                    await ws.send_json(out)
            elif message.get("text") is not None:
                try:
                    kind = json.loads(message["text"]).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind != "stop":
                    raise ApiError(400, "text messages after the start message: {\"type\": \"stop\"}", "invalid_request")
                if encoding == "container" and container:
                    try:
                        decoded = await asyncio.to_thread(decode_audio, None, bytes(container), target_sr=SAMPLE_RATE, max_duration_s=limit_s)
                    except AudioError as e:
                        raise _audio_error(e, "audio") from None
                    session.replace(decoded.samples)
                for out in await session.finish():
                    await ws.send_json(out)
                await ws.close(1000)
                return


def build(cfg: ServeConfig):
    """The Serve application: the API deployment bound to an ASR deployment and (when
    ``align.enabled``) an aligner deployment, each with its replicas' resources and autoscaling."""
    from actors.serve.engines import AlignEngineDeployment, AsrEngineDeployment

    def options(d) -> dict:
        return dict(
            max_ongoing_requests=d.max_ongoing_requests,
            autoscaling_config=d.autoscaling.model_dump(),
            ray_actor_options={"num_cpus": d.cpus_per_replica, "num_gpus": d.gpus_per_replica},
        )

    asr = AsrEngineDeployment.options(**options(cfg.asr)).bind(
        cfg.asr.model, cfg.asr.model_cache_dir, cfg.asr.max_new_tokens, cfg.asr.max_chunk_s, cfg.asr.engine_options()
    )
    align = None
    if cfg.align.enabled:
        align = AlignEngineDeployment.options(**options(cfg.align)).bind(
            cfg.align.model, cfg.align.model_cache_dir, cfg.align.max_chunk_s, cfg.align.engine_options()
        )
    api = AsrApi.options(
        max_ongoing_requests=cfg.api_max_ongoing_requests,
        autoscaling_config=cfg.api_replicas.model_dump(),
        ray_actor_options={"num_cpus": cfg.api_cpus_per_replica},
    )
    return api.bind(cfg.model_dump(), asr, align)
