#!/usr/bin/env bash
# Two-worker data-parallel training on one machine (MultiWorkerMirroredStrategy).
# Each worker is told the cluster through TF_CONFIG; worker 0 (the chief) writes the run.
# On real machines, list every host:port and start one worker per machine with its index.
# Resume: if a worker dies (kill -9, a lost machine), the others stop with one line; run this
# same script again (same OUT) and training continues from the last epoch end or step
# checkpoint (--checkpoint_every_steps) that rank 0 saved in OUT/backup_workers/.
set -euo pipefail
OUT=${1:-runs/multiworker}
CLUSTER='"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}'

for i in 0 1; do
  TF_CONFIG="{$CLUSTER, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    kerascls train --epochs=2 --batch_size=128 --val_fraction=0 --checkpoint_every_steps=100 \
      --output_dir="$OUT" &
done
wait
kerascls evaluate --model="$OUT"
