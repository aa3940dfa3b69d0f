"""Callbacks of a run: resumable checkpoints, a history that survives resumes, NaN stop."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import keras
import numpy as np

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
        """FloatingPointError naming the epoch and batch where the loss went NaN/inf."""
        if self.where:
            epoch, batch, loss = self.where
            raise FloatingPointError(f"training diverged: loss became {loss} at epoch {epoch}, "
                                     f"batch {batch}; lower --learning_rate or check the data")


def check_finite(model: keras.Model) -> None:
    """A NaN in the weights means the run diverged: say so rather than save it."""
    for w in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(w))):
            raise FloatingPointError(
                f"training diverged: weight {w.path} holds NaN/inf; lower --learning_rate")
