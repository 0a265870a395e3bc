"""The benchmark job's typed config (configs/benchmark.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import AsrConfig, JobBase, RayConfig, StageConfig, _Strict


class CorpusConfig(_Strict):
    dir: str = Field(default="out/benchmark/corpus", description="Local folder for the generated files (reused)")
    formats: list[Literal["wav", "flac", "mp3", "ogg", "opus", "m4a", "alac", "webm", "wma"]] = Field(
        default_factory=lambda: ["wav", "flac", "mp3", "ogg", "opus", "m4a", "alac", "webm", "wma"]
    )
    rates: list[int] = Field(default_factory=lambda: [8000, 16000, 22050, 44100, 48000])
    files_per_kind: int = Field(default=8, gt=0, description="Files per (format, rate)")
    clip_s: float = Field(default=10.0, gt=0, description="Seconds per file")
    channels: int = Field(default=1, ge=1, le=8)

    @model_validator(mode="after")
    def _rates(self) -> "CorpusConfig":
        bad = [r for r in self.rates if not 4000 <= r <= 192000]
        if bad:
            raise ValueError(f"rates must be in 4000..192000 Hz, got {bad}")
        return self


class BenchOutput(_Strict):
    path: str = Field(default="out/benchmark", description="benchmark.json and benchmark.md go here")
    storage_options: dict = Field(default_factory=dict)


class BenchmarkConfig(JobBase):
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    output: BenchOutput = Field(default_factory=BenchOutput)
    decode: StageConfig = Field(default_factory=StageConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    alternatives: bool = Field(default=True, description="Time librosa.load and an ffmpeg subprocess too")
    engine: bool = Field(default=True, description="Run the engine parts (direct loop and end to end)")
    engine_files: int | None = Field(
        default=None, gt=0, description="Files for the engine parts; unset = the whole corpus"
    )
    per_format: bool = Field(
        default=True, description="Time the decode stage on each format alone (one core) next to its plain loop"
    )
    per_format_pass_s: float = Field(
        default=4.0, gt=0, description="Each format's pass repeats its files to last about this long (plain loop)"
    )
    cores: list[int] | None = Field(default=None, description="Decode scaling points; unset = 1..all cores")
    repeats: int = Field(
        default=5, gt=0, description="Rounds of pipeline decode next to plain loops; ratios are per-round medians"
    )
    ray: RayConfig = Field(default_factory=RayConfig)
