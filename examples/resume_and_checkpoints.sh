#!/usr/bin/env bash
# A run that survives being killed: resume state every 100 steps and at every epoch end.
# Rerunning the exact same command after a crash (or kill -9) continues from the last
# checkpoint; history.csv keeps one row per epoch. --config reuses a run's settings.
set -euo pipefail
OUT=${1:-runs/resumable}

kerascls train --epochs=8 --checkpoint_every_steps=100 --lr_schedule=cosine \
    --output_dir="$OUT"
# the same settings, 2 more epochs, another directory (explicit flags override the file):
kerascls train --config="$OUT/config.json" --epochs=10 --output_dir="$OUT-longer"
# TensorBoard: losses, metrics and learning rate per epoch
echo "tensorboard --logdir $OUT/logs"
