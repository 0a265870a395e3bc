"""Typed job configuration, validated once before Ray starts.

A YAML file gives the base; `--set a.b=c` overrides single fields. Every error names the field
(`asr.max_chunk_s: Input should be greater than 0`), so a typo fails in a second, not after the
cluster spent minutes loading models.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.languages import language_name


class ConfigError(ValueError):
    """An invalid config; the message names the offending field(s)."""


def _language_tag(value: str | None) -> str | None:
    """A language field's value, checked against the language tag rule (pipeline/languages.py)."""
    language_name(value)  # raises ValueError naming the tag
    return value


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt option silently ignored is worse than a failed start.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Strict):
    manifest: str = Field(description="Manifest URI: local path, s3://, gs:// (jsonl, csv, tsv, parquet)")
    format: Literal["jsonl", "csv", "tsv", "parquet"] | None = Field(
        default=None, description="Manifest format; derived from the extension when unset"
    )
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> manifest column, e.g. {reference: transcript}",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for reading manifests and audio (e.g. endpoint_url, anon)",
    )
    audio_root: str | None = Field(
        default=None, description="Base for relative audio paths; unset = the manifest's directory"
    )
    limit: int | None = Field(default=None, gt=0, description="Read only the first N rows (smoke runs)")
    language: str | None = Field(
        default=None, description="Language of rows whose manifest names none (a test set of one language)"
    )
    _known_language = field_validator("language")(lambda v: _language_tag(v))
    # A manifest is data from outside; the config is trusted. These two say what a manifest may
    # make the workers read besides the object store: without them an audio URL like
    # http://169.254.169.254/... would have a worker fetch the cloud metadata server.
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts http(s):// audio may come from: exact names or IPs, or *.example.com; empty = no http(s) audio",
    )
    allow_local_paths: bool = Field(
        default=True, description="Audio may be a local path or file:// (false for manifests you do not control)"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, hosts: list[str]) -> list[str]:
        cleaned = []
        for raw in hosts:
            host = raw.strip().lower().rstrip(".")
            name = host[2:] if host.startswith("*.") else host
            if ":" in name:
                try:
                    ipaddress.IPv6Address(name)
                except ValueError:
                    raise ValueError(f"{raw!r}: give a host name only (no scheme, port or path)") from None
            elif not name or not re.fullmatch(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*", name):
                raise ValueError(f"{raw!r}: give a host name, an IP address or *.example.com (no scheme, port or path)")
            cleaned.append(host)
        return cleaned


class SubtitleOptions(_Strict):
    """How words are grouped into subtitle lines (cues)."""

    max_chars: int = Field(default=42, gt=0, description="Longest line, in characters")
    max_duration_s: float = Field(default=7.0, gt=0, description="Longest cue")
    max_gap_s: float = Field(default=0.8, ge=0, description="A pause longer than this starts a new cue")
    # Players reject or skip cues whose end is not after their start; flashes under ~0.3 s are unreadable.
    min_duration_s: float = Field(
        default=0.3, ge=0.01, description="Shortest cue (or its words' span when longer); a cue that cannot get it joins the next"
    )


OutputFormat = Literal["jsonl", "txt", "json", "srt", "vtt", "tsv"]


class OutputConfig(_Strict):
    path: str = Field(description="Output prefix: results/, failed/ and metrics.json go under it")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    overwrite: bool = Field(
        default=False,
        description="true: replace results/, failed/ and subtitles/ of an earlier run; false: resume it (ids already written are skipped)",
    )
    rows_per_file: int = Field(
        default=1000, gt=0,
        description="Rows per committed results/failed file: what a killed job can lose at most per file being written",
    )
    subtitles: list[Literal["srt", "vtt"]] = Field(
        default_factory=list,
        description="Subtitle files per recording under <path>/subtitles/ (needs word timestamps)",
    )
    subtitle_options: SubtitleOptions = Field(default_factory=SubtitleOptions)
    formats: list[OutputFormat] = Field(
        default_factory=list,
        description="Outputs beside the Parquet results: jsonl (<path>/jsonl/, one line per recording), "
        "per recording txt, json (OpenAI verbose_json), srt, vtt (need word timestamps), tsv (Whisper, ms)",
    )

    @property
    def subtitle_formats(self) -> list[str]:
        """srt/vtt from ``subtitles`` and ``formats``, each once, in that order."""
        return list(dict.fromkeys([*self.subtitles, *(f for f in self.formats if f in ("srt", "vtt"))]))

    @property
    def file_formats(self) -> list[str]:
        """The other formats of ``formats`` (jsonl, txt, json, tsv), each once."""
        return list(dict.fromkeys(f for f in self.formats if f not in ("srt", "vtt")))


class StageConfig(_Strict):
    """Per-stage Ray Data knobs; unset values fall back to pipeline defaults."""

    batch_size: int = Field(default=8, gt=0)
    batches_per_task: int = Field(
        default=16, gt=0, description="Decode batches per Ray task (rows per block = batch_size x this)"
    )
    num_cpus: float = Field(default=1.0, gt=0)
    concurrency: int | None = Field(
        default=None, gt=0, description="Max parallel tasks; unset = as many as cores allow"
    )
    # Decoding holds the source frames (rate x channels x 4 bytes a second) before downmixing:
    # 2 h of 48 kHz stereo is 2.8 GB in one worker. Longer files are refused from their header.
    max_audio_s: float = Field(
        default=7200.0, gt=0, description="Longer recordings (or segments) fail as too_long before decoding"
    )
    min_audio_s: float = Field(default=0.1, ge=0, description="Shorter recordings fail as too_short")
    reject_silence: bool = Field(
        default=True, description="Digital silence (peak below -80 dBFS) fails as silent_audio instead of being transcribed"
    )
    on_truncation: Literal["fail", "keep"] = Field(
        default="fail",
        description="A recording that decodes shorter than its header declares (cut or damaged): fail the row as "
        "truncated_audio, or keep the decoded part with a decode_warnings entry saying what was lost",
    )
    audio_stream: int = Field(
        default=0, ge=0, description="Which audio stream of a container with several (video files): 0 = the first"
    )


class VadConfig(_Strict):
    """Speech-activity detection (pipeline/audio/vad.py, Silero VAD) on the decode workers: only
    speech is sent to the engine. Defaults of the first four are silero-vad's."""

    enabled: bool = Field(default=True, description="false: every second of audio is sent to the engine (chunks cut at quiet points)")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="Frame speech probability at which speech starts (ends below threshold - 0.15)")
    min_speech_s: float = Field(default=0.25, ge=0, description="Shorter speech regions are dropped")
    min_silence_s: float = Field(default=0.1, ge=0, description="Non-speech this long ends a speech region")
    pad_s: float = Field(default=0.03, ge=0, le=1, description="Audio kept before and after each speech region")
    max_gap_s: float = Field(
        default=1.0, ge=0,
        description="Non-speech gaps up to this long stay inside a chunk (pauses); longer ones end it and are never sent",
    )


class PoolConfig(_Strict):
    min_size: int = Field(default=1, ge=1)
    max_size: int = Field(default=1, ge=1)
    task_retries: int = Field(
        default=2, ge=0,
        description="Retries of a batch whose actor process died (Ray replaces the actor); then its rows "
        "are retried one at a time, and a row that still fails goes to failed/ as worker_crashed",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "PoolConfig":
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be >= min_size ({self.min_size})")
        return self


class EngineConfig(_Strict):
    """vLLM engine arguments passed through to AsyncEngineArgs."""

    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=64, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1,
        description="unset = 0.85 x the actor's GPU share (0.5 GPU -> 0.425), so engines sharing a GPU fit",
    )
    dtype: str = "auto"
    enforce_eager: bool | None = Field(
        default=None, description="unset = eager on CPU engines (compiling costs a minute per start), compiled on GPU"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other AsyncEngineArgs field")


class GuardConfig(_Strict):
    """Guards on each chunk's answer (actors/asr_guards.py): token budget, loops, context echo."""

    tokens_per_s: float = Field(default=15.0, gt=0, description="Answer tokens allowed per second of speech in the chunk")
    margin_tokens: int = Field(default=24, ge=0, description="Tokens added to every chunk's budget (language tag, end token)")
    min_repeats: int = Field(default=5, ge=2, description="An n-gram of tokens repeated this many times in a row is a loop")
    max_ngram: int = Field(default=10, ge=1, description="Longest n-gram (tokens) the loop check looks for")
    repetition_penalty: float = Field(
        default=1.3, gt=0, le=2, description="vLLM repetition_penalty for the one retry of a looping chunk (1 = none)"
    )
    echo_min_overlap: float = Field(default=0.8, gt=0, le=1, description="Share of the answer's words found in the context")
    echo_max_speech_s: float = Field(default=1.0, ge=0, description="... from a chunk with less speech than this: a context echo, dropped")


class AsrConfig(_Strict):
    model: str = Field(
        default="Qwen/Qwen3-ASR-0.6B",
        description="Hub id, local directory, or s3:// / gs:// prefix holding the checkpoint",
    )
    # 60 s: each chunk is one engine request, so shorter chunks spread a long recording over
    # more concurrent requests (better batching, smaller per-request KV cache) while every cut
    # is a point where a word can be split or context lost. At 60 s a cut comes once a minute,
    # always in the quietest 100 ms nearby, a chunk is ~800 audio tokens (far inside vLLM's
    # default batched-token budget) and it also fits the forced aligner's 180 s limit, so the
    # aligner can reuse ASR chunks as they are.
    max_chunk_s: float = Field(default=60.0, gt=0, le=1200)
    max_new_tokens: int = Field(default=512, gt=0, description="Most answer tokens per chunk (guards.tokens_per_s lowers it per chunk)")
    guards: GuardConfig = Field(default_factory=GuardConfig)
    logprobs: bool = Field(
        default=True, description="Ask the engine for token log-probabilities: avg_logprob, word confidence, language_probability"
    )
    language: str | None = Field(
        default=None, description="Force this language for every row (else per-row hint or auto)"
    )
    _known_language = field_validator("language")(lambda v: _language_tag(v))
    language_hints: bool = Field(
        default=True,
        description="false: the rows' language is kept (scoring, language-ID accuracy) but not given to the "
        "model, which identifies it itself (the released models' evaluation protocol)",
    )
    context: str = Field(default="", description="Job-level context / hotwords for every row")
    batch_size: int = Field(default=16, gt=0, description="Rows per Ray batch sent to one actor")
    max_in_flight_batches: int = Field(
        default=4, gt=0, description="Ray batches an actor works on at once (async engine)"
    )
    pool: PoolConfig = Field(default_factory=PoolConfig)
    gpus_per_actor: float | None = Field(
        default=None, ge=0, description="GPUs per actor, fractions allowed; unset = 1 if the cluster has GPUs, else 0"
    )
    cpus_per_actor: float | None = Field(
        default=None, gt=0,
        description="CPUs Ray reserves per actor; unset = 1 with GPUs, else a quarter of the cluster's CPUs (at most 1)",
    )
    model_cache_dir: str = Field(
        default="/tmp/qwen3-asr-models", description="Per-node cache for models copied from object storage"
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)


class SentenceOptions(_Strict):
    """How aligned words are cut into sentence segments (pipeline/align/sentences.py)."""

    max_pause_s: float = Field(default=1.0, gt=0, description="A longer pause between words ends a segment")
    # Whisper's segments stay within its 30 s window; subtitle and labeling tools expect as much.
    max_duration_s: float = Field(default=30.0, gt=0, description="Longest segment (a single longer word excepted)")


class AlignConfig(_Strict):
    """The Qwen3-ForcedAligner stage: word/character timestamps."""

    enabled: bool = Field(default=False, description="Add word timestamps (transcribe job)")
    model: str = Field(
        default="Qwen/Qwen3-ForcedAligner-0.6B",
        description="Hub id, local directory, or s3:// / gs:// prefix holding the aligner checkpoint",
    )
    # The qwen-asr reference feeds the aligner at most 180 s at once (the model card says 300 s);
    # longer audio is aligned chunk by chunk, cut at quiet points.
    max_chunk_s: float = Field(default=180.0, gt=0, le=300)
    language: str | None = Field(
        default=None, description="Language of every row; unset = the row's detected language or hint"
    )
    _known_language = field_validator("language")(lambda v: _language_tag(v))
    batch_size: int = Field(default=16, gt=0, description="Rows per Ray batch sent to one actor")
    max_in_flight_batches: int = Field(default=4, gt=0)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    gpus_per_actor: float | None = Field(
        default=None, ge=0,
        description="GPUs per actor, fractions allowed; unset = 0.5 (sharing with ASR) or 1 (align job) with GPUs, else 0",
    )
    cpus_per_actor: float | None = Field(
        default=None, gt=0,
        description="CPUs Ray reserves per actor; unset = 1 with GPUs, else a quarter of the cluster's CPUs (at most 1)",
    )
    model_cache_dir: str = Field(default="/tmp/qwen3-asr-models")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sentences: SentenceOptions = Field(default_factory=lambda: SentenceOptions())


class ScoreConfig(_Strict):
    enabled: bool = Field(default=True, description="Score rows that have a reference")


class RayConfig(_Strict):
    address: str | None = Field(
        default=None,
        description="Cluster address; unset = the job's cluster under `ray job submit`, else an embedded local Ray",
    )
    num_cpus: int | None = Field(default=None, gt=0, description="CPUs for an embedded local Ray")
    object_store_memory: int | None = Field(default=None, gt=0)
    # Ray starts workers at niceness 15 so its own daemons win the CPU; on a machine that runs the
    # job itself (a laptop, one box) that also puts decoding below every ordinary process and the
    # kernel's housekeeping. A cluster's workers keep what its `ray start` set (RAY_worker_niceness).
    worker_niceness: int | None = Field(
        default=None,
        ge=0,
        le=19,
        description="Niceness of an embedded local Ray's workers; unset = the driver's own (Ray's default is 15)",
    )


class ProgressConfig(_Strict):
    """Progress lines in the driver's log (what `ray job logs` shows)."""

    # Rows count once committed, rows_per_file at a time: a shorter interval than one file
    # takes to fill only repeats the same numbers.
    interval_s: float = Field(
        default=30.0, ge=0, description="Seconds between progress lines; 0 = a line per committed file"
    )


class JobBase(_Strict):
    """What every job's config has: its console level."""

    log_level: Literal["info", "debug"] = Field(
        default="info",
        description="info: start, progress, warnings that matter, summary; debug: also the engines', "
        "Ray's and Ray Data's own logs on the console (they are always in Ray's session log files)",
    )


class PipelineSections(JobBase):
    """The transcription pipeline's sections, shared by the transcribe job and the ETL job (which
    runs the transcribe job once per run with them)."""

    decode: StageConfig = Field(default_factory=StageConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    progress: ProgressConfig = Field(default_factory=ProgressConfig)


class JobConfig(PipelineSections):
    """The transcribe job: ASR, optionally followed by alignment."""

    input: InputConfig
    output: OutputConfig

    @property
    def aligns(self) -> bool:
        return self.align.enabled

    @model_validator(mode="after")
    def _subtitles_need_words(self) -> "JobConfig":
        if self.output.subtitle_formats and not self.align.enabled:
            raise ValueError("output.subtitles and the srt/vtt output.formats need word timestamps: set align.enabled: true")
        return self


class AlignOnlyConfig(AlignConfig):
    enabled: bool = Field(default=True, description="Always true in the align job")


class AlignJobConfig(JobBase):
    """The align-only job: existing transcripts (the manifest's text) timed against their audio."""

    input: InputConfig
    output: OutputConfig
    decode: StageConfig = Field(default_factory=StageConfig)
    align: AlignOnlyConfig = Field(default_factory=AlignOnlyConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    progress: ProgressConfig = Field(default_factory=ProgressConfig)

    @property
    def aligns(self) -> bool:
        return True

    @model_validator(mode="after")
    def _always_aligns(self) -> "AlignJobConfig":
        if not self.align.enabled:
            raise ValueError("align.enabled: the align job always aligns; remove the field or set it true")
        return self


class SegmentConfig(_Strict):
    """How the labeling job cuts recordings into training utterances."""

    min_s: float = Field(default=1.0, ge=0, description="Shorter utterances are merged with a neighbour, else rejected")
    # 30 s is the longest clip the Qwen3-ASR fine-tuning recipe and most ASR trainers take whole.
    max_s: float = Field(default=20.0, gt=0, le=60, description="Longest utterance; longer spans are cut at the widest pause")
    max_pause_s: float = Field(
        default=1.0, gt=0, description="A pause longer than this always ends an utterance (no long silences inside)"
    )
    pad_s: float = Field(
        default=0.15, ge=0, le=1, description="Audio kept before the first and after the last word (never past the midpoint to a neighbour)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "SegmentConfig":
        if self.min_s >= self.max_s:
            raise ValueError(f"min_s ({self.min_s}) must be < max_s ({self.max_s})")
        return self


class AgreementConfig(AsrConfig):
    """A second ASR model that transcribes every candidate utterance; its WER against the first
    model's text is the agreement signal."""

    enabled: bool = Field(default=True, description="Transcribe candidates with a second model")
    model: str = Field(default="Qwen/Qwen3-ASR-1.7B", description="Hub id, local directory, or s3:// / gs:// prefix")
    max_new_tokens: int = Field(default=256, gt=0)


class FilterConfig(_Strict):
    """Which quality signals reject an utterance; null disables a check. Rejected utterances stay
    in utterances/ with their reasons; only kept ones are exported."""

    min_units_per_s: float | None = Field(default=0.5, ge=0, description="Slower speech: mostly silence or missed words")
    max_units_per_s: float | None = Field(
        default=9.0, gt=0, description="Faster speech: hallucinated text (units are words, or characters for zh/yue/ja)"
    )
    max_repeats: int | None = Field(default=4, ge=2, description="A word or phrase (up to 4 units) repeated this many times in a row")
    max_compression_ratio: float | None = Field(
        default=2.4, gt=0, description="zlib ratio of the text (Whisper's hallucination check)"
    )
    min_rms_db: float | None = Field(default=-50.0, description="Quieter audio (dBFS) is treated as non-speech")
    reject_empty: bool = Field(default=True, description="No letters or digits in the transcript")
    reject_language_mismatch: bool = Field(default=True, description="Detected language differs from the manifest's hint")
    min_confidence: float | None = Field(
        default=0.5, ge=0, le=1, description="Mean word confidence (the ASR engine's probability, 0-1) below this: unreliable text"
    )
    min_speech_share: float | None = Field(
        default=0.5, ge=0, le=1, description="Share of the utterance inside detected speech (VAD chunks) below this: mostly non-speech"
    )
    reject_flags: list[str] = Field(
        default_factory=lambda: ["repetition", "context_echo", "token_limit"],
        description="Output-guard flags of the recording that reject its utterances (see the flags column)",
    )
    max_agreement_wer: float | None = Field(
        default=0.3, ge=0, description="WER between the two models' transcripts (needs agreement.enabled)"
    )


class ExportConfig(_Strict):
    audio_format: Literal["flac", "wav"] = Field(default="flac", description="Format of the cut utterance audio")
    jsonl: bool = Field(default=True, description="Write <output>/train.jsonl in the Qwen3-ASR fine-tuning format")
    dataset: bool = Field(default=True, description="Write <output>/dataset/ Parquet with the audio embedded (Hugging Face datasets)")


class LabelAlignConfig(AlignConfig):
    enabled: bool = Field(default=True, description="Always true in the label job (utterances are cut at word times)")


class LabelJobConfig(JobConfig):
    """The labeling job: transcribe with timestamps, cut into utterances, score, filter, export."""

    align: LabelAlignConfig = Field(default_factory=LabelAlignConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    agreement: AgreementConfig = Field(default_factory=AgreementConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _needs_words(self) -> "LabelJobConfig":
        if not self.align.enabled:
            raise ValueError("align.enabled: the label job cuts at word times; remove the field or set it true")
        if not self.output.overwrite:
            raise ValueError("output.overwrite: the label job does not resume; set it true (its outputs are replaced)")
        if self.filter.max_agreement_wer is not None and not self.agreement.enabled:
            raise ValueError("filter.max_agreement_wer needs agreement.enabled: true (or set it null)")
        return self


def _set_dotted(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}={raw}: empty key segment")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    # YAML parsing turns "4" into 4, "true" into True, "[a, b]" into a list, "null" into None.
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    return pairs


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{field}: {e['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines)


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    schema: type[BaseModel] = JobConfig,
) -> Any:
    """Read YAML (if given), apply `a.b=c` overrides, validate against `schema` (the transcribe
    job's by default). Raises ConfigError."""
    tree: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    try:
        return schema.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
