#!/usr/bin/env bash
# Transfer learning on Fashion-MNIST: train on classes 0–4, transfer to 5–9.
# Phase one trains a fresh head with the backbone frozen (BatchNorm in inference mode),
# phase two fine-tunes every layer at a tenth of the learning rate. Then a full evaluation
# report (metrics.json, per_class.csv, confusion and reliability PNGs) lands in RUN/eval.
set -euo pipefail
OUT=${1:-runs/transfer}

kerascls train --data=fashion_mnist:classes=0-4 --epochs=3 --output_dir="$OUT/source"
kerascls train --data=fashion_mnist:classes=5-9 --weights="$OUT/source" \
    --epochs=1 --finetune_epochs=2 --finetune_lr_factor=0.1 --output_dir="$OUT/target"
kerascls evaluate --model="$OUT/target"
