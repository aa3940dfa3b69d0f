"""Best epoch and early stopping: RUN/model.keras holds the epoch ``--monitor`` picks, the
run stops after ``--early_stopping_patience`` epochs without a better value, and the
best-so-far survives ``kill -9`` and resume.

The validation metric of the saved model is recomputed here from its own predictions on
the validation images (split again with the seeded holdout), not read from the trainer.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerascls.data.sources import holdout, load_source
from kerascls.errors import is_user_error
from kerascls.training import train as T
from kerascls.training.config import TrainConfig
from tests.conftest import ROOT, needs_debian
from tests.kill_launcher import LAUNCHER

# float32 compute and no label smoothing: these tests compare history.csv's val_loss (the
# training loss, smoothed by default) with the saved model's NLL to
# 1e-4, and --mixed_precision auto would measure history in bfloat16 on a bf16 CPU (the
# saved model computes in float32; test_training checks that conversion)
SMALL = dict(arch="small_cnn", max_train_images=240, max_test_images=100, batch_size=32,
             seed=0, calibrate=False, mixed_precision="none", label_smoothing=0.0)


def _history(run) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _val_loss_of_saved_model(run, cfg: TrainConfig, temperature: float = 1.0) -> float:
    """Mean cross-entropy of RUN/model.keras on the run's validation images, from scratch.

    With the run's calibration temperature T folded into the head, softmax(T · log p)
    undoes it: the probabilities of the epoch as trained.
    """
    x, y = load_source(cfg.data).split("train")
    keep = np.random.default_rng(cfg.seed).permutation(len(y))[:cfg.max_train_images]
    _, (vx, vy) = holdout(x[keep], y[keep], cfg.val_fraction, cfg.seed)
    probs = keras.saving.load_model(run / "model.keras").predict(vx, verbose=0)
    z = temperature * np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0))
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(vy)), vy], 1e-7, 1.0))))


@pytest.mark.slow
@needs_debian
def test_saved_model_is_the_best_val_loss_epoch(tmp_path):
    cfg = TrainConfig(**SMALL, epochs=3, output_dir=str(tmp_path / "run"))
    run = T.train(cfg)
    rows, metrics = _history(run), json.loads((run / "metrics.json").read_text())
    best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
    assert metrics["monitor"] == "val_loss" and metrics["best_epoch"] == int(rows[best]["epoch"])
    assert metrics["best_value"] == pytest.approx(rows[best]["val_loss"], rel=1e-6)
    assert _val_loss_of_saved_model(run, cfg) == pytest.approx(rows[best]["val_loss"],
                                                               rel=1e-4)
    assert not (run / "best.json").exists() and not list(run.glob("best-epoch*"))


@needs_debian
def test_early_stopping_keeps_an_earlier_epoch(tmp_path):
    """Monitoring the (max) learning rate of a cosine schedule: the warm-up ends inside
    epoch 0, so epoch 0 is best by construction and nothing after improves on it."""
    cfg = TrainConfig(**{**SMALL, "calibrate": True}, epochs=8, monitor="learning_rate",
                      early_stopping_patience=2, warmup_steps=1,
                      output_dir=str(tmp_path / "run"))
    run = T.train(cfg)
    rows, metrics = _history(run), json.loads((run / "metrics.json").read_text())
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # 2 epochs without improvement
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] == 0
    assert rows[0]["val_loss"] != pytest.approx(rows[2]["val_loss"], rel=1e-3)
    t = metrics["calibration"]["temperature"]  # the same run checks the folded temperature
    assert _val_loss_of_saved_model(run, cfg, t) == pytest.approx(rows[0]["val_loss"],
                                                                  rel=1e-4)
    assert metrics["calibration"]["val_before"]["nll"] == pytest.approx(rows[0]["val_loss"],
                                                                        rel=1e-4)
    assert metrics["loss"] == pytest.approx(metrics["calibration"]["test_after"]["nll"],
                                            rel=1e-4)


@needs_debian
def test_unknown_monitor_is_refused_before_training(tmp_path):
    cfg = TrainConfig(**SMALL, monitor="val_f1", output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="--monitor 'val_f1' .* val_loss") as err:
        T.train(cfg)
    assert is_user_error(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@needs_debian
def test_no_validation_split_keeps_the_last_epoch(tmp_path, capsys):
    cfg = TrainConfig(**{**SMALL, "max_train_images": 96}, epochs=2, val_fraction=0.0,
                      output_dir=str(tmp_path / "run"))
    run = T.train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] is None and metrics["best_epoch"] == 1
    assert "no validation split" in capsys.readouterr().out


KILL_EPOCH, KILL_BATCH = 2, 3


@pytest.mark.slow
@needs_debian
def test_kill_9_then_resume_keeps_the_best_epoch(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--arch=small_cnn", "--epochs=4", "--max_train_images=240",
            "--max_test_images=100", "--batch_size=32", "--checkpoint_every_steps=2",
            "--monitor=learning_rate", "--nocalibrate", "--mixed_precision=none",
            "--label_smoothing=0",
            f"--output_dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", LAUNCHER, str(KILL_EPOCH), str(KILL_BATCH),
                             *args], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = json.loads((run / "best.json").read_text())
    assert state["epoch"] == 0 and (run / state["weights"]).exists()
    done = subprocess.run([sys.executable, "-m", "kerascls.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Epoch 1/4" not in done.stdout  # resumed, not restarted
    rows, metrics = _history(run), json.loads((run / "metrics.json").read_text())
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3] and metrics["best_epoch"] == 0
    cfg = TrainConfig(**SMALL, epochs=4, output_dir=str(run))
    assert _val_loss_of_saved_model(run, cfg) == pytest.approx(rows[0]["val_loss"], rel=1e-4)
