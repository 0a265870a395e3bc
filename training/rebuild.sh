#!/bin/sh
# Rebuilds models/tiny-qwen3-asr-synth and models/tiny-qwen3-aligner-synth from nothing.
#
# The committed checkpoints came from these stages run with wall-clock budgets (--minutes) on a
# 2-core machine; each stage's training_info.json (kept in the last checkpoint's
# previous_stages) records the command, the steps taken and the dev-set history. This script
# replays them by their step counts (--steps), which gives each stage a cosine schedule of
# exactly that length on any machine: the same recipe, not bit-identical weights.
#
# Run from the repository root in the training environment (training/README.md):
#   sh training/rebuild.sh            # about 2.5 hours on 2 cores
set -eu
PY=${PY:-build/train-venv/bin/python}
STAGES=${STAGES:-build/stages}
export OMP_NUM_THREADS=1
common="--seed 0 --groups 2000 --bank-voices 500 --minutes 0"

# 1: from random init; SpecAugment on (the default), batch 16.
$PY -m training.train_tiny asr $common --steps 2882 --threads 1 \
    --out "$STAGES/asr-stage1"
# 2: a second cosine cycle at a lower peak.
$PY -m training.train_tiny asr $common --steps 1847 --threads 2 --lr 1.5e-3 --warmup 100 \
    --init "$STAGES/asr-stage1" --out "$STAGES/asr-stage2"
# 3: no SpecAugment, batch 32: the model underfits, masking only slowed it down.
$PY -m training.train_tiny asr $common --steps 2261 --threads 2 --batch 32 --lr 1e-3 --warmup 50 \
    --spec-augment 0 --init "$STAGES/asr-stage2" --out "$STAGES/asr-stage3"
# 4 and 5: lower cycles.
$PY -m training.train_tiny asr $common --steps 1353 --threads 1 --batch 32 --lr 5e-4 --warmup 20 \
    --spec-augment 0 --init "$STAGES/asr-stage3" --out "$STAGES/asr-stage4"
$PY -m training.train_tiny asr $common --steps 1182 --threads 2 --batch 32 --lr 4e-4 --warmup 20 \
    --spec-augment 0 --init "$STAGES/asr-stage4" --out models/tiny-qwen3-asr-synth
# The aligner: the stage-3 ASR weights plus a new timestamp head.
$PY -m training.train_tiny align --seed 0 --bank-voices 800 --minutes 0 --steps 1335 --threads 1 \
    --init "$STAGES/asr-stage3" --out models/tiny-qwen3-aligner-synth
