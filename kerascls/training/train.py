"""``kerascls train``: build, fit and save a model into a run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from kerascls.data import runs as data_runs
from kerascls.data.pipeline import array_dataset
from kerascls.data.sources import FileSource, holdout, load_source
from kerascls.models import create_model
from kerascls.training.config import TrainConfig
from kerascls.utils import atomic_path


def _optimizer(cfg: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW or SGD-momentum with linear warm-up then cosine decay."""
    warmup = min(cfg.warmup_steps, max(total_steps // 5, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup, 1), warmup_target=cfg.learning_rate, warmup_steps=warmup)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


def _loss(cfg: TrainConfig, num_classes: int) -> keras.losses.Loss:
    """Cross-entropy matching the head and the labels the data pipeline emits."""
    if data_runs.task_of(cfg) in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)
    if data_runs.options(cfg, training=True).one_hot:  # MixUp/CutMix: mixed float labels
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    if cfg.label_smoothing:
        return _SmoothedSparseCE(num_classes, cfg.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


class _SmoothedSparseCE(keras.losses.Loss):
    """Sparse cross-entropy with label smoothing (Keras only offers it for one-hot labels)."""

    def __init__(self, num_classes: int, smoothing: float, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.smoothing = num_classes, smoothing

    def call(self, y_true, y_pred):
        onehot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                                   self.num_classes)
        return keras.losses.categorical_crossentropy(onehot, y_pred,
                                                     label_smoothing=self.smoothing)


def resolve(cfg: TrainConfig, source) -> TrainConfig:
    """Fill the data-dependent fields (shape, classes, output dir) of a config."""
    h, w, c = source.image_shape
    size = cfg.image_size or h
    cfg.input_shape = [size, size if cfg.image_size else w, cfg.channels or c]
    cfg.class_names = list(source.class_names)
    cfg.output_dir = cfg.output_dir or f"runs/{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg


def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says; returns the run directory.

    The run directory gets ``config.json`` (before training, so a crash keeps it),
    ``history.csv``, ``backup/`` (resume state, removed when the run ends), ``model.keras``
    and ``metrics.json`` (test accuracy and loss when the data has a test split).
    A rerun of the same command after a crash resumes from the last finished epoch.
    """
    keras.utils.set_random_seed(cfg.seed)
    source = load_source(cfg.data, crop_boxes=cfg.crop_boxes)
    cfg = resolve(cfg, source)
    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run)
    data = (_file_data(cfg, source, run) if isinstance(source, FileSource)
            else _array_data(cfg, source))
    train_ds, val_ds, train_count = data["train"], data["val"], data["count"]
    model = create_model(cfg.arch, len(cfg.class_names), tuple(cfg.input_shape), **cfg.model_args)
    steps = int(np.ceil(train_count / cfg.batch_size)) * cfg.epochs
    model.compile(optimizer=_optimizer(cfg, steps), loss=_loss(cfg, len(cfg.class_names)),
                  metrics=["accuracy"])
    callbacks = [keras.callbacks.BackupAndRestore(str(run / "backup")),
                 keras.callbacks.CSVLogger(str(run / "history.csv"), append=True),
                 keras.callbacks.TerminateOnNaN()]
    started = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks,
              verbose=2, class_weight=data.get("class_weight"))
    _check_finite(model)
    with atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    metrics = {"train_seconds": round(time.time() - started, 1)}
    if data.get("test") is not None:
        metrics.update(data["test"](model))
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run


def _array_data(cfg: TrainConfig, source) -> dict:
    """In-memory sources (Fashion-MNIST, tfds): the original fast path."""
    x, y = source.split("train")
    if cfg.max_train_images and cfg.max_train_images < len(y):
        keep = np.random.default_rng(cfg.seed).permutation(len(y))[:cfg.max_train_images]
        x, y = x[keep], y[keep]
    (tr_x, tr_y), (va_x, va_y) = holdout(x, y, cfg.val_fraction, cfg.seed)
    size, ch = tuple(cfg.input_shape[:2]), cfg.input_shape[2]
    train_ds = array_dataset(tr_x, tr_y, cfg.batch_size, training=True, image_size=size,
                             channels=ch, seed=cfg.seed)
    val_ds = (array_dataset(va_x, va_y, 512, training=False, image_size=size, channels=ch)
              if len(va_y) else None)
    test = ((lambda m: evaluate_arrays(m, *source.split("test"), cfg))
            if source.x_test is not None else None)
    return {"train": train_ds, "val": val_ds, "count": len(tr_y), "test": test}


def _file_data(cfg: TrainConfig, source: FileSource, run: Path) -> dict:
    """File sources: split without leaks (lists in RUN/splits), decode in tf.data."""
    splits = data_runs.prepare_splits(source, cfg, run)
    train_ds, _ = data_runs.dataset(splits["train"], cfg, training=True)
    val_ds = (data_runs.dataset(splits["val"], cfg, training=False)[0]
              if splits["val"] else None)

    def test(model: keras.Model) -> dict:
        ds, y = data_runs.dataset(splits["test"], cfg, training=False)
        return task_metrics(model.predict(ds, verbose=0), y, data_runs.task_of(cfg))
    return {"train": train_ds, "val": val_ds, "count": len(splits["train"]),
            "class_weight": data_runs.fit_class_weight(splits["train"], cfg),
            "test": test if splits["test"] else None}


def task_metrics(probs: np.ndarray, y: np.ndarray, task: str) -> dict:
    """Multiclass: top-1 and NLL; binary/multilabel: per-output accuracy at 0.5 and BCE."""
    if task == "multiclass":
        return classification_metrics(probs, y.argmax(-1) if y.ndim == 2 else y)
    p = np.clip(np.asarray(probs, np.float64).reshape(y.shape), 1e-7, 1 - 1e-7)
    return {"accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
            "loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "count": int(len(y))}


def _check_finite(model: keras.Model) -> None:
    """A NaN in the weights means the run diverged: say so rather than save it."""
    for w in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(w))):
            raise FloatingPointError(
                f"training diverged: weight {w.path} holds NaN/inf; lower --learning_rate")


def evaluate_arrays(model: keras.Model, x: np.ndarray, y: np.ndarray,
                    cfg: TrainConfig) -> dict:
    """Top-1 accuracy and mean cross-entropy of a Keras model on arrays."""
    ds = array_dataset(x, y, 512, training=False, image_size=tuple(cfg.input_shape[:2]),
                       channels=cfg.input_shape[2])
    probs = model.predict(ds, verbose=0)
    return classification_metrics(probs, y)


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and negative log-likelihood from class probabilities."""
    y = np.asarray(y).reshape(-1).astype(int)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return {"accuracy": float(np.mean(np.argmax(probs, -1) == y)),
            "loss": float(-np.mean(np.log(p_true))), "count": int(len(y))}
