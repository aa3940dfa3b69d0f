#!/usr/bin/env bash
# Two-worker data-parallel training on one machine (MultiWorkerMirroredStrategy).
# Each worker is told the cluster through TF_CONFIG; worker 0 (the chief) writes the run.
# On real machines, list every host:port and start one worker per machine with its index.
set -euo pipefail
OUT=${1:-runs/multiworker}
CLUSTER='"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}'

for i in 0 1; do
  TF_CONFIG="{$CLUSTER, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    kerascls train --epochs=2 --batch_size=128 --val_fraction=0 --output_dir="$OUT" &
done
wait
kerascls evaluate --model="$OUT"
