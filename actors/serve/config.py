"""The online application's configuration: the ``args`` of an application in a ``serve run``
config (configs/serve.yaml), validated once before any replica starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import EngineConfig, _Strict, _language_tag


class Autoscaling(_Strict):
    """Ray Serve's ``autoscaling_config`` for one deployment (replicas follow ongoing requests)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(
        default=16, gt=0, description="Requests in flight per replica the autoscaler aims at"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class EngineDeployment(_Strict):
    """One engine deployment (ASR or aligner): its model, replica size and scaling."""

    model: str = Field(description="Hub id, local directory, or s3:// / gs:// prefix holding the checkpoint")
    max_chunk_s: float = Field(default=60.0, gt=0, le=1200, description="Longest piece of audio per engine request")
    model_cache_dir: str = Field(default="/tmp/qwen3-asr-models")
    gpus_per_replica: float = Field(default=0.0, ge=0, description="GPU share per replica, fractions allowed (as the batch actors)")
    cpus_per_replica: float = Field(default=1.0, gt=0)
    max_ongoing_requests: int = Field(default=128, gt=0, description="Requests one replica accepts at once (vLLM batches them)")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    def engine_options(self) -> dict:
        """AsyncEngineArgs fields; vLLM takes ``gpu_memory_utilization`` of the whole GPU, so
        replicas sharing one split it: unset = 0.85 x the GPU share (the batch actors' rule)."""
        options = self.engine.model_dump()
        if options["gpu_memory_utilization"] is None:
            share = min(1.0, self.gpus_per_replica)
            options["gpu_memory_utilization"] = round(0.85 * share, 3) if share > 0 else 0.85
        return options


class AsrDeployment(EngineDeployment):
    model: str = "Qwen/Qwen3-ASR-0.6B"
    max_new_tokens: int = Field(default=512, gt=0)


class AlignDeployment(EngineDeployment):
    enabled: bool = Field(default=True, description="false: no aligner replicas; word timestamps are refused (400)")
    model: str = "Qwen/Qwen3-ForcedAligner-0.6B"
    max_chunk_s: float = Field(default=180.0, gt=0, le=300)


class Auth(_Strict):
    """Bearer tokens: from an environment variable (comma- or newline-separated) and/or a file
    (one per line; a mounted Kubernetes Secret). Never in the config itself."""

    api_keys_env: str | None = Field(default="ASR_API_KEYS", description="Environment variable holding the keys")
    api_keys_file: str | None = Field(default=None, description="File holding the keys, one per line")
    allow_anonymous: bool = Field(
        default=False, description="true: with no key configured, requests need none (a laptop); keys, once set, are always checked"
    )


class Limits(_Strict):
    max_upload_mb: float = Field(default=100.0, gt=0, description="Largest request body (413 above)")
    max_audio_s: float = Field(default=3 * 3600.0, gt=0, description="Longest audio per request (413 above)")
    max_concurrent_per_key: int = Field(default=8, gt=0, description="Requests and streams one key may have open at once (429 above)")
    request_timeout_s: float = Field(default=600.0, gt=0, description="A request still running after this answers 504")
    max_stream_s: float = Field(default=3600.0, gt=0, description="Longest audio one streaming session may send")


class Streaming(_Strict):
    """The streaming scheme of the Qwen3-ASR toolkit (``streaming_transcribe``): every ``step_s``
    of new audio the current window is decoded again, after the first ``unfixed_steps`` steps
    with the previous answer minus its last ``unfixed_units`` units as the answer prefix."""

    step_s: float = Field(default=1.0, gt=0, description="New audio between two decodes (partial results)")
    unfixed_steps: int = Field(default=2, ge=0, description="First decodes of a window without a prefix")
    unfixed_units: int = Field(default=3, ge=0, description="Words (CJK characters) of the previous answer taken back each step")
    endpoint_silence_s: float = Field(default=0.6, gt=0, description="Silence after speech that ends an utterance (final result)")
    silence_rms: float = Field(default=0.01, gt=0, description="100 ms frames quieter than this (and than a tenth of the loudest) are silence")
    max_window_s: float = Field(default=20.0, gt=0, description="An utterance longer than this is finalised without waiting for silence")
    context_chars: int = Field(default=200, ge=0, description="Characters of the earlier utterances given as context")


class ServeConfig(_Strict):
    """The application: engines, limits, keys, streaming, and where chat requests may fetch audio."""

    served_model_name: str = Field(default="qwen3-asr", description="The `model` requests name (any value is accepted)")
    asr: AsrDeployment = Field(default_factory=AsrDeployment)
    align: AlignDeployment = Field(default_factory=AlignDeployment)
    api_replicas: Autoscaling = Field(default_factory=lambda: Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=32))
    api_cpus_per_replica: float = Field(default=1.0, gt=0, description="CPUs per API replica (decoding runs there)")
    # Serve's default (5) would hold requests back at the proxy, which retries with backoff while
    # the replica is full: the API replica mostly waits on engines, so it takes many at once.
    api_max_ongoing_requests: int = Field(default=256, gt=0, description="Requests one API replica accepts at once")
    auth: Auth = Field(default_factory=Auth)
    limits: Limits = Field(default_factory=Limits)
    streaming: Streaming = Field(default_factory=Streaming)
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts an audio_url may name (http/https); data: URLs are always read"
    )
    language: str | None = Field(default=None, description="Default language of requests that give none (unset: detect)")
    _known_language = field_validator("language")(lambda v: _language_tag(v))
    log_level: Literal["info", "debug"] = "info"
