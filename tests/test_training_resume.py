"""Fault tolerance: ``kill -9`` mid-epoch, then the same command resumes and finishes.

The kill happens at a fixed point, not after polling a file: Keras writes
``training_metadata.json`` non-atomically, so a test that polls it can read half a file. The
first run goes through a small launcher that SIGKILLs its own process right after the step
checkpoint at a chosen (epoch, batch) has been written — the real training code runs
unchanged up to the kill, which lands exactly as an outside ``kill -9`` would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

from tests.conftest import ROOT, needs_debian
from tests.kill_launcher import LAUNCHER

KILL_EPOCH, KILL_BATCH = 1, 25  # second epoch, well after its first step checkpoint

# Runs `kerascls ARGS` and kills itself once Backup has saved at batch >= KILL_BATCH of epoch
# KILL_EPOCH (checkpoints fall every 10 steps, so batches 19 and 29 of that epoch).


def _train_args(run) -> list[str]:
    return ["train", "--epochs=3", "--max_train_images=4000", "--batch_size=64",
            "--checkpoint_every_steps=10", f"--output_dir={run}"]


def _history_epochs(run) -> list[int]:
    with open(run / "history.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@needs_debian
def test_kill_9_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", LAUNCHER, str(KILL_EPOCH), str(KILL_BATCH),
                             *_train_args(run)], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "model.keras").exists()
    assert _history_epochs(run) == [0]
    state = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert state["epoch"] == KILL_EPOCH and state["batch"] >= KILL_BATCH  # a mid-epoch step
    first_row = (run / "history.csv").read_text().splitlines()[1]

    done = subprocess.run([sys.executable, "-m", "kerascls.cli", *_train_args(run)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Epoch 1/3" not in done.stdout and "Epoch 2/3" in done.stdout  # resumed, not restarted
    assert _history_epochs(run) == [0, 1, 2]  # each planned epoch exactly once
    assert (run / "history.csv").read_text().splitlines()[1] == first_row  # epoch 0 kept as is
    assert (run / "model.keras").exists() and not (run / "backup").exists()
    assert json.loads((run / "metrics.json").read_text())["accuracy"] > 0.5
