"""Synthesize the small speech corpus in tests/assets/speech/ with espeak-ng.

Run from the repository root:  .venv/bin/python tests/assets/make_speech.py

The output is committed; this script documents how it was made and rebuilds it. espeak-ng and
soxr are deterministic for a given version: a rerun with the same versions gives the same wav,
flac and mp3 bytes; Ogg files get a random stream serial number, so only their bytes differ.

Each clip is stored in a different container / rate / channel layout so that the decoder is
exercised on everything the pipeline claims to read. One ~40 s recording with pauses between
sentences serves the chunking tests (the pauses are where a chunker should cut).
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

OUT_DIR = Path(__file__).resolve().parent / "speech"
ESPEAK_SPEED = 165  # words per minute; a little slower than the default keeps clips 2-5 s


@dataclass(frozen=True)
class Clip:
    id: str
    voice: str
    language: str | None  # what the manifest says; None leaves the hint out on purpose
    text: str
    file: str
    sample_rate: int
    channels: int
    format: str
    subtype: str


CLIPS = [
    Clip("en_wav16k", "en-us", "en", "The quick brown fox jumps over the lazy dog.",
         "en_wav16k.wav", 16000, 1, "WAV", "PCM_16"),
    Clip("de_flac44k", "de", "de", "Heute ist das Wetter in Berlin sehr schön.",
         "de_flac44k_stereo.flac", 44100, 2, "FLAC", "PCM_16"),
    Clip("fr_mp3_22k", "fr-fr", "fr", "Le petit chat dort sur le canapé rouge.",
         "fr_mp3_22k.mp3", 22050, 1, "MP3", "MPEG_LAYER_III"),
    Clip("en_opus48k", "en-gb", None, "Please open the window before the meeting starts.",
         "en_opus48k.opus", 48000, 1, "OGG", "OPUS"),
    Clip("de_wav8k", "de", "German", "Der Zug nach München fährt um acht Uhr ab.",
         "de_wav8k.wav", 8000, 1, "WAV", "PCM_16"),
    Clip("fr_vorbis32k", "fr-fr", None, "Nous allons au marché tous les samedis matin.",
         "fr_vorbis32k_stereo.ogg", 32000, 2, "OGG", "VORBIS"),
]

LONG_FILE = "en_long_16k.flac"
LONG_SENTENCES = [
    "Good morning, and welcome to the weekly project meeting.",
    "First, we will review the results from last week.",
    "The new speech pipeline processed three thousand hours of audio.",
    "Most recordings were short, but some lasted more than an hour.",
    "Long recordings are split into chunks at quiet points.",
    "Each chunk is sent to the recognition engine separately.",
    "The transcripts are then joined back together in order.",
    "Next week we will measure the word error rate on the test set.",
    "Please send your questions to the team before Friday.",
    "Thank you all for listening, and have a good day.",
]
LONG_PAUSES_S = [0.6, 0.8, 0.7, 0.9, 0.6, 0.8, 0.7, 0.9, 0.6]


def synthesize(text: str, voice: str) -> tuple[np.ndarray, int]:
    """Mono float32 speech at espeak-ng's native rate (22050 Hz)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(ESPEAK_SPEED), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return samples, rate


def to_layout(mono: np.ndarray, rate: int, target_rate: int, channels: int) -> np.ndarray:
    out = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    # Peak-normalise below full scale so lossy encoders do not clip.
    out *= 0.7 / max(float(np.max(np.abs(out))), 1e-6)
    if channels == 2:
        # The right channel is quieter so that a wrong downmix (e.g. left only) changes the level.
        out = np.stack([out, 0.5 * out], axis=1)
    return out


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest: list[dict] = []
    for clip in CLIPS:
        mono, rate = synthesize(clip.text, clip.voice)
        audio = to_layout(mono, rate, clip.sample_rate, clip.channels)
        sf.write(OUT_DIR / clip.file, audio, clip.sample_rate, format=clip.format,
                 subtype=clip.subtype)
        row: dict = {"id": clip.id, "audio": clip.file, "text": clip.text}
        if clip.language is not None:
            row["language"] = clip.language
        manifest.append(row)

    parts: list[np.ndarray] = []
    for i, sentence in enumerate(LONG_SENTENCES):
        mono, rate = synthesize(sentence, "en-us")
        parts.append(to_layout(mono, rate, 16000, 1))
        if i < len(LONG_PAUSES_S):
            parts.append(np.zeros(int(LONG_PAUSES_S[i] * 16000), dtype=np.float32))
    sf.write(OUT_DIR / LONG_FILE, np.concatenate(parts), 16000, format="FLAC", subtype="PCM_16")
    # No id on purpose: the manifest normalizer derives one from the path.
    manifest.append({"audio": LONG_FILE, "text": " ".join(LONG_SENTENCES), "language": "English"})

    with open(OUT_DIR / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in manifest:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
