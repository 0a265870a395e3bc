"""Speech-activity detection (VAD): where a recording has speech, so that only speech reaches the engine.

The model is Silero VAD, run from the ONNX file that the ``silero-vad`` wheel ships
(``silero_vad/data/silero_vad_16k_sequence.onnx``) with onnxruntime alone. The package itself is
never imported: its ``__init__`` imports torch, which the CPU stages must not load (hundreds of
MB per worker and seconds per start). The file is found with ``importlib.util.find_spec``, which
locates a package without running it.

The "sequence" export computes the same per-frame probabilities as Silero's streaming model but
takes a whole block of 32 ms frames per call (silero-vad's ``sequence_vad.py``), so the Python
loop runs once per ~16 s of audio instead of once per frame.

Turning probabilities into speech regions follows silero-vad's ``get_speech_timestamps``
(``utils_vad.get_speech_timestamps_from_probs``): speech starts on a frame >= ``threshold``,
ends after ``min_silence_s`` of frames below ``threshold - 0.15``, regions shorter than
``min_speech_s`` are dropped, and each kept region is padded by ``pad_s`` on both sides (halving
the gap where two pads would overlap). Its maximum-region-length cut is not used: long regions
are cut by the chunk planner at their quietest point instead.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.audio.chunking import plan_chunks

SAMPLE_RATE = 16000
# Silero VAD at 16 kHz: 512-sample (32 ms) frames, each seen with the 64 samples before it.
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
# Frames per ONNX call: silero-vad's DEFAULT_MAX_FRAMES (about 16 s); larger blocks gain little.
BLOCK_FRAMES = 512
MODEL_FILE = "silero_vad_16k_sequence.onnx"
# silero-vad's default neg_threshold is threshold - 0.15 (floored at 0.01): hysteresis, so a
# probability that hovers around the threshold does not toggle speech on and off.
NEG_THRESHOLD_OFFSET = 0.15


class VadError(RuntimeError):
    """The VAD model could not be found or loaded (a broken install, not a bad recording)."""


def model_path() -> str:
    """Path of the Silero VAD ONNX file inside the installed ``silero-vad`` wheel.

    Raises :class:`VadError` when the package or the file is missing.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadError("the silero-vad package is not installed (pip install silero-vad); set vad.enabled: false to run without VAD")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", MODEL_FILE)
    if not os.path.isfile(path):
        raise VadError(f"silero-vad is installed but {MODEL_FILE} is missing from it ({path})")
    return path


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _session():
    """One onnxruntime session per process (a decode worker reuses it across batches)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: Ray schedules decode tasks one per core; the model is small enough that
    # intra-op threads would only contend with the other decode tasks.
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(model_path(), sess_options=options, providers=["CPUExecutionProvider"])
    except VadError:
        raise
    except Exception as e:  # a damaged file or an onnxruntime that cannot run it
        raise VadError(f"cannot load the Silero VAD model: {type(e).__name__}: {e}") from e


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Per-frame speech probability of 16 kHz mono audio.

    ``samples``: float32 ``[n]`` at 16 kHz, values in [-1, 1]. Returns float32
    ``[ceil(n / 512)]``: frame i covers samples ``[512 i, 512 (i + 1))`` (32 ms), the last frame
    zero-padded. Raises ``ValueError`` for a non-1-D input and :class:`VadError` when the model
    cannot be loaded.
    """
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    n = int(samples.shape[0])
    frames_total = (n + FRAME_SAMPLES - 1) // FRAME_SAMPLES
    if frames_total == 0:
        return np.zeros(0, np.float32)
    session = _session()
    audio = np.zeros(frames_total * FRAME_SAMPLES, np.float32)
    audio[:n] = samples
    frames = audio.reshape(frames_total, FRAME_SAMPLES)
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    out = np.empty(frames_total, np.float32)
    previous = np.zeros(CONTEXT_SAMPLES, np.float32)
    for first in range(0, frames_total, BLOCK_FRAMES):
        block = frames[first : first + BLOCK_FRAMES]
        context = np.empty((block.shape[0], CONTEXT_SAMPLES), np.float32)
        context[0] = previous
        context[1:] = block[:-1, -CONTEXT_SAMPLES:]
        previous = block[-1, -CONTEXT_SAMPLES:].copy()
        with _lock:  # an InferenceSession may be shared by threads, but one call at a time is enough here
            probs, h, c = session.run(
                ["speech_probs", "hn", "cn"], {"input": np.concatenate((context, block), axis=1), "h": h, "c": c}
            )
        out[first : first + block.shape[0]] = probs.reshape(-1)
    return out


@dataclass(frozen=True)
class VadOptions:
    """How frame probabilities become speech regions; the defaults are silero-vad's
    ``get_speech_timestamps`` defaults (threshold 0.5, min_speech_duration_ms 250,
    min_silence_duration_ms 100, speech_pad_ms 30)."""

    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03


def speech_regions(probs: np.ndarray, num_samples: int, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions from per-frame probabilities, as sorted, disjoint ``(start, end)`` sample
    ranges within ``[0, num_samples)`` at 16 kHz.

    ``probs``: float ``[frames]`` from :func:`speech_probabilities`; ``num_samples``: the
    recording's length. The rules are silero-vad's (module docstring).
    """
    threshold = options.threshold
    neg = max(threshold - NEG_THRESHOLD_OFFSET, 0.01)
    min_speech = SAMPLE_RATE * options.min_speech_s
    min_silence = SAMPLE_RATE * options.min_silence_s
    pad = int(SAMPLE_RATE * options.pad_s)

    regions: list[list[int]] = []
    triggered = False
    start = 0
    temp_end = 0
    for i, p in enumerate(np.asarray(probs, dtype=np.float64).tolist()):
        sample = FRAME_SAMPLES * i
        if p >= threshold:
            temp_end = 0
            if not triggered:
                triggered, start = True, sample
            continue
        if triggered and p < neg:
            if not temp_end:
                temp_end = sample
            if sample - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                regions.append([start, temp_end])
            triggered, temp_end = False, 0
    if triggered and num_samples - start > min_speech:
        regions.append([start, num_samples])

    for k, region in enumerate(regions):
        if k == 0:
            region[0] = max(0, region[0] - pad)
        if k + 1 < len(regions):
            gap = regions[k + 1][0] - region[1]
            if gap < 2 * pad:  # pads would overlap: split the gap between the two
                region[1] += gap // 2
                regions[k + 1][0] = max(0, regions[k + 1][0] - gap // 2)
            else:
                region[1] = min(num_samples, region[1] + pad)
                regions[k + 1][0] = max(0, regions[k + 1][0] - pad)
        else:
            region[1] = min(num_samples, region[1] + pad)
    return [(int(s), int(e)) for s, e in regions if e > s]


def detect_speech(samples: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz mono float32 audio ``[n]``: sorted, disjoint ``(start, end)``
    sample ranges; ``[]`` for a recording without speech. Raises :class:`VadError` when the
    model cannot be loaded."""
    return speech_regions(speech_probabilities(samples), int(samples.shape[0]), options)


def plan_speech_chunks(
    samples: np.ndarray,
    regions: list[tuple[int, int]],
    sample_rate: int,
    max_chunk_s: float,
    max_gap_s: float,
) -> tuple[list[tuple[int, int]], list[float]]:
    """Engine chunks that cover the speech regions and nothing else of note.

    Regions are merged, in order, into one chunk while the chunk stays within ``max_chunk_s``
    and the non-speech gap to the next region is at most ``max_gap_s`` (a pause between words
    or sentences stays in, as the model heard such pauses in training); a longer gap ends the
    chunk, so that span is never sent. A single region longer than ``max_chunk_s`` is cut at its
    quietest points (:func:`pipeline.audio.chunking.plan_chunks`), as recordings are without VAD.

    ``samples``: float32 ``[n]``; ``regions``: from :func:`detect_speech`. Returns
    ``(chunks, speech_s)``: ``(start, end)`` sample ranges, each at most ``max_chunk_s``, and the
    seconds of detected speech in each (float, <= the chunk's length). No regions, no chunks.
    """
    max_len = max(1, int(max_chunk_s * sample_rate))
    max_gap = int(max_gap_s * sample_rate)
    chunks: list[tuple[int, int]] = []
    speech: list[float] = []
    current: list[int] | None = None  # [start, end, speech samples]

    def flush() -> None:
        nonlocal current
        if current is not None:
            chunks.append((current[0], current[1]))
            speech.append(current[2] / sample_rate)
            current = None

    for start, end in regions:
        if end - start > max_len:
            flush()
            for s, e in plan_chunks(samples[start:end], sample_rate, max_chunk_s):
                chunks.append((start + s, start + e))
                speech.append((e - s) / sample_rate)
            continue
        if current is not None and start - current[1] <= max_gap and end - current[0] <= max_len:
            current[1] = end
            current[2] += end - start
            continue
        flush()
        current = [start, end, end - start]
    flush()
    return chunks, speech
