"""A test set of long recordings with pauses, for measuring speech detection: held-out synthetic
sentences (tests/assets/synth) joined with stretches of silence and of low noise between them.

``python -m pipeline.benchmark.pauses OUT_DIR [--recordings 6] [--sentences 8] [--seed 0]`` writes
``OUT_DIR/*.wav`` (16 kHz mono) and ``OUT_DIR/manifest.jsonl`` (id, audio, text, language), for the
evaluation job (``compare_vad: true`` puts WER and engine seconds with and without VAD side by side).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SYNTH = Path(__file__).resolve().parents[2] / "tests" / "assets" / "synth"


def make_pause_set(out_dir: str, *, synth_dir: str | Path = SYNTH, recordings: int = 6, sentences: int = 8, seed: int = 0) -> list[dict]:
    """Write ``recordings`` recordings of ``sentences`` same-language sentences each, separated by
    pauses of 1.5-6 s of white noise (at -50 or -40 dBFS, chosen at random: a quiet room or a noisy
    one), with 2 s of it before the first; returns the manifest rows. Raises
    FileNotFoundError when the synthetic set is missing."""
    from pipeline.audio.decode import decode_audio

    synth_dir = Path(synth_dir)
    rows = [json.loads(line) for line in (synth_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    by_language: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("kind") == "sent":
            by_language.setdefault(r["language"], []).append(r)
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    languages = sorted(by_language)
    out = []
    for k in range(recordings):
        language = languages[k % len(languages)]
        picks = rng.choice(len(by_language[language]), size=min(sentences, len(by_language[language])), replace=False)
        parts, texts = [_pause(2.0, rng)], []
        for j in picks:
            r = by_language[language][int(j)]
            parts.append(decode_audio(str(synth_dir / r["audio"]), target_sr=SAMPLE_RATE).samples)
            parts.append(_pause(float(rng.uniform(1.5, 6.0)), rng))
            texts.append(r["text"])
        audio = np.concatenate(parts).astype(np.float32)
        name = f"pauses_{language[:2].lower()}_{k:02d}.wav"
        import soundfile as sf

        sf.write(os.path.join(out_dir, name), audio, SAMPLE_RATE)
        out.append({"id": name[:-4], "audio": name, "text": " ".join(texts), "language": language})
    with open(os.path.join(out_dir, "manifest.jsonl"), "w") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return out


def _pause(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    level = 10 ** (-50 / 20) if rng.random() < 0.5 else 10 ** (-40 / 20)
    return (level * rng.standard_normal(n)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmark.pauses", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = make_pause_set(args.out_dir, recordings=args.recordings, sentences=args.sentences, seed=args.seed)
    print(f"{len(rows)} recordings in {args.out_dir}/manifest.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
