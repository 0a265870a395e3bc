"""Synthetic speech for training and testing the tiny Qwen3-ASR / Qwen3-ForcedAligner checkpoints.

espeak-ng speaks a small vocabulary (10 digits, 8 colours, 12 commands) in English, German and
French with many voice settings (accent, voice variant, speed, pitch). Everything is seeded: the
same seed and espeak-ng version give the same samples.

Two kinds of material:

- sentences: 1-5 words spoken in one espeak-ng call (natural coarticulation and prosody);
- aligned sequences: single words synthesized separately and joined with known gaps, so the
  exact start and end of every word is known (targets for the forced aligner).

Command line::

    python -m training.synth_speech test-set [--out tests/assets/synth] [--seed 1000]

writes the held-out test set (mixed containers, sample rates and channel layouts, manifest.jsonl).
Training data is made in memory by ``training/train_tiny.py`` through the functions below.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050

# Language names as the pipeline (pipeline/languages.py) and the model's answers spell them.
VOCAB: dict[str, list[str]] = {
    "English": [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        "red", "green", "blue", "yellow", "black", "white", "orange", "purple",
        "start", "stop", "left", "right", "up", "down", "open", "close", "yes", "no", "go", "back",
    ],
    "German": [
        "null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
        "rot", "grün", "blau", "gelb", "schwarz", "weiß", "braun", "lila",
        "starten", "stoppen", "links", "rechts", "oben", "unten", "öffnen", "schließen", "ja", "nein",
        "weiter", "zurück",
    ],
    "French": [
        "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
        "rouge", "vert", "bleu", "jaune", "noir", "blanc", "rose", "violet",
        "démarrer", "arrêter", "gauche", "droite", "haut", "bas", "ouvrir", "fermer", "oui", "non",
        "avance", "retour",
    ],
}  # fmt: skip

LANGUAGES = tuple(VOCAB)
ISO = {"English": "en", "German": "de", "French": "fr"}

# espeak-ng accents per language (the built-in voices; the mbrola ones need extra packages).
TRAIN_ACCENTS = {
    "English": ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-gbclan"],
    "German": ["de"],
    "French": ["fr-fr", "fr-be"],
}
TRAIN_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3"]
# Held out from training: accents and variants the test set uses to measure generalisation.
HELDOUT_ACCENTS = {"English": ["en-gb-x-rp"], "German": ["de"], "French": ["fr-ch"]}
HELDOUT_VARIANTS = ["m6", "f4"]

SPEED_RANGE = (120, 200)  # espeak-ng words per minute
PITCH_RANGE = (30, 70)


@dataclass(frozen=True)
class Voice:
    language: str
    accent: str
    variant: str
    speed: int
    pitch: int

    @property
    def espeak_name(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


def voice_grid(accents: dict[str, list[str]], variants: list[str]) -> list[tuple[str, str, str]]:
    """All (language, accent, variant) triples of a split."""
    return [(lang, a, v) for lang, acc in accents.items() for a in acc for v in variants]


def random_voice(rng: np.random.Generator, grid: list[tuple[str, str, str]], language: str | None = None) -> Voice:
    if language is not None:
        grid = [g for g in grid if g[0] == language]
    lang, accent, variant = grid[int(rng.integers(len(grid)))]
    return Voice(lang, accent, variant, int(rng.integers(*SPEED_RANGE)), int(rng.integers(*PITCH_RANGE)))


def espeak(text: str, voice: Voice, word_gap_ms: int = 0, ssml: bool = False) -> np.ndarray:
    """Mono float32 speech at 16 kHz."""
    gap = ["-g", str(word_gap_ms // 10)] if word_gap_ms else []
    gap += ["-m"] if ssml else []
    wav = subprocess.run(
        ["espeak-ng", "-v", voice.espeak_name, "-s", str(voice.speed), "-p", str(voice.pitch), *gap, "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def speech_span(x: np.ndarray, threshold_db: float = -40.0, win: int = 160) -> tuple[int, int]:
    """First and last sample of the 10 ms windows louder than threshold_db below the peak window."""
    n = len(x) // win
    if n == 0:
        return 0, len(x)
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    if loud.size == 0:
        return 0, len(x)
    return int(loud[0] * win), int(min(len(x), (loud[-1] + 1) * win))


def trim(x: np.ndarray) -> np.ndarray:
    start, end = speech_span(x)
    return x[start:end]


def word_clips(words: list[str], voice: Voice) -> list[np.ndarray]:
    """Each word alone, trimmed. One espeak-ng call speaks them all with long gaps between words
    (process start dominates the cost of a word); where the gaps do not split the audio into
    exactly one piece per word, each word gets its own call."""
    pieces = _split_on_silence(espeak(" ".join(words), voice, word_gap_ms=600), 30)
    if len(pieces) == len(words):
        return pieces
    return [trim(espeak(w, voice)) for w in words]


def sentence_clips(texts: list[str], voice: Voice) -> list[np.ndarray]:
    """Each sentence spoken on its own, trimmed; one espeak-ng call with SSML breaks between them
    (falls back to one call per sentence where the breaks do not split the audio cleanly)."""
    ssml = "<speak>" + '<break time="1000ms"/>'.join(texts) + "</speak>"
    pieces = _split_on_silence(espeak(ssml, voice, ssml=True), 60)
    if len(pieces) == len(texts):
        return pieces
    return [trim(espeak(t, voice)) for t in texts]


def _split_on_silence(x: np.ndarray, min_gap_frames: int) -> list[np.ndarray]:
    """Pieces of x separated by at least min_gap_frames 10 ms windows 40 dB below the peak."""
    win = 160
    n = len(x) // win
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1) + 1e-12)
    loud = 20 * np.log10(rms / rms.max()) > -40.0
    pieces, start, quiet = [], None, 0
    for i, on in enumerate(loud):
        if on:
            if start is None:
                start = i
            quiet, last = 0, i
        elif start is not None:
            quiet += 1
            if quiet >= min_gap_frames:
                pieces.append(x[start * win : (last + 1) * win])
                start = None
    if start is not None:
        pieces.append(x[start * win : (last + 1) * win])
    return pieces


def random_words(rng: np.random.Generator, language: str, lo: int = 1, hi: int = 5) -> list[str]:
    words = VOCAB[language]
    return [words[int(i)] for i in rng.integers(0, len(words), size=int(rng.integers(lo, hi + 1)))]


def augment(x: np.ndarray, rng: np.random.Generator, *, edge_s: tuple[float, float] = (0.0, 0.4)) -> np.ndarray:
    """Random edge silence, gain and light noise; returns new float32 samples."""
    lead = np.zeros(int(rng.uniform(*edge_s) * SAMPLE_RATE), np.float32)
    tail = np.zeros(int(rng.uniform(*edge_s) * SAMPLE_RATE), np.float32)
    y = np.concatenate([lead, x, tail])
    peak = float(np.abs(y).max()) or 1.0
    y = y * (10 ** (rng.uniform(-20, -1) / 20) / peak)
    noise_db = rng.uniform(-70, -35)  # relative to full scale
    y = y + rng.standard_normal(len(y)).astype(np.float32) * (10 ** (noise_db / 20))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def channel_augment(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """With probability ``p``, what a phone line or a lossy file does to the audio.

    Half of the chosen clips are band-limited (down to 8-12 kHz and back), the other half are
    also encoded at a low bitrate (MP3 or Opus at 8 or 16 kHz) and decoded again: espeak-ng
    speaks at 22.05 kHz, so without this the model never hears the empty band above 4 kHz of
    8 kHz recordings or a codec's artifacts."""
    if p <= 0 or rng.random() >= p:
        return x
    if rng.random() < 0.5:
        rate = int(rng.choice([8000, 11025, 12000]))
        y = soxr.resample(soxr.resample(x, SAMPLE_RATE, rate), rate, SAMPLE_RATE)
    else:
        fmt, sub = (_FORMATS[2] if rng.random() < 0.5 else _FORMATS[3])[:2]
        rate = int(rng.choice([8000, 16000]))
        buf = io.BytesIO()
        low = soxr.resample(x, SAMPLE_RATE, rate) if rate != SAMPLE_RATE else x
        sf.write(buf, np.clip(low, -1, 1), rate, format=fmt, subtype=sub, compression_level=float(rng.uniform(0.5, 0.95)))
        buf.seek(0)
        y, got = sf.read(buf, dtype="float32")
        y = soxr.resample(y, got, SAMPLE_RATE) if got != SAMPLE_RATE else y
    y = np.asarray(y, np.float32)[: len(x)]
    return np.pad(y, (0, len(x) - len(y))) if len(y) < len(x) else y


@dataclass
class Utterance:
    audio: np.ndarray  # float32, 16 kHz, mono
    text: str
    language: str
    voice: Voice
    words: list[dict] | None = None  # [{"word", "start", "end"}] in seconds, where known


def make_sentence(rng: np.random.Generator, grid, language: str | None = None, words: list[str] | None = None) -> Utterance:
    """1-5 words in one espeak-ng call (no augmentation)."""
    lang = language or LANGUAGES[int(rng.integers(len(LANGUAGES)))]
    voice = random_voice(rng, grid, lang)
    words = words or random_words(rng, lang)
    text = " ".join(words)
    return Utterance(trim(espeak(text, voice)), text, lang, voice)


def join_aligned(pieces: list[tuple[str, np.ndarray]], rng: np.random.Generator, gap_s=(0.02, 0.35), lead_s=(0.05, 0.6)) -> tuple[np.ndarray, list[dict]]:
    """Join trimmed single-word clips with random gaps; returns audio and exact word boundaries."""
    out = [np.zeros(int(rng.uniform(*lead_s) * SAMPLE_RATE), np.float32)]
    pos = len(out[0])
    words = []
    for i, (word, clip) in enumerate(pieces):
        if i:
            gap = np.zeros(int(rng.uniform(*gap_s) * SAMPLE_RATE), np.float32)
            out.append(gap)
            pos += len(gap)
        words.append({"word": word, "start": round(pos / SAMPLE_RATE, 4), "end": round((pos + len(clip)) / SAMPLE_RATE, 4)})
        out.append(clip)
        pos += len(clip)
    out.append(np.zeros(int(rng.uniform(*lead_s) * SAMPLE_RATE), np.float32))
    return np.concatenate(out), words


def make_aligned(rng: np.random.Generator, grid, language: str | None = None, lo: int = 1, hi: int = 8) -> Utterance:
    """Words synthesized one by one (same voice) and joined with known gaps."""
    lang = language or LANGUAGES[int(rng.integers(len(LANGUAGES)))]
    voice = random_voice(rng, grid, lang)
    words = random_words(rng, lang, lo, hi)
    pieces = [(w, trim(espeak(w, voice))) for w in words]
    audio, bounds = join_aligned(pieces, rng)
    return Utterance(audio, " ".join(words), lang, voice, bounds)


def make_many(fn, seeds: list[int], workers: int = 2, **kwargs) -> list[Utterance]:
    """fn(rng, **kwargs) for each seed, espeak-ng calls overlapped in threads; order kept."""

    def one(seed: int) -> Utterance:
        return fn(np.random.default_rng(seed), **kwargs)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, seeds))


# ---- the held-out test set -------------------------------------------------------------------

# (container, subtype, extension, rates it may use)
_FORMATS = [
    ("WAV", "PCM_16", "wav", (8000, 22050)),  # uncompressed: the low rates keep the set small
    ("FLAC", "PCM_16", "flac", (8000, 22050, 44100, 48000)),
    ("MP3", "MPEG_LAYER_III", "mp3", (8000, 22050, 44100, 48000)),
    ("OGG", "OPUS", "opus", (8000, 48000)),  # Opus only runs at 8/12/16/24/48 kHz
]


def _write(path: Path, audio16k: np.ndarray, rate: int, stereo: bool, fmt: tuple, rng: np.random.Generator, level: float = 0.8) -> None:
    y = soxr.resample(audio16k, SAMPLE_RATE, rate).astype(np.float32) if rate != SAMPLE_RATE else audio16k
    if stereo:  # a slightly different right channel, as from two microphones
        right = y * 0.9 + rng.standard_normal(len(y)).astype(np.float32) * 1e-3
        y = np.stack([y, right], axis=1)
    # Lossy formats at a low bitrate: the noise floor would otherwise make them large.
    level = None if fmt[2] in ("wav", "flac") else level
    extra = {} if level is None else {"compression_level": level}
    sf.write(str(path), np.clip(y, -1, 1), rate, format=fmt[0], subtype=fmt[1], **extra)


def build_test_set(out_dir: str, seed: int = 1000) -> list[dict]:
    """Write the held-out set: ~75 short items (half unseen voices), 12 aligned, 2 long ones."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    seen = voice_grid(TRAIN_ACCENTS, TRAIN_VARIANTS)
    unseen = voice_grid(HELDOUT_ACCENTS, HELDOUT_VARIANTS)
    rng = np.random.default_rng(seed)

    plan = []  # (kind, language, split, seed)
    for lang in LANGUAGES:
        for i in range(20):
            plan.append(("sent", lang, "seen" if i % 2 == 0 else "unseen", seed * 100 + len(plan)))
        for i in range(4):
            plan.append(("align", lang, "seen" if i % 2 == 0 else "unseen", seed * 100 + len(plan)))
    items: list[dict] = []
    for kind, lang, split, s in plan:
        r = np.random.default_rng(s)
        grid = seen if split == "seen" else unseen
        utt = make_sentence(r, grid, lang) if kind == "sent" else make_aligned(r, grid, lang, 2, 6)
        audio = augment(utt.audio, r, edge_s=(0.05, 0.4)) if kind == "sent" else _augment_level(utt.audio, r)
        items.append(_item(len(items), kind, utt, audio, split))

    # Recordings longer than one ASR chunk (asr.max_chunk_s = 60 s by default): sentences of one
    # voice with pauses between them.
    for lang, n_target_s in (("English", 66.0), ("German", 64.0)):
        r = np.random.default_rng(seed * 100 + len(plan) + len(items))
        voice = random_voice(r, seen, lang)
        parts, texts, total = [], [], 0.0
        while total < n_target_s:
            words = random_words(r, lang, 2, 5)
            clip = trim(espeak(" ".join(words), voice))
            pause = np.zeros(int(r.uniform(0.5, 1.2) * SAMPLE_RATE), np.float32)
            parts += [clip, pause]
            texts.append(" ".join(words))
            total += (len(clip) + len(pause)) / SAMPLE_RATE
        utt = Utterance(np.concatenate(parts), " ".join(texts), lang, voice)
        items.append(_item(len(items), "long", utt, augment(utt.audio, r, edge_s=(0.2, 0.5)), "seen"))

    manifest = []
    for n, it in enumerate(items):
        fmt = _FORMATS[n % len(_FORMATS)]
        if it["kind"] == "long":  # keep the long ones small on disk
            fmt = _FORMATS[3] if it["language"] == "English" else _FORMATS[2]
        rates = fmt[3]
        rate = int(rates[int(rng.integers(len(rates)))])
        if it["kind"] == "long":
            rate = 8000
        stereo = bool(rng.random() < 0.3)
        name = f"{it['id']}.{fmt[2]}"
        _write(out / name, it.pop("_audio"), rate, stereo, fmt, rng, level=0.95 if it["kind"] == "long" else 0.8)
        row = {"id": it["id"], "audio": name, "text": it["text"], "language": it["language"]}
        row.update({"sample_rate": rate, "channels": 2 if stereo else 1, "voice": it["voice"], "split": it["split"], "kind": it["kind"]})
        if it.get("words") is not None:
            row["words"] = it["words"]
        manifest.append(row)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in manifest:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return manifest


def _augment_level(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain and light noise only: aligned items keep their timing (no extra edge silence)."""
    return augment(x, rng, edge_s=(0.0, 0.0))


def _item(index: int, kind: str, utt: Utterance, audio: np.ndarray, split: str) -> dict:
    v = utt.voice
    return {
        "id": f"{ISO[utt.language]}_{kind}_{index:03d}",
        "kind": kind,
        "text": utt.text,
        "language": utt.language,
        "voice": f"{v.espeak_name} s{v.speed} p{v.pitch}",
        "split": split,
        "words": utt.words,
        "_audio": audio,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ts = sub.add_parser("test-set", help="write the held-out test set")
    ts.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "assets" / "synth"))
    ts.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    manifest = build_test_set(args.out, seed=args.seed)
    size = sum(os.path.getsize(os.path.join(args.out, r["audio"])) for r in manifest)
    print(f"{len(manifest)} items, {size / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
