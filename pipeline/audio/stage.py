"""CPU stage: decode, downmix, resample to 16 kHz, detect speech (VAD) and plan chunks, one output
row per input row.

Runs as Ray tasks on CPU workers so the GPU actors only ever see ready waveforms. Waveforms travel
as Arrow list<float32> built from one contiguous buffer (no per-sample Python objects).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.audio.chunking import plan_chunks
from pipeline.audio.decode import AudioError, decode_audio
from pipeline.audio.vad import VadError, VadOptions, detect_speech, plan_speech_chunks
from pipeline.audio.worker_malloc import keep_freed_memory
from pipeline.io.schema import with_columns
from pipeline.redact import redact_text, redact_url, secret_values

SAMPLE_RATE = 16000


def _column(table: pa.Table, name: str) -> list[Any]:
    # One conversion per column: indexing a column row by row costs a lookup and a scalar each.
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    np_type = value_type.to_pandas_dtype()
    values = np.concatenate(arrays).astype(np_type, copy=False) if arrays else np.empty(0, np_type)
    return _from_lengths(values, lengths, value_type)


def _from_lengths(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A list array over ``values`` (not copied) cut into rows of ``lengths``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32 if lengths.sum() < 2**31 else np.int64)
    np.cumsum(lengths, out=offsets[1:])
    list_cls = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
    return list_cls.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


class _Waveforms:
    """The waveforms of one output table, copied into one float32 buffer as each row is decoded
    (while its samples are still in the CPU's cache; the decoded array is then freed and its
    memory serves the next recording), not joined at the end from every row's own array.

    The buffer is the process's spare one (``_table_buffer``) when no earlier table still holds
    it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        # Taken at the first row: the table after a task's last one is never filled.
        self._buf: np.ndarray | None = None
        self._used = 0
        self._lengths: list[int] = []

    def fits(self, n: int) -> bool:
        return self._used + n <= self.capacity

    def add(self, x: np.ndarray) -> None:
        """Append float32 [n] as the next row (an empty array for a failed row)."""
        n = len(x)
        if self._buf is None:
            self._buf = _table_buffer(self.capacity)
        if not self.fits(n):  # one recording longer than a table, or no size limit: grow
            grown = np.empty(max(self._used + n, 2 * self.capacity), np.float32)
            grown[: self._used] = self._buf[: self._used]
            self._buf, self.capacity = grown, len(grown)
        self._buf[self._used : self._used + n] = x
        self._used += n
        self._lengths.append(n)

    def column(self) -> pa.Array:
        """list<float32>, one row per ``add``, over the buffer itself (handed over, not copied)."""
        values = self._buf[: self._used] if self._buf is not None else np.empty(0, np.float32)
        return _from_lengths(values, np.asarray(self._lengths, np.int64), pa.float32())


_spare: list[np.ndarray] = []  # this process's last table buffer (one at most)
_spare_lock = threading.Lock()


def _table_buffer(n: int) -> np.ndarray:
    """float32 [n] for an output table: the process's spare buffer when it is large enough and
    nothing references it any more (its last table was written to the object store and freed),
    else a new one, which becomes the spare.

    A buffer larger than glibc's mmap threshold is a fresh mapping each time it is allocated,
    so every 4 KiB page of it costs a page fault and a clear on first write: about 30 ms for the
    80 MB of a 128-row task of 10-s clips, 5 % of the task. Reusing the last table's buffer
    writes pages the process already holds. A table still alive (a caller of decode_batch keeps
    it, a long task's earlier table waits in Ray Data's output buffer) still holds a view of its
    buffer, so it is never written over: the reference count says so.
    """
    with _spare_lock:
        if _spare:
            buf = _spare[0]
            # References: the list, ``buf`` and getrefcount's argument; a table's view adds one.
            if len(buf) >= n and sys.getrefcount(buf) == 3:
                return buf[:n]
        buf = np.empty(n, np.float32)
        _spare[:] = [buf]
        return buf


# Waveform bytes per output table of a decode task, by default Ray Data's own block size
# (DataContext.target_max_block_size, 128 MiB; transcribe.decode passes the job's): a task's
# rows leave it in as few tables as that allows, one buffer each. Ray writes a block to the
# object store buffer by buffer, and Ray Data joins a task's smaller tables into one block of
# many chunks: 128 rows of 10-s clips in four 24 MiB tables took 14-22 ms to store against
# 9-11 ms as one table, and 128 rows from 8-row tables 55-80 ms.
OUTPUT_TABLE_BYTES = 128 * 2**20


def decode_batch(batch: pa.Table, **options: Any) -> pa.Table:
    """All of ``batch`` decoded into one table (``decode_tables`` with no size limit per table);
    the options are ``decode_tables``'s."""
    return pa.concat_tables(list(decode_tables(batch, output_bytes=None, **options)))


def decode_tables(
    batch: pa.Table,
    *,
    output_bytes: int | None = OUTPUT_TABLE_BYTES,
    max_chunk_s: float,
    storage_options: dict | None = None,
    max_audio_s: float | None = None,
    min_audio_s: float | None = None,
    reject_silence: bool = False,
    allowed_hosts: list[str] | None = None,
    allow_local_paths: bool = True,
    on_truncation: str = "fail",
    audio_stream: int = 0,
    vad: dict | None = None,
) -> Iterator[pa.Table]:
    """For `map_batches(batch_format="pyarrow", fn_kwargs=...)`: the rows of ``batch`` in order,
    one output row per input row, in tables of at most ``output_bytes`` of waveform each (a
    recording longer than that alone in its table; None: one table for the whole batch).

    ``vad``: the ``vad`` config section as a dict (``enabled``, ``threshold``, ``min_speech_s``,
    ``min_silence_s``, ``pad_s``, ``max_gap_s``); None or not enabled = no speech detection,
    chunks cover the whole recording. With VAD, chunks cover the speech regions only
    (pipeline/audio/vad.py) and each row gets ``speech_s`` (seconds of detected speech, 0 for a
    recording without speech, which then has no chunks) and the internal ``chunk_speech_s``
    (speech seconds per chunk, for the engine's token budget).

    Error messages and the `audio` column leave this stage without credentials (URL userinfo,
    presigned query values, anything in `storage_options`): nothing after it needs them.

    A plain function, not a callable class: Ray Data runs it as tasks, which share the cores
    elastically with the manifest read; an actor pool pins its cores (with as many actors as
    cores it starves the read task and the job stalls).
    """
    keep_freed_memory()
    n = batch.num_rows
    capacity = (output_bytes // 4) if output_bytes is not None else 1 << 20
    samples = _Waveforms(capacity)
    chunks: list[np.ndarray] = []
    rate = [None] * n
    channels = [None] * n
    duration = [None] * n
    decode_s = [None] * n
    warnings: list[list[str] | None] = [None] * n
    speech_s: list[float | None] = [None] * n
    chunk_speech: list[list[float] | None] = [None] * n
    vad = dict(vad or {})
    use_vad = bool(vad.pop("enabled", False))
    max_gap_s = float(vad.pop("max_gap_s", 1.0))
    vad_options = VadOptions(**vad) if use_vad else None
    # A row the manifest stage already failed (a bad line, a duplicate id) passes through as is.
    error_stage, error = _column(batch, "error_stage"), _column(batch, "error")
    sources = _column(batch, "audio")
    # Embedded recordings are taken out one at a time: all of a batch's at once could be gigabytes.
    embedded = batch.column("audio_bytes") if "audio_bytes" in batch.column_names else None
    offsets, durations = _column(batch, "offset_s"), _column(batch, "duration_hint_s")
    known = secret_values(storage_options)  # literals to keep out of messages, whatever their form
    keep = [c for c in batch.column_names if c != "audio_bytes"]  # bytes are not needed past here
    first = 0  # the first row of the table being filled

    def table(end: int) -> pa.Table:
        """Rows first..end-1 as an output table; the waveforms it holds are handed over."""
        nonlocal samples
        out = batch.slice(first, end - first).select(keep)
        if "audio" in keep:
            redacted = [None if a is None else redact_url(a, known) for a in sources[first:end]]
            out = out.set_column(keep.index("audio"), "audio", pa.array(redacted, pa.string()))
        new_columns = {
            "samples": samples.column(),
            "chunks": _list_array(chunks, pa.int64()),
            "source_sample_rate": pa.array(rate[first:end], pa.int64()),
            "source_channels": pa.array(channels[first:end], pa.int64()),
            "duration_s": pa.array(duration[first:end], pa.float64()),
            "decode_s": pa.array(decode_s[first:end], pa.float64()),
            "decode_warnings": pa.array(warnings[first:end], pa.list_(pa.string())),
            "speech_s": pa.array(speech_s[first:end], pa.float64()),
            "chunk_speech_s": pa.array(chunk_speech[first:end], pa.list_(pa.float64())),
            "error_stage": pa.array(error_stage[first:end], pa.string()),
            "error": pa.array(error[first:end], pa.string()),
        }
        samples = _Waveforms(capacity)
        chunks.clear()
        return with_columns(out, new_columns)

    def failed_row() -> None:  # no waveform, no chunks; the row's error says why
        samples.add(np.empty(0, np.float32))
        chunks.append(np.empty(0, np.int64))

    for i in range(n):
        if error[i] is not None:
            failed_row()
            continue
        audio = sources[i]
        data = embedded[i].as_py() if embedded is not None else None
        start = time.perf_counter()
        try:
            if audio is None and data is None:
                raise AudioError("missing_audio", "the manifest row has no audio path or bytes")
            decoded = decode_audio(
                audio,
                data,
                offset_s=offsets[i],
                duration_s=durations[i],
                target_sr=SAMPLE_RATE,
                storage_options=storage_options,
                max_duration_s=max_audio_s,
                min_duration_s=min_audio_s,
                reject_silence=reject_silence,
                allowed_hosts=allowed_hosts or (),
                allow_local_paths=allow_local_paths,
                on_truncation=on_truncation,  # type: ignore[arg-type]
                audio_stream=audio_stream,
            )
            if vad_options is not None:
                regions = detect_speech(decoded.samples, vad_options)
                bounds, chunk_speech[i] = plan_speech_chunks(decoded.samples, regions, SAMPLE_RATE, max_chunk_s, max_gap_s)
                speech_s[i] = sum(e - s for s, e in regions) / SAMPLE_RATE
            else:
                bounds = plan_chunks(decoded.samples, SAMPLE_RATE, max_chunk_s)
        except AudioError as e:
            error_stage[i], error[i] = "decode", redact_text(f"{e.category}: {e}", known)
            failed_row()
        except VadError as e:  # the VAD model is missing or broken: the install, not the file
            error_stage[i], error[i] = "decode", f"vad_error: {e}"
            failed_row()
        except Exception as e:  # a bad file must not take the batch down with it
            error_stage[i], error[i] = "decode", redact_text(f"decode_error: {type(e).__name__}: {e}", known)
            failed_row()
        else:
            if output_bytes is not None and i > first and not samples.fits(len(decoded.samples)):
                yield table(i)  # the rows before this one: the table is full
                first = i
            samples.add(decoded.samples)
            chunks.append(np.asarray(bounds, dtype=np.int64).reshape(-1))
            rate[i] = decoded.source_sample_rate
            channels[i] = decoded.source_channels
            duration[i] = decoded.duration_s
            if decoded.warnings:
                warnings[i] = [redact_text(w, known) for w in decoded.warnings]
        decode_s[i] = time.perf_counter() - start

    yield table(n)
