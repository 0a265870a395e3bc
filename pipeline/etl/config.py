"""Typed config of the scheduled ETL job (`jobs.etl`), validated once before anything runs.

The decode/asr/align/score/ray/progress sections are the transcribe job's own (one class,
``PipelineSections``), so a transcribe config's options carry over unchanged; `source`, `output`
and `lock` are what the ETL adds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import JobConfig, OutputFormat, PipelineSections, SubtitleOptions, _Strict

# The names under which the decoders' formats arrive (libsndfile: wav, flac, mp3, Ogg, AIFF, ...;
# FFmpeg: MP4/M4A/MOV/3GP, Matroska/WebM, ASF/WMA, AMR, AAC, AC-3). The decoder itself goes by the
# bytes; this list only picks files out of a prefix. Files it leaves out are counted and named.
DEFAULT_EXTENSIONS = [
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "aif", "aiff", "aifc", "au", "snd", "caf", "w64",
    "m4a", "m4b", "mp4", "mov", "3gp", "3g2", "aac", "webm", "mkv", "mka", "wma", "asf", "amr", "ac3",
]  # fmt: skip
# Schemes the run lock can make safe (conditional writes); see pipeline/etl/lock.py.
LOCK_SCHEMES = ("", "file", "s3", "s3a")


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


class SourceConfig(_Strict):
    prefix: str = Field(description="Folder (prefix) that receives new audio: s3://bucket/incoming/ or a local path")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the source")
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS),
        description="Audio file extensions to pick up (case-insensitive)",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns on the path relative to the prefix to skip, e.g. 'tmp/*'",
    )
    max_files_per_run: int | None = Field(
        default=None, gt=0, description="Process at most this many new files per run, oldest first; the rest wait"
    )
    min_age_s: float = Field(
        default=0.0, ge=0,
        description="Skip files modified less than this long ago (a copy into a local folder may be unfinished)",
    )
    track_changes: bool = Field(
        default=True,
        description="A file re-uploaded under one path (new size/ETag/mtime) is processed again; false = once per path",
    )
    retry_failed: bool = Field(
        default=False, description="Process again files whose earlier runs failed them (failed/ rows)"
    )

    @field_validator("extensions")
    @classmethod
    def _normalize_extensions(cls, value: list[str]) -> list[str]:
        cleaned = sorted({e.strip().lower().lstrip(".") for e in value if e.strip().lstrip(".")})
        if not cleaned:
            raise ValueError("give at least one extension")
        return cleaned


class EtlOutputConfig(_Strict):
    path: str = Field(description="ETL root: each run writes date=YYYY-MM-DD/run=<id>/ here, the run records _etl/")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options; empty = the source's"
    )
    subtitles: list[Literal["srt", "vtt"]] = Field(
        default_factory=list, description="Subtitle files per recording in each partition (needs align)"
    )
    subtitle_options: SubtitleOptions = Field(default_factory=SubtitleOptions)
    formats: list[OutputFormat] = Field(
        default_factory=list, description="output.formats of the transcribe job, in each partition"
    )


class LockConfig(_Strict):
    wait_s: float = Field(
        default=0.0, ge=0, description="How long a run waits for another run's lock before it gives up (doing nothing)"
    )
    poll_s: float = Field(default=5.0, gt=0, description="How often a waiting run looks at the lock again")
    heartbeat_s: float = Field(default=30.0, gt=0, description="How often the holder refreshes the lock")
    stale_after_s: float = Field(
        default=600.0, gt=0,
        description="A lock whose heartbeat is older than this belongs to a crashed run and is taken over",
    )
    busy_exit_code: int = Field(
        default=0, ge=0, le=255,
        description="Exit code when another run holds the lock (0: a skipped tick is not a failure)",
    )

    @model_validator(mode="after")
    def _beats_before_stale(self) -> "LockConfig":
        # A few missed heartbeats (a slow request, a GC pause) must not make a live run look dead.
        if self.stale_after_s < 3 * self.heartbeat_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must be at least 3 x heartbeat_s ({self.heartbeat_s})"
            )
        return self


class EtlConfig(PipelineSections):
    """The scheduled ETL job: transcribe (and optionally align) the audio that arrived since the last run."""

    source: SourceConfig
    output: EtlOutputConfig
    lock: LockConfig = Field(default_factory=LockConfig)

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options the transcription uses for the run manifest (under the output) and the audio
        (under the source) alike: the pipeline reads both with one set."""
        return dict(self.source.storage_options or self.output.storage_options)

    @property
    def output_storage_options(self) -> dict[str, Any]:
        return dict(self.output.storage_options or self.source.storage_options)

    @model_validator(mode="after")
    def _consistent(self) -> "EtlConfig":
        if _scheme(self.output.path) not in LOCK_SCHEMES:
            raise ValueError(
                f"output.path: the run lock needs conditional writes, implemented for s3:// and local "
                f"paths; got {_scheme(self.output.path)}://"
            )
        so, oo = self.source.storage_options, self.output.storage_options
        if so and oo and so != oo and _scheme(self.source.prefix) and _scheme(self.output.path):
            raise ValueError(
                "source.storage_options and output.storage_options differ: the transcription reads the "
                "run manifest (under output.path) and the audio with one set of options; give them once"
            )
        if self.source.prefix.rstrip("/") == self.output.path.rstrip("/"):
            raise ValueError("output.path must not be source.prefix itself (use a sibling, e.g. .../etl/)")
        if (self.output.subtitles or {"srt", "vtt"} & set(self.output.formats)) and not self.align.enabled:
            raise ValueError("output.subtitles and the srt/vtt output.formats need word timestamps: set align.enabled: true")
        return self

    def job_config(self, manifest: str, partition: str) -> JobConfig:
        """The transcribe job for one run: its manifest in, its partition out."""
        return JobConfig.model_validate(
            {
                "input": {"manifest": manifest, "format": "jsonl", "storage_options": self.storage_options},
                "output": {
                    "path": partition,
                    "storage_options": self.output_storage_options,
                    # A partition is new for every run; nothing there to replace.
                    "overwrite": False,
                    "subtitles": list(self.output.subtitles),
                    "subtitle_options": self.output.subtitle_options.model_dump(),
                    "formats": list(self.output.formats),
                },
                **self.model_dump(include=set(PipelineSections.model_fields)),
            }
        )
