"""The labeling job's CPU stages and output tables.

plan_batch (after the aligner): cut each recording into utterances and measure the signals that
need no second model. finish_batch (after the agreement model): the agreement WER, the final
keep/reject decision, and the kept utterances' audio cut and written under ``<output>/audio/``.
Both keep one output row per recording; the utterance tables are exploded only when written.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa

from pipeline.config import FilterConfig, SegmentConfig
from pipeline.io import storage
from pipeline.io.schema import UTTERANCE, with_columns
from pipeline.label.quality import agreement_wer, first_pass_reasons, measure
from pipeline.label.segments import plan_utterances
from pipeline.languages import language_name

SAMPLE_RATE = 16000
AUDIO_DIR = "audio"
UTTERANCES_DIR = "utterances"
DATASET_DIR = "dataset"
JSONL_FILE = "train.jsonl"

# One row per utterance, kept or rejected: every signal a column, so a dataset can be
# re-filtered with other thresholds without running a model again.
UTTERANCE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("recording_id", pa.string()),
        ("index", pa.int32()),
        ("source_audio", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("duration_s", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_hint", pa.string()),
        ("units", pa.int32()),
        ("units_per_s", pa.float64()),
        ("max_repeat", pa.int32()),
        ("compression_ratio", pa.float64()),
        ("rms_db", pa.float64()),
        ("empty", pa.bool_()),
        ("language_mismatch", pa.bool_()),
        ("confidence", pa.float64()),
        ("speech_share", pa.float64()),
        ("flags", pa.list_(pa.string())),
        ("agreement_text", pa.string()),
        ("agreement_language", pa.string()),
        ("agreement_wer", pa.float64()),
        ("kept", pa.bool_()),
        ("reject_reasons", pa.list_(pa.string())),
        ("audio_path", pa.string()),
    ]
)

# Hugging Face `datasets` reads this schema metadata: `audio` decodes as an Audio feature.
_HF_FEATURES = {
    "audio": {"_type": "Audio", "sampling_rate": SAMPLE_RATE},
    "text": {"dtype": "string", "_type": "Value"},
    "language": {"dtype": "string", "_type": "Value"},
    "id": {"dtype": "string", "_type": "Value"},
    "recording_id": {"dtype": "string", "_type": "Value"},
    "start_s": {"dtype": "float64", "_type": "Value"},
    "end_s": {"dtype": "float64", "_type": "Value"},
    "duration_s": {"dtype": "float64", "_type": "Value"},
}
DATASET_SCHEMA = pa.schema(
    [
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("text", pa.string()),
        ("language", pa.string()),
        ("id", pa.string()),
        ("recording_id", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("duration_s", pa.float64()),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})},
)


def _column(batch: pa.Table, name: str) -> list:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * batch.num_rows


def _samples(batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    col = batch.column("samples").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy()


def _language_at(t: float, segments: list[dict] | None, fallback: str | None) -> str | None:
    """The language ASR detected in the chunk holding time t (chunks can differ)."""
    for seg in segments or []:
        if seg["start"] <= t < seg["end"] and seg.get("language"):
            return seg["language"]
    return fallback


def _spans(words, segments, duration: float, language: str | None, seg: SegmentConfig) -> list[dict]:
    if words is not None:
        return [
            {
                "start": u.start, "end": u.end, "speech_start": u.speech_start, "speech_end": u.speech_end,
                "text": u.text,
            }
            for u in plan_utterances(
                words, duration_s=duration, language=language, min_s=seg.min_s, max_s=seg.max_s,
                max_pause_s=seg.max_pause_s, pad_s=seg.pad_s,
            )
        ]  # fmt: skip
    # No word times (a language the aligner does not support): the ASR chunks are the only
    # cut points; the filter rejects those longer than max_s.
    return [
        {"start": s["start"], "end": s["end"], "speech_start": s["start"], "speech_end": s["end"], "text": s["text"] or ""}
        for s in segments or []
    ]


def _mean_confidence(words: list[dict] | None, start: float, end: float) -> float | None:
    """Mean ``confidence`` of the words whose middle lies in [start, end); None without any."""
    values = [
        w["confidence"] for w in words or ()
        if w.get("confidence") is not None and start <= (w["start"] + w["end"]) / 2 < end
    ]  # fmt: skip
    return sum(values) / len(values) if values else None


def _covered(chunks: list[dict] | None, start: float, end: float) -> float | None:
    """Share of [start, end) inside the ASR chunks (with VAD: the speech the engine was given)."""
    if end <= start:
        return None
    inside = sum(max(0.0, min(end, c["end"]) - max(start, c["start"])) for c in chunks or ())
    return min(1.0, inside / (end - start))


def plan_batch(batch: pa.Table, *, segment: dict, filter: dict) -> pa.Table:
    """For ``map_batches(batch_format="pyarrow")`` after the aligner (rows keep ``samples``)."""
    seg, f = SegmentConfig(**segment), FilterConfig(**filter)
    n = batch.num_rows
    flat, offsets = _samples(batch)
    words, segments, languages = _column(batch, "words"), _column(batch, "segments"), _column(batch, "language")
    hints, durations, errors = _column(batch, "language_hint"), _column(batch, "duration_s"), _column(batch, "error")
    chunks, flags, speech = _column(batch, "asr_chunks"), _column(batch, "flags"), _column(batch, "speech_s")
    out: list[list[dict] | None] = [None] * n
    for i in range(n):
        if errors[i] is not None:
            continue
        samples = flat[offsets[i] : offsets[i + 1]]
        utterances = []
        for k, span in enumerate(_spans(words[i], segments[i], float(durations[i] or 0.0), languages[i], seg)):
            language = _language_at((span["start"] + span["end"]) / 2, segments[i], languages[i])
            audio = samples[int(round(span["start"] * SAMPLE_RATE)) : int(round(span["end"] * SAMPLE_RATE))]
            signals = measure(
                span["text"], language, hints[i], audio, SAMPLE_RATE, span["speech_end"] - span["speech_start"],
                confidence=_mean_confidence(words[i], span["start"], span["end"]),
                # The ASR chunks cover the detected speech only when VAD ran (speech_s set).
                speech_share=_covered(chunks[i], span["start"], span["end"]) if speech[i] is not None else None,
                flags=tuple(flags[i] or ()),
            )  # fmt: skip
            utterances.append(
                {
                    **span,
                    "index": k,
                    "language": language,
                    "units": signals.units,
                    "units_per_s": signals.units_per_s,
                    "max_repeat": signals.max_repeat,
                    "compression_ratio": signals.compression_ratio,
                    "rms_db": signals.rms_db if np.isfinite(signals.rms_db) else None,
                    "empty": signals.empty,
                    "language_mismatch": signals.language_mismatch,
                    "confidence": signals.confidence,
                    "speech_share": signals.speech_share,
                    "flags": list(signals.flags),
                    "reasons": first_pass_reasons(signals, min_s=seg.min_s, max_s=seg.max_s, f=f),
                    "kept": None,
                }
            )
        out[i] = utterances
    return with_columns(batch, {"utterances": pa.array(out, pa.list_(UTTERANCE))})


def _encode(audio: np.ndarray, fmt: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def finish_batch(
    batch: pa.Table, *, filter: dict, output_path: str, audio_format: str, storage_options: dict | None = None
) -> pa.Table:
    """For ``map_batches(batch_format="pyarrow")`` after the agreement model: decides each
    utterance, writes the kept ones' audio, and drops the recording's waveform."""
    f = FilterConfig(**filter)
    fs, base = storage.fsspec_fs(storage.join(output_path, AUDIO_DIR), storage_options)
    flat, offsets = _samples(batch)
    ids, utterances, errors = _column(batch, "id"), _column(batch, "utterances"), _column(batch, "error")
    for i, utts in enumerate(utterances):
        if errors[i] is not None or utts is None:
            continue
        folder = storage.safe_name(ids[i])
        for u in utts:
            if u["agreement_text"] is not None:
                u["agreement_wer"] = agreement_wer(u["text"], u["agreement_text"], u["language"])
                if f.max_agreement_wer is not None and u["agreement_wer"] > f.max_agreement_wer:
                    u["reasons"].append(f"disagreement: WER {u['agreement_wer']:.2f} > {f.max_agreement_wer}")
            u["kept"] = not u["reasons"]
            if not u["kept"]:
                continue
            start, end = int(round(u["start"] * SAMPLE_RATE)), int(round(u["end"] * SAMPLE_RATE))
            data = _encode(flat[offsets[i] + start : offsets[i] + end], audio_format)
            name = f"{folder}/{folder}_{u['index']:04d}.{audio_format}"
            fs.makedirs(f"{base}/{folder}", exist_ok=True)
            fs.pipe_file(f"{base}/{name}", data)
            u["audio_path"] = storage.join(output_path, AUDIO_DIR, name)
            u["audio_bytes"] = data
    out = batch.drop_columns([c for c in ("samples", "chunks") if c in batch.column_names])
    return with_columns(out, {"utterances": pa.array(utterances, pa.list_(UTTERANCE))})


def utterance_id(recording_id: str, index: int) -> str:
    return f"{recording_id}_{index:04d}"


def explode_utterances(batch: pa.Table, *, kept_only: bool = False, with_audio: bool = False) -> pa.Table:
    """Recording rows -> one row per utterance (UTTERANCE_SCHEMA, or DATASET_SCHEMA with audio)."""
    rows = []
    for rec_id, source, hint, utts in zip(
        _column(batch, "id"), _column(batch, "audio"), _column(batch, "language_hint"), _column(batch, "utterances")
    ):
        for u in utts or []:
            if kept_only and not u["kept"]:
                continue
            rows.append((rec_id, source, hint, u))
    if with_audio:
        return pa.Table.from_pylist(
            [
                {
                    "audio": {"bytes": u["audio_bytes"], "path": u["audio_path"]},
                    "text": u["text"],
                    "language": u["language"],
                    "id": utterance_id(rec_id, u["index"]),
                    "recording_id": rec_id,
                    "start_s": u["start"],
                    "end_s": u["end"],
                    "duration_s": u["end"] - u["start"],
                }
                for rec_id, _, _, u in rows
            ],
            schema=DATASET_SCHEMA,
        )
    return pa.Table.from_pylist(
        [
            {
                "id": utterance_id(rec_id, u["index"]),
                "recording_id": rec_id,
                "index": u["index"],
                "source_audio": source,
                "start_s": u["start"],
                "end_s": u["end"],
                "duration_s": u["end"] - u["start"],
                "text": u["text"],
                "language": u["language"],
                "language_hint": hint,
                **{k: u[k] for k in ("units", "units_per_s", "max_repeat", "compression_ratio", "rms_db", "empty",
                                     "language_mismatch", "confidence", "speech_share", "flags",
                                     "agreement_text", "agreement_language", "agreement_wer",
                                     "kept", "audio_path")},
                "reject_reasons": u["reasons"],
            }
            for rec_id, source, hint, u in rows
        ],
        schema=UTTERANCE_SCHEMA,
    )  # fmt: skip


def finetune_line(audio_path: str, text: str, language: str | None) -> str:
    """One line of the Qwen3-ASR fine-tuning JSONL: the model's own output format, with
    ``language None`` when the language is unknown (the model then learns no language ID from it)."""
    try:
        name = language_name(language) or "None"
    except ValueError:
        name = "None"
    return json.dumps({"audio": audio_path, "text": f"language {name}<asr_text>{text}"}, ensure_ascii=False)
