#!/bin/sh
# Rebuilds models/tiny-qwen3-asr-synth and models/tiny-qwen3-aligner-synth from nothing.
#
# The committed checkpoints came from these runs with wall-clock budgets (--minutes) on a 2-core
# machine; each run's training_info.json (the ASR model keeps stage A's under previous_stages)
# records the command, the steps taken and the dev-set history. This script replays them by
# their step counts (--steps), which gives each run a cosine schedule of exactly that length on
# any machine: the same recipe, not bit-identical weights.
#
# Run from the repository root in the training environment (training/README.md):
#   sh training/rebuild.sh                 # about 2.5 hours on 2 cores
#   STAGE_A=training/checkpoints/tiny-qwen3-asr-synth-stage-a sh training/rebuild.sh
#                                          # from the committed stage A (about 1 hour)
set -eu
PY=${PY:-build/train-venv/bin/python}
STAGES=${STAGES:-build/stages}
export OMP_NUM_THREADS=1
common="--seed 0 --groups 2000 --bank-voices 500 --minutes 0 --threads 2 --batch 32 --spec-augment 0 --channel-augment 0.3"

# A: from random init; 15 % of the batches are recordings of 2-14 sentences.
if [ -z "${STAGE_A:-}" ]; then
    STAGE_A="$STAGES/asr-stage-a"
    $PY -m training.train_tiny asr $common --steps 6771 --lr 2e-3 --warmup 150 \
        --long-share 0.15 --long-max 14 --out "$STAGE_A"
fi
# B: half the batches are recordings of 2-4 sentences (up to about 12 s), the length the
# two-layer decoder learns to follow (see README: Results).
$PY -m training.train_tiny asr $common --steps 3996 --lr 7e-4 --warmup 50 \
    --long-share 0.5 --long-max 4 --init "$STAGE_A" --out models/tiny-qwen3-asr-synth
# The aligner: stage A's weights plus a new timestamp head.
$PY -m training.train_tiny align --seed 0 --bank-voices 800 --minutes 0 --steps 1369 --threads 1 \
    --init "$STAGE_A" --out models/tiny-qwen3-aligner-synth
