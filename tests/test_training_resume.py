"""Fault tolerance: ``kill -9`` mid-epoch, then the same command resumes and finishes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.test_fashion_mnist import needs_debian


def _train_cmd(run) -> list[str]:
    return [sys.executable, "-m", "kerascls.cli", "train", "--epochs=3",
            "--max_train_images=4000", "--batch_size=64", "--checkpoint_every_steps=10",
            f"--output_dir={run}"]


def _wait_for_checkpoint_in_epoch_2(run, proc, timeout=240) -> None:
    """Until a step checkpoint of the second epoch is on disk (history has epoch 0)."""
    meta = run / "backup" / "training_metadata.json"
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if (run / "history.csv").exists() and meta.exists():
            state = json.loads(meta.read_text())
            if state["epoch"] == 1 and state["batch"] > 0:
                return
        time.sleep(0.1)
    raise AssertionError("no mid-epoch checkpoint seen")


@needs_debian
def test_kill_9_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_train_cmd(run), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint_in_epoch_2(run, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "model.keras").exists()
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0]

    done = subprocess.run(_train_cmd(run), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Epoch 1/3" not in done.stdout and "Epoch 2/3" in done.stdout  # resumed, not restarted
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # each planned epoch exactly once
    assert (run / "model.keras").exists() and not (run / "backup").exists()
    assert json.loads((run / "metrics.json").read_text())["accuracy"] > 0.5
