"""The evaluation job: named test sets through the transcribe pipeline under the released models'
protocol, summarized in the shape of the Qwen3-ASR model card's tables.

Protocol (fixed, not configurable, so numbers compare with the model card): greedy decoding,
max_new_tokens 1024, no language given to the model (it identifies the language; the manifest's
language is kept for scoring and for language-identification accuracy), no context. Scoring is
the pipeline's own (pipeline/score/wer.py): raw texts stored, one pinned normalizer, corpus-level
error counts with substitutions, deletions and insertions kept.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from pydantic import Field, field_validator

from pipeline.config import (
    AsrConfig,
    InputConfig,
    JobBase,
    JobConfig,
    OutputConfig,
    RayConfig,
    ScoreConfig,
    StageConfig,
    VadConfig,
    _Strict,
)  # fmt: skip
from pipeline.io import storage
from pipeline.redact import redact_url

logger = logging.getLogger(__name__)

# Column names of the common test-set layouts, as manifest columns -> canonical fields.
STYLES: dict[str, dict[str, str]] = {
    # NeMo-style LibriSpeech manifests: {"audio_filepath", "text", "duration"} (the default aliases).
    "librispeech": {},
    # FLEURS TSV/JSONL exports: the raw transcription keeps case and punctuation.
    "fleurs": {"audio": "path", "reference": "raw_transcription"},
    # Common Voice TSVs: clip name in `path` (relative to clips/, set audio_root), `sentence`, `locale`.
    "common_voice": {"audio": "path", "reference": "sentence", "language_hint": "locale"},
    "generic": {},
}

PROTOCOL = {"decoding": "greedy", "max_new_tokens": 1024, "language_given": False, "context": ""}


class TestSet(_Strict):
    name: str = Field(description="Name in the table; also the output folder under output.path")
    manifest: str = Field(description="Manifest URI (any fsspec path)")
    style: Literal["librispeech", "fleurs", "common_voice", "generic"] = "generic"
    format: Literal["jsonl", "csv", "tsv", "parquet"] | None = None
    column_map: dict[str, str] = Field(default_factory=dict, description="Overrides the style's columns")
    audio_root: str | None = None
    language: str | None = Field(default=None, description="Language of rows that name none")
    storage_options: dict = Field(default_factory=dict)
    limit: int | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise ValueError(f"{name!r}: letters, digits, '.', '_' and '-' only (it names a folder)")
        return name


class EvaluateOutput(_Strict):
    path: str = Field(default="out/evaluate")
    storage_options: dict = Field(default_factory=dict)


class EvaluateConfig(JobBase):
    test_sets: list[TestSet] = Field(min_length=1)
    output: EvaluateOutput = Field(default_factory=EvaluateOutput)
    decode: StageConfig = Field(default_factory=StageConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    compare_vad: bool = Field(
        default=False,
        description="Run every test set a second time with VAD off (output under <name>-no-vad/): WER and engine seconds side by side",
    )
    asr: AsrConfig = Field(default_factory=AsrConfig, description="Model and engine; the protocol fields are fixed")
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("test_sets")
    @classmethod
    def _unique(cls, sets: list[TestSet]) -> list[TestSet]:
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"test set names must be unique, got {names}")
        return sets

    def job_config(self, test_set: TestSet, *, vad: bool | None = None, folder: str | None = None) -> JobConfig:
        """The transcribe job of one test set; ``vad`` overrides ``vad.enabled``, ``folder`` the
        output folder's name (default: the set's name)."""
        asr = self.asr.model_copy(
            update={"max_new_tokens": PROTOCOL["max_new_tokens"], "language": None, "language_hints": False, "context": ""}
        )
        return JobConfig(
            input=InputConfig(
                manifest=test_set.manifest,
                format=test_set.format,
                column_map={**STYLES[test_set.style], **test_set.column_map},
                audio_root=test_set.audio_root,
                language=test_set.language,
                storage_options=test_set.storage_options,
                limit=test_set.limit,
            ),
            output=OutputConfig(
                path=storage.join(self.output.path, folder or test_set.name),
                storage_options=self.output.storage_options,
                overwrite=True,  # an evaluation is a measurement: never mixed with an earlier one
            ),
            decode=self.decode,
            vad=self.vad if vad is None else self.vad.model_copy(update={"enabled": vad}),
            asr=asr,
            score=ScoreConfig(enabled=True),
            ray=self.ray,
        )


def set_rows(name: str, metrics: dict) -> list[dict]:
    """Table rows of one test set: the whole set (one per unit), then one per language."""
    rows = []
    common = {
        "test_set": name,
        "engine_rtfx": metrics.get("engine_rtfx"),
        "throughput_audio_s_per_s": metrics.get("throughput_audio_s_per_s"),
        "audio_hours": metrics.get("audio_hours"),
    }
    lid = metrics.get("language_id") or {}
    for unit, c in sorted((metrics.get("wer") or {}).get("corpus", {}).items()):
        rows.append({**common, "language": "all", "unit": unit, **_counts(c), "language_id_accuracy": lid.get("accuracy")})
    for g in (metrics.get("wer") or {}).get("by_language", []):
        rows.append({**common, "language": g["language"], "unit": g["unit"], **_counts(g),
                     "language_id_accuracy": g.get("language_id_accuracy")})  # fmt: skip
    return rows


def vad_summary(metrics: dict) -> dict:
    """What one run says about speech detection and cost: corpus WER, engine seconds (busy and
    summed per request), audio sent to the engine, speech share, flags."""
    corpus = ((metrics.get("wer") or {}).get("corpus") or {})
    word = corpus.get("word") or next(iter(corpus.values()), {})
    stage = metrics.get("stage_s") or {}
    vad = metrics.get("vad") or {}
    return {
        "vad": bool(vad),
        "error_rate": word.get("error_rate"),
        "errors": word.get("errors"),
        "ref_units": word.get("ref_units"),
        "engine_busy_s": stage.get("asr_engine_busy_s"),
        "engine_request_s": stage.get("asr_request_s"),
        "audio_s": metrics.get("audio_s"),
        "audio_s_sent": vad.get("audio_s_sent", metrics.get("audio_s")),
        "speech_share": vad.get("speech_share"),
        "flags": {f["flag"]: f["rows"] for f in metrics.get("flags") or ()},
    }


def read_results(path: str, storage_options: dict) -> list[dict]:
    """The rows of a run's results/ (the columns the confidence check reads)."""
    import pyarrow.dataset as pads

    fs, root = storage.arrow_fs(storage.join(path, "results"), storage_options)
    columns = ["id", "reference", "language", "language_hint", "language_probability", "asr_chunks", "error"]
    try:
        table = pads.dataset(root, filesystem=fs, format="parquet").to_table(columns=columns)
    except (FileNotFoundError, OSError):
        return []
    return table.to_pylist()


def _counts(c: dict) -> dict:
    return {k: c.get(k) for k in ("rows", "errors", "substitutions", "deletions", "insertions", "ref_units", "error_rate")}


def to_markdown(result: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    def num(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    lines = [
        f"Model: `{result['model']}`. Protocol: greedy decoding, max_new_tokens {PROTOCOL['max_new_tokens']}, "
        "no language given. Error rates in % (WER for word units, CER for character units).",
        "",
        "| test set | language | WER/CER | S | D | I | N | rows | LID acc. | engine RTFx | e2e audio s/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines_after: list[str] = []
    conf_rows = [s for s in result["sets"] if s.get("confidence")]
    if conf_rows:
        lines_after += [
            "",
            "Confidence: AUROC of word confidence for telling wrong words from right ones, and language_probability of "
            "rows whose detected language is right vs wrong (0.5 = no information, 1 = perfect).",
            "",
            "| test set | words right / wrong | mean conf. right | mean conf. wrong | word AUROC | "
            "rows LID right / wrong | mean lang. p right | mean lang. p wrong | lang. AUROC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in conf_rows:
            w, lg = s["confidence"]["words"], s["confidence"]["language"]
            lines_after.append(
                f"| {s['name']} | {w['right']} / {w['wrong']} | {num(w['mean_confidence_right'], '.3f')} | "
                f"{num(w['mean_confidence_wrong'], '.3f')} | {num(w['auroc'], '.3f')} | {lg['rows_right']} / {lg['rows_wrong']} | "
                f"{num(lg['mean_probability_right'], '.3f')} | {num(lg['mean_probability_wrong'], '.3f')} | {num(lg['auroc'], '.3f')} |"
            )
    compared = [s for s in result["sets"] if s.get("vad_comparison")]
    if compared:
        lines_after += [
            "",
            "Speech detection: the same set with VAD on and off (one run). Engine s: the ASR engine's busy seconds.",
            "",
            "| test set | VAD | WER | errors / N | engine s | audio s sent / total | speech share | flags |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for s in compared:
            for label, v in (("on", s["vad_comparison"]["on"]), ("off", s["vad_comparison"]["off"])):
                flags = ", ".join(f"{k} {n}" for k, n in sorted(v["flags"].items())) or "-"
                lines_after.append(
                    f"| {s['name']} | {label} | {pct(v['error_rate'])} | {v['errors']} / {v['ref_units']} | "
                    f"{num(v['engine_busy_s'], '.2f')} | {num(v['audio_s_sent'])} / {num(v['audio_s'])} | "
                    f"{pct(v['speech_share'])} | {flags} |"
                )
    for r in result["table"]:
        metric = "WER" if r["unit"] == "word" else "CER"
        lines.append(
            f"| {r['test_set']} | {r['language']} | {metric} {pct(r['error_rate'])} | {r['substitutions']} | "
            f"{r['deletions']} | {r['insertions']} | {r['ref_units']} | {r['rows']} | {pct(r['language_id_accuracy'])} | "
            f"{num(r['engine_rtfx'])} | {num(r['throughput_audio_s_per_s'])} |"
        )
    lines += lines_after
    failed = {s["name"]: s for s in result["sets"] if s["rows_failed"]}
    if failed:
        lines += ["", "Failed rows (not scored): " + ", ".join(f"{n}: {s['rows_failed']}" for n, s in failed.items())]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(result["versions"].items()))
    lines += ["", f"Versions: {versions}."]
    return "\n".join(lines) + "\n"


def run_evaluation(cfg: EvaluateConfig, run_job=None) -> dict:
    """Each test set through the transcribe job, then the table (evaluation.json, evaluation.md)."""
    if run_job is None:
        from pipeline.transcribe import run as run_job

    sets, table, versions = [], [], {}
    started = time.time()
    for test_set in cfg.test_sets:
        logger.info("evaluating %s: %s", test_set.name, redact_url(test_set.manifest))
        result = run_job(cfg.job_config(test_set))
        m = result.metrics
        versions = m.get("versions", versions)
        out_path = storage.join(cfg.output.path, test_set.name)
        comparison = None
        if cfg.compare_vad:
            logger.info("evaluating %s again with VAD off", test_set.name)
            off = run_job(cfg.job_config(test_set, vad=False, folder=f"{test_set.name}-no-vad"))
            comparison = {"on": vad_summary(m), "off": vad_summary(off.metrics)}
        from pipeline.score.confidence import confidence_report

        sets.append({
            "confidence": confidence_report(read_results(out_path, cfg.output.storage_options)),
            "vad_comparison": comparison,
            "name": test_set.name,
            "manifest": redact_url(test_set.manifest),
            "output": redact_url(storage.join(cfg.output.path, test_set.name)),
            "rows_read": result.rows_read,
            "rows_written": result.rows_written,
            "rows_failed": result.rows_failed,
            "wer": m.get("wer"),
            "language_id": m.get("language_id"),
            "engine_rtfx": m.get("engine_rtfx"),
            "throughput_audio_s_per_s": m.get("throughput_audio_s_per_s"),
            "audio_hours": m.get("audio_hours"),
        })  # fmt: skip
        table += set_rows(test_set.name, m)
    out = {
        "model": redact_url(cfg.asr.model),
        "protocol": PROTOCOL,
        "table": table,
        "sets": sets,
        "versions": versions,
        "wall_s": time.time() - started,
    }
    storage.write_json(storage.join(cfg.output.path, "evaluation.json"), out, cfg.output.storage_options)
    fs, path = storage.fsspec_fs(storage.join(cfg.output.path, "evaluation.md"), cfg.output.storage_options)
    with fs.open(path, "w") as f:
        f.write(to_markdown(out))
    print(to_markdown(out))
    return out
