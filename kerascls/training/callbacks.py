"""Callbacks of a run: resumable checkpoints, a history that survives resumes, NaN stop."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import keras
import numpy as np

from kerascls.errors import UserError
from kerascls.utils import atomic_path


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also saves at every epoch end when saving every N steps.

    Keras saves either per epoch or per N batches; with batches only, a crash just after an
    epoch ends would redo that whole epoch.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()


class EpochHistory(keras.callbacks.Callback):
    """``history.csv`` with one row per epoch, rewritten (atomically) at each epoch end.

    Keras's CSVLogger appends, so an epoch redone after a crash appears twice; here a row
    replaces the rows of its own and any later epoch. Adds the learning rate of the epoch end.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def _rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: _number(v) for k, v in (logs or {}).items()}}
        row.setdefault("learning_rate", _number(self.model.optimizer.learning_rate))
        rows = [r for r in self._rows() if int(r["epoch"]) < epoch] + [row]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)


def _number(value) -> float:
    return float(keras.ops.convert_to_numpy(value))


class TrainingDiverged(UserError, FloatingPointError):
    """The loss or a weight went NaN/inf: an operator fixes it (a lower learning rate, other
    data), so it prints in one line; still a ``FloatingPointError`` for callers."""


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first non-finite batch loss and remember where, for a one-line error."""

    def __init__(self):
        super().__init__()
        self.epoch, self.where = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(_number(loss)) and self.where is None:
            self.where = (self.epoch + 1, batch + 1, _number(loss))
            self.model.stop_training = True

    def raise_if_stopped(self) -> None:
        """TrainingDiverged naming the epoch and batch where the loss went NaN/inf."""
        if self.where:
            epoch, batch, loss = self.where
            raise TrainingDiverged(f"training diverged: loss became {loss} at epoch {epoch}, "
                                   f"batch {batch}; lower --learning_rate or check the data")


def check_finite(model: keras.Model) -> None:
    """A NaN in the weights means the run diverged: say so rather than save it."""
    for w in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(w))):
            raise TrainingDiverged(
                f"training diverged: weight {w.path} holds NaN/inf; lower --learning_rate")


def monitor_mode(monitor: str) -> str:
    """``min`` for a loss column, ``max`` for anything else (accuracy, top-5 …)."""
    return "min" if monitor.endswith("loss") else "max"


class BestEpoch(keras.callbacks.Callback):
    """Keep the best epoch's weights by ``monitor``; optionally stop after ``patience``
    epochs without a better value.

    The best so far is resume state and lives in the run directory, written at each
    improvement: ``best-epochE.weights.h5`` (the weights), then ``best.json`` (monitor,
    epoch, value, file) by atomic rename, then the previous weights file is removed — a
    kill -9 at any point leaves a ``best.json`` that names a complete weights file. A resumed
    run reads it back, so the epochs before the crash still compete.
    """

    STATE = "best.json"

    def __init__(self, run: Path, monitor: str, patience: int = 0, start: int = 0):
        super().__init__()
        self.run, self.monitor, self.patience = Path(run), monitor, patience
        self.mode, self.start = monitor_mode(monitor), start
        self.state: dict | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs=None):
        state = read_best(self.run)
        self.state = state if state and state["monitor"] == self.monitor else None

    def _better(self, value: float) -> bool:
        if self.state is None:
            return True
        best = self.state["value"]
        return value < best if self.mode == "min" else value > best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None and self.monitor == "learning_rate":  # as EpochHistory records it
            value = self.model.optimizer.learning_rate
        if value is None:
            return
        value = _number(value)
        redone = self.state is not None and self.state["epoch"] >= epoch  # after a crash
        if math.isfinite(value) and (redone or self._better(value)):
            self._save(epoch, value)
        since = epoch - max(self.state["epoch"] if self.state else -1, self.start - 1)
        if self.patience and since >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def _save(self, epoch: int, value: float) -> None:
        old = self.state["weights"] if self.state else None
        name = f"best-epoch{epoch}.weights.h5"
        with atomic_path(self.run / name) as tmp:
            self.model.save_weights(tmp)
        self.state = {"monitor": self.monitor, "mode": self.mode, "epoch": int(epoch),
                      "value": float(value), "weights": name}
        with atomic_path(self.run / self.STATE) as tmp:
            tmp.write_text(json.dumps(self.state, indent=2))
        if old and old != name:
            (self.run / old).unlink(missing_ok=True)


def read_best(run: Path) -> dict | None:
    """The best-so-far state of a run (``best.json``), or None before any epoch ended."""
    path = Path(run) / BestEpoch.STATE
    return json.loads(path.read_text()) if path.exists() else None


def clear_best(run: Path) -> None:
    """Remove the best-epoch resume state once the run's model.keras is written."""
    state = read_best(run)
    if state:
        (Path(run) / state["weights"]).unlink(missing_ok=True)
    (Path(run) / BestEpoch.STATE).unlink(missing_ok=True)
