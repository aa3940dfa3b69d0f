"""``kerascls train``: build, fit and save a model into a run directory."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerascls.data import pipeline
from kerascls.data import runs as data_runs
from kerascls.data.files import FileSource
from kerascls.data.pipeline import array_dataset
from kerascls.data.records import VIDEO_FORMAT
from kerascls.data.sources import holdout, load_source
from kerascls.errors import UserError
from kerascls.evaluation import plots
from kerascls.evaluation.metrics import write_csv
from kerascls.models import create_model, model_info
from kerascls.models.registry import check_input_size
from kerascls.runs import float32_model
from kerascls.training import calibration, feature_cache, heads
from kerascls.training.callbacks import (
    Backup,
    BestEpoch,
    EpochHistory,
    StopOnNaN,
    check_finite,
    clear_best,
    read_best,
)
from kerascls.training.config import TrainConfig
from kerascls.training.distribute import (
    auto_precision,
    make_strategy,
    worker_count,
    worker_index,
)
from kerascls.training.multiworker import fit_multiworker, per_example_loss
from kerascls.utils import atomic_path


def _schedule(cfg: TrainConfig, total_steps: int, lr: float):
    """``cosine``: linear warm-up then cosine decay; ``step``: ÷10 at 50% and 75% of steps."""
    if cfg.lr_schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(total_steps // 2, 1), max(3 * total_steps // 4, 2)], [lr, lr / 10, lr / 100])
    if cfg.lr_schedule != "cosine":
        raise UserError(f"lr_schedule must be 'cosine' or 'step', got {cfg.lr_schedule!r}")
    warmup = min(cfg.warmup_steps, max(total_steps // 5, 1))
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup, 1), warmup_target=lr, warmup_steps=warmup)


def _optimizer(cfg: TrainConfig, total_steps: int, lr_factor: float = 1.0
               ) -> keras.optimizers.Optimizer:
    """AdamW or SGD-momentum on the configured learning-rate schedule."""
    schedule = _schedule(cfg, total_steps, cfg.learning_rate * lr_factor)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=cfg.weight_decay)
    raise UserError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


HEAD_LAYERS = ("head", "predictions")


def _loss(cfg: TrainConfig, num_classes: int) -> keras.losses.Loss:
    """Cross-entropy matching the head (probabilities or logits) and the labels."""
    return heads.loss(cfg, num_classes, data_runs.options(cfg, training=True).one_hot)


DATA_NAMES = {"fashion_mnist": "Fashion-MNIST"}


def resolve(cfg: TrainConfig, source) -> TrainConfig:
    """Fill the data-dependent fields (shape, classes, output dir) of a config.

    Without ``image_size``, images smaller than the architecture's minimum are resized up
    to it (VGG on 28×28 Fashion-MNIST trains at 32×32); an ``image_size`` the architecture
    cannot take raises ValueError before anything is written.
    """
    h, w, c = source.image_shape
    if cfg.image_size:
        h = w = cfg.image_size
        check_input_size(cfg.arch, h, w, **cfg.model_args)
    least = model_info(cfg.arch).min_size(**cfg.model_args)
    cfg.input_shape = [max(h, least), max(w, least), cfg.channels or c]
    cfg.class_names = list(source.class_names)
    cfg.learning_rate = cfg.learning_rate or model_info(cfg.arch).learning_rate
    cfg.output_dir = cfg.output_dir or f"runs/{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    if cfg.mixed_precision == "auto":
        cfg.mixed_precision = (_interrupted_precision(Path(cfg.output_dir))
                               or auto_precision(cfg.devices))
    return cfg


def interrupted(run: Path) -> bool:
    """Whether ``run`` holds an interrupted run's resume state (``backup*/``)."""
    return any(run.glob("backup*"))


def _interrupted_precision(run: Path) -> str | None:
    """The precision ``auto`` resolved to when the interrupted run in ``run`` started.

    A resume keeps computing as the run began, even where ``auto`` now means something
    else (this code's default changed, or the run moved to another machine).
    """
    if not interrupted(run):
        return None
    try:
        saved = json.loads((run / "config.json").read_text()).get("mixed_precision")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if saved in ("none", "mixed_float16", "mixed_bfloat16") else None


def resize_note(cfg: TrainConfig, source) -> str | None:
    """The one line that says the data is resized up to the architecture's minimum."""
    h, w, _ = source.image_shape
    if cfg.image_size or (h, w) == tuple(cfg.input_shape[:2]):
        return None
    least = model_info(cfg.arch).min_size(**cfg.model_args)
    name = DATA_NAMES.get(source.name, source.name)
    return (f"{cfg.arch} needs at least {least}×{least}; {name}'s {h}×{w} images are "
            f"resized to {cfg.input_shape[0]}×{cfg.input_shape[1]}")


@contextlib.contextmanager
def _undo_failed_start(run: Path, created: bool):
    """Remove the run directory this run created if the block fails (before training starts).

    A failed start (bad data, a model that does not build) then leaves nothing a rerun
    of the same command trips over; a directory that existed before is left as it was.
    """
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(run, ignore_errors=True)
        raise


@dataclass
class Phase:
    """One ``fit`` of a run: epochs [first, last), frozen backbone or not, lr multiplier."""

    name: str
    first: int
    last: int
    frozen: bool
    lr_factor: float = 1.0


def phases(cfg: TrainConfig) -> list[Phase]:
    """The plain run, or head-only epochs followed by fine-tuning of every layer."""
    frozen = cfg.freeze_backbone or cfg.finetune_epochs > 0
    out = [Phase("train", 0, cfg.epochs, frozen)]
    if cfg.finetune_epochs:
        out.append(Phase("finetune", cfg.epochs, cfg.epochs + cfg.finetune_epochs, False,
                         cfg.finetune_lr_factor))
    return out


def refuse_finished_run(run: Path, overwrite: bool) -> None:
    """Stop before a rerun silently retrains over a finished run and replaces its model.

    A rerun of an interrupted run resumes (its ``backup*/`` state is there); a finished run
    has ``model.keras`` and no resume state, and only ``overwrite`` trains it again.
    """
    if overwrite or not (run / "model.keras").exists() or interrupted(run):
        return
    raise FileExistsError(f"{run} already holds a finished run (model.keras); pass "
                          "--overwrite to train it again, or choose another --output_dir")


def train(cfg: TrainConfig, overwrite: bool = False) -> Path:
    """Train as ``cfg`` says; returns the run directory.

    The run directory gets ``config.json`` (when training starts, so a crash keeps it; a
    start that fails earlier removes the directory it created),
    ``history.csv`` (one row per epoch), ``logs/`` (TensorBoard), ``backup/`` (resume state,
    removed when the run ends), ``model.keras``, ``metrics.json`` (test metrics when the data
    has a test split) and ``report/training_curves.png``. A rerun of the same command after a
    crash resumes from the last checkpoint; over a finished run it stops with an error
    unless ``overwrite``.
    """
    strategy = make_strategy(cfg.devices)  # before any op: logical CPUs are set up here
    keras.utils.set_random_seed(cfg.seed)
    from kerascls.data.camtrap_sources import options_from_config
    source = load_source(cfg.data, crop_boxes=cfg.crop_boxes,
                         detection=options_from_config(cfg), video=data_runs.video_rule(cfg))
    cfg = resolve(cfg, source)
    heads.check_classes(cfg)  # before any run directory is written
    note = resize_note(cfg, source)
    if note:
        print(note, flush=True)
    run = Path(cfg.output_dir)
    refuse_finished_run(run, overwrite)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    with _run_lock(run):
        return _train_in(run, created, cfg, source, strategy)


@contextlib.contextmanager
def _run_lock(run: Path):
    """One training process per run directory (per worker, in a multi-worker run).

    A second ``kerascls train`` on the same ``--output_dir`` (another terminal, a rerun
    started by mistake) stops at once, naming the first run's pid, instead of both writing
    one checkpoint and model. The kernel drops the lock when a run dies, so a resume after
    a crash or kill -9 is never refused.
    """
    from kerascls_edge.bundle import EdgeError
    from kerascls_edge.journal import OutputLock
    run = Path(os.path.abspath(run))  # "." and ".." name no directory to lock beside
    name = run.name if worker_count() <= 1 else f"{run.name}.worker{worker_index()}"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(OutputLock(run.with_name(name)))
        except EdgeError as e:  # only the lock's refusal: errors of the run pass as they are
            raise UserError(f"train: {e}") from None
        yield


def _train_in(run: Path, created: bool, cfg: TrainConfig, source, strategy) -> Path:
    """The body of `train` once the run directory is there and locked."""
    with _undo_failed_start(run, created):
        data = (_file_data(cfg, source, run) if isinstance(source, FileSource)
                else _array_data(cfg, source))
        data["monitor"] = _monitor(cfg, data["val"] is not None)
    started = time.time()
    with _precision(cfg.mixed_precision), strategy.scope():
        with _undo_failed_start(run, created):
            model = _build_model(cfg)
        cfg.save(run)
        if worker_count() > 1:
            _fit_workers(model, cfg, data, run, strategy)
        else:
            for phase in phases(cfg):
                _fit_phase(model, cfg, phase, data, run)
    if worker_count() > 1:
        if worker_index() != 0:
            return run  # the chief writes the model, metrics and report
        model = _single_device_copy(cfg, run / "workers" / "0.weights.h5")
        data["monitor"] = None  # the multi-worker loop keeps the last epoch
    metrics = {"train_seconds": round(time.time() - started, 1),
               "replicas": int(strategy.num_replicas_in_sync),
               **_restore_best(model, run, data["monitor"])}
    model = float32_model(model)  # what export ships: metrics.json scores the same model
    check_finite(model)
    metrics.update(_calibrate(model, cfg, data))
    with atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    clear_best(run)  # resume state: model.keras now holds the best epoch
    if data.get("test") is not None:
        metrics.update(data["test"](heads.probability_model(model, data_runs.task_of(cfg))))
    with atomic_path(run / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    plots.training_curves_png(run / "history.csv", run / "report" / "training_curves.png")
    return run


@contextlib.contextmanager
def _precision(policy: str):
    """Keras's global dtype policy for the block (restored after, for in-process callers)."""
    if policy not in ("none", "mixed_float16", "mixed_bfloat16"):
        raise UserError(f"mixed_precision must be none, mixed_float16 or mixed_bfloat16, "
                        f"got {policy!r}")
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if policy == "none" else policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def _weights_file(weights: str) -> str | None:
    """``--weights`` as create_model takes it: a run directory means its model.keras."""
    if not weights:
        return None
    path = Path(weights)
    return str(path / "model.keras") if path.is_dir() else weights


def _build_model(cfg: TrainConfig) -> keras.Model:
    """The architecture, with pretrained weights when asked.

    Weights from a run trained on other classes get a fresh head even when the class count
    matches: the old head's outputs mean other classes.
    """
    weights = _weights_file(cfg.weights)
    model = _create(cfg, weights)
    if weights and _classes_beside(weights) not in (None, list(cfg.class_names)):
        fresh = _create(cfg)
        for name in HEAD_LAYERS:
            model.get_layer(name).set_weights(fresh.get_layer(name).get_weights())
    return model


def _single_device_copy(cfg: TrainConfig, weights: Path) -> keras.Model:
    """The chief's trained weights in a plain model: saving and testing it then need no
    collective with workers that have already left."""
    model = _create(cfg)
    model.load_weights(weights)
    return model


def _create(cfg: TrainConfig, weights: str | None = None) -> keras.Model:
    return create_model(cfg.arch, len(cfg.class_names), tuple(cfg.input_shape),
                        weights=weights, **cfg.model_args)


def _classes_beside(weights: str) -> list[str] | None:
    """Class names of the run a weights file was saved in (its config.json), if any."""
    cfg_file = Path(weights).parent / "config.json"
    return json.loads(cfg_file.read_text()).get("class_names") if cfg_file.exists() else None


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or thaw every layer but the classifier head.

    A frozen Keras 3 BatchNormalization runs in inference mode (its moving statistics are
    neither used from the batch nor updated), which is what fine-tuning needs.
    """
    for layer in model.layers:
        layer.trainable = trainable or layer.name in HEAD_LAYERS


def _fit_workers(model: keras.Model, cfg: TrainConfig, data: dict, run: Path,
                 strategy) -> None:
    """Multi-worker training (custom step, see ``multiworker``); the chief writes history."""
    if cfg.finetune_epochs:
        raise UserError("--finetune_epochs is not supported with several workers yet")
    set_backbone_trainable(model, not cfg.freeze_backbone)
    steps = max(data["count"] // cfg.batch_size, 1)
    rows = fit_multiworker(model, _optimizer(cfg, steps * cfg.epochs),
                           per_example_loss(_loss(cfg, len(cfg.class_names))), data["train"],
                           steps, cfg.epochs, cfg.batch_size, strategy, run,
                           cfg.checkpoint_every_steps)
    if worker_index() == 0:
        write_csv(rows, run / "history.csv")


def _tensorboard(run: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard logs (losses, metrics, learning rate) in ``RUN/logs`` when installed."""
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it; TF 2.21 does not require it)
    except ImportError:
        logging.getLogger("kerascls").warning("tensorboard not installed: no RUN/logs")
        return []
    return [keras.callbacks.TensorBoard(str(run / "logs"), write_graph=False)]


STEPS_PER_EXECUTION = 16


def _steps_per_execution(cfg: TrainConfig) -> int:
    """Training steps per call into the compiled graph: 16 cuts the per-step Python and
    dispatch cost, which small models on a CPU feel (bench/train_step_cpu.py). Batch
    callbacks then fire once per 16 steps, so ``--checkpoint_every_steps`` keeps one step
    per call and its exact step counts; so does a multi-replica strategy, whose multi-step
    loop TensorFlow 2.21 fails to run ("You must feed a value for placeholder tensor")."""
    import tensorflow as tf
    if cfg.checkpoint_every_steps or tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return 1
    return STEPS_PER_EXECUTION


def _fit_phase(model: keras.Model, cfg: TrainConfig, phase: Phase, data: dict,
               run: Path) -> None:
    """Compile and fit one phase; a finished earlier phase (``RUN/PHASE.weights.h5``) of a
    resumed multi-phase run is loaded instead of trained again.

    A frozen phase trains the head alone, on backbone features computed once
    (``feature_cache``) unless ``--feature_cache off``; its best epoch is still saved as
    the whole model's weights, which the rest of the run reads.
    """
    done = run / f"{phase.name}.weights.h5"
    multi = cfg.finetune_epochs > 0
    if multi and done.exists():
        model.load_weights(done)
        return
    set_backbone_trainable(model, not phase.frozen)
    steps = int(np.ceil(data["count"] / cfg.batch_size)) * (phase.last - phase.first)
    one_hot = data_runs.options(cfg, training=True).one_hot
    per_call = _steps_per_execution(cfg)
    model.compile(optimizer=_optimizer(cfg, steps, phase.lr_factor),
                  loss=_loss(cfg, len(cfg.class_names)), metrics=heads.metrics(cfg, one_hot),
                  jit_compile=True if cfg.xla else "auto",
                  run_eagerly=_opt(cfg, "run_eagerly", False),
                  steps_per_execution=per_call)
    trainer, train_ds, val_ds, kind = _frozen_inputs(model, cfg, phase, data, run)
    if trainer is not model:  # the head alone; it shares the model's layers and optimizer
        trainer.compile(optimizer=model.optimizer, loss=_loss(cfg, len(cfg.class_names)),
                        metrics=heads.metrics(cfg, one_hot),
                        jit_compile=True if cfg.xla else "auto",
                        run_eagerly=_opt(cfg, "run_eagerly", False),
                        steps_per_execution=per_call)
    nan = StopOnNaN()
    backup = ("backup" if phase.name == "train" else f"backup_{phase.name}") + kind
    best = ([WholeModelBest(model, run, data["monitor"],
                            _opt(cfg, "early_stopping_patience", 0), start=phase.first)]
            if data.get("monitor") else [])
    callbacks = [EpochHistory(run / "history.csv"), *best,
                 Backup(str(run / backup), save_freq=cfg.checkpoint_every_steps or "epoch"),
                 *_tensorboard(run), nan]
    trainer.fit(train_ds, validation_data=val_ds, initial_epoch=phase.first,
                epochs=phase.last, callbacks=callbacks, verbose=2,
                class_weight=data.get("class_weight"))
    nan.raise_if_stopped()
    if phase.frozen:  # over: stale features, and resume state of the other frozen paths
        feature_cache.remove(run)
        for suffix in {"", "_frozen", FEATURES} - {kind}:
            shutil.rmtree(run / (backup.removesuffix(kind) + suffix), ignore_errors=True)
    if multi:
        model.save_weights(done)


FEATURES = "_features"  # suffix of the resume state of a phase trained on cached features


class WholeModelBest(BestEpoch):
    """BestEpoch that saves the whole model's weights whatever model is being fitted (the
    head alone in a frozen phase), so ``_restore_best`` and later phases can load them."""

    def __init__(self, whole: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.whole = whole

    def _save(self, epoch: int, value: float) -> None:
        fitted = self._model
        self._model = self.whole
        try:
            super()._save(epoch, value)
        finally:
            self._model = fitted


def _frozen_inputs(model: keras.Model, cfg: TrainConfig, phase: Phase, data: dict,
                   run: Path) -> tuple[keras.Model, object, object, str]:
    """What a phase fits: (model, train data, validation data, resume-state suffix).

    Not frozen, or no single ``head`` layer to split at: the model on images, as always.
    Frozen: the head on cached features, or with ``--feature_cache off`` the head after the
    backbone in inference mode, on images — the same function of the same images, so both
    train the same head.
    """
    parts = feature_cache.split_model(model) if phase.frozen else None
    if parts is None:
        return model, data["train"], data["val"], ""
    backbone, head = parts
    if _opt(cfg, "feature_cache", "auto") == "off" or "feature_sources" not in data:
        return (feature_cache.frozen_trainer(backbone, head), data["train"], data["val"],
                "_frozen")
    views = max(1, min(_opt(cfg, "feature_views", FEATURE_VIEWS), phase.last - phase.first))
    sources = data["feature_sources"](views)
    directory = run / feature_cache.CACHE_DIR
    digest = feature_cache.weights_digest(backbone)
    memory = _opt(cfg, "feature_cache_memory_mb", 1024) * 2**20
    out = {}
    for name, source in sources.items():
        if source is None:
            out[name] = None
            continue
        key = feature_cache.cache_key(digest, {**_feature_settings(cfg, source.views),
                                               "split": name, "data": source.digest()})
        cached = feature_cache.load_or_compute(backbone, source, directory, key, memory)
        print(feature_cache.describe(cached, name, directory), flush=True)
        out[name] = cached.dataset(source.batch_size, source.shuffle_buffer, cfg.seed)
    return head, out["train"], out["val"], FEATURES


FEATURE_VIEWS = 2  # --feature_views of configs older than it (config.py: default)
# Settings that change what the backbone sees (the data's own digest covers records/files).
_FEATURE_FIELDS = ("arch", "model_args", "input_shape", "resize", "augment", "crop_boxes",
                   "detection_threshold", "detection_categories", "crop_padding",
                   "square_crops", "min_crop_px", "empty_class", "balance", "mixed_precision",
                   "class_names", "frame_every", "max_frames")


def _feature_settings(cfg: TrainConfig, views: int) -> dict:
    """The run settings a feature cache's key covers (the seed too, for augmented views)."""
    from kerascls._version import __version__
    out = {name: getattr(cfg, name, None) for name in _FEATURE_FIELDS}
    return {**out, "views": views, "seed": cfg.seed if views > 1 else None,
            "kerascls": __version__}


def _opt(cfg: TrainConfig, name: str, default):
    """A config field that older saved configs lack."""
    return getattr(cfg, name, default)


def _monitor(cfg: TrainConfig, has_val: bool) -> str | None:
    """The history column that picks the best epoch, checked before training starts.

    Without a validation split a ``val_*`` monitor falls back to the last epoch (said in one
    line): the training loss is measured on augmented batches while the weights move, so it
    is no held-out judge of an epoch.
    """
    monitor = _opt(cfg, "monitor", "val_loss")
    names = heads.metric_names(cfg, validation=True)
    if monitor not in names:
        raise UserError(f"--monitor {monitor!r} is not a column of this run's history.csv; "
                        f"choose one of {', '.join(names)}")
    if monitor.startswith("val_") and not has_val:
        print(f"no validation split: --monitor {monitor} and early stopping are off; "
              "RUN/model.keras holds the last epoch", flush=True)
        return None
    return monitor


def _history_epochs(run: Path) -> list[int]:
    rows = plots.read_history(run / "history.csv") if (run / "history.csv").exists() else {}
    return [int(e) for e in rows.get("epoch", [])]


def _restore_best(model: keras.Model, run: Path, monitor: str | None) -> dict:
    """Load the best epoch's weights into ``model``; what metrics.json says about it.

    ``best_epoch`` is the ``epoch`` column of history.csv (0-based); ``epochs_run`` counts
    its rows, so early stopping shows as fewer rows than planned.
    """
    epochs = _history_epochs(run)
    out = {"monitor": monitor, "epochs_run": len(epochs),
           "best_epoch": epochs[-1] if epochs else None, "best_value": None}
    state = read_best(run) if monitor else None
    if state and state["monitor"] == monitor and (run / state["weights"]).exists():
        model.load_weights(run / state["weights"])
        out.update(best_epoch=state["epoch"], best_value=state["value"])
    return out


def _calibrate(model: keras.Model, cfg: TrainConfig, data: dict) -> dict:
    """Fit a temperature on the validation logits and fold it into the head.

    Returns metrics.json's ``calibration`` entry: T, or why there is none, and the test
    split's ECE and NLL before and after (computed from the same test logits).
    """
    task = data_runs.task_of(cfg)
    reason = (None if _opt(cfg, "calibrate", True) else "--calibrate is off") or \
        (None if data.get("val") is not None else "no validation split") or \
        calibration.why_not(model)
    if reason:
        return {"calibration": {"temperature": None, "skipped": reason}}
    z_val, y_val = calibration.predict_logits(model, data["val"])
    y_val = calibration.labels_for(y_val, task)
    if calibration.separable(z_val, y_val, task):
        return {"calibration": {"temperature": None, "skipped": "every validation image is "
                                "classified right: no temperature can be fitted on it"}}
    t = calibration.fit_temperature(z_val, y_val, task)
    out = {"temperature": round(t, 6), "fitted_on": "val", "val_count": int(len(y_val)),
           "val_before": calibration.quality(z_val, y_val, task),
           "val_after": calibration.quality(z_val / t, y_val, task)}
    if data.get("test_set") is not None:
        z, y = calibration.predict_logits(model, data["test_set"]())
        y = calibration.labels_for(y, task)
        out.update(test_before=calibration.quality(z, y, task),
                   test_after=calibration.quality(z / t, y, task))
    calibration.fold_temperature(model, t)
    print(f"calibration: temperature {t:.4f} folded into the head", flush=True)
    return {"calibration": out}


def _array_data(cfg: TrainConfig, source) -> dict:
    """In-memory sources (Fashion-MNIST, tfds): the original fast path."""
    x, y = source.split("train")
    if cfg.max_train_images and cfg.max_train_images < len(y):
        keep = np.random.default_rng(cfg.seed).permutation(len(y))[:cfg.max_train_images]
        x, y = x[keep], y[keep]
    (tr_x, tr_y), (va_x, va_y) = holdout(x, y, cfg.val_fraction, cfg.seed)
    size, ch = tuple(cfg.input_shape[:2]), cfg.input_shape[2]
    opts = data_runs.options(cfg, training=True)
    if opts.one_hot:  # MixUp/CutMix: the loss takes one-hot labels, validation's too
        eye = np.eye(len(cfg.class_names), dtype=np.float32)
        tr_y, va_y = eye[tr_y], eye[va_y]
    train_ds = array_dataset(tr_x, tr_y, cfg.batch_size, training=True, image_size=size,
                             channels=ch, seed=cfg.seed, augment=opts.augment)
    val_ds = (array_dataset(va_x, va_y, 512, training=False, image_size=size, channels=ch)
              if len(va_y) else None)
    test = ((lambda m: evaluate_arrays(m, *_test_subset(cfg, *source.split("test")), cfg))
            if source.x_test is not None else None)

    def test_set():
        x, y = _test_subset(cfg, *source.split("test"))
        return array_dataset(x, y, 512, training=False, image_size=size, channels=ch)
    def feature_sources(views: int) -> dict:  # in-memory data has no augmentation
        train = feature_cache.SplitSource(
            "train", len(tr_y), 1, lambda: feature_cache.arrays_digest(tr_x, tr_y),
            lambda view: array_dataset(tr_x, tr_y, cfg.batch_size, training=False,
                                       image_size=size, channels=ch),
            cfg.batch_size, min(len(tr_y), 60_000))
        val = (feature_cache.SplitSource("val", len(va_y), 1,
                                         lambda: feature_cache.arrays_digest(va_x, va_y),
                                         lambda view: val_ds, 512) if len(va_y) else None)
        return {"train": train, "val": val}
    return {"train": train_ds, "val": val_ds, "count": len(tr_y), "test": test,
            "test_set": test_set if test is not None else None,
            "feature_sources": feature_sources}


def _test_subset(cfg: TrainConfig, *arrays):
    """``max_test_images`` of the test split (seeded, order kept), or all of it."""
    n = len(arrays[0])
    if not cfg.max_test_images or cfg.max_test_images >= n:
        return arrays
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(n)[:cfg.max_test_images])
    return tuple(a[keep] if isinstance(a, np.ndarray) else [a[i] for i in keep]
                 for a in arrays)


def _file_data(cfg: TrainConfig, source: FileSource, run: Path) -> dict:
    """File sources: split without leaks (lists in RUN/splits), decode in tf.data."""
    splits = data_runs.prepare_splits(source, cfg, run)
    train_ds, _ = data_runs.dataset(splits["train"], cfg, training=True)
    val_ds = (data_runs.dataset(splits["val"], cfg, training=False)[0]
              if splits["val"] else None)

    def test(model: keras.Model) -> dict:
        ds, y = data_runs.dataset(_test_subset(cfg, splits["test"])[0], cfg, training=False)
        return task_metrics(model.predict(ds, verbose=0), y, data_runs.task_of(cfg))
    def test_set():
        return data_runs.dataset(_test_subset(cfg, splits["test"])[0], cfg, training=False)[0]
    return {"train": train_ds, "val": val_ds, "count": len(splits["train"]),
            "feature_sources": lambda views: _file_feature_sources(cfg, splits, val_ds, views),
            "class_weight": data_runs.fit_class_weight(splits["train"], cfg),
            "test": test if splits["test"] else None,
            "test_set": test_set if splits["test"] else None}


def _file_feature_sources(cfg: TrainConfig, splits: dict, val_ds, views: int) -> dict:
    """The train and val splits of a file source as the feature cache reads them.

    Training examples come in file order (oversampled as the training pipeline does):
    without augmentation unshuffled and plain, so one view is exactly what every epoch
    would see; with it, ``views`` augmented passes (a seed each) in that same order.
    """
    opts = data_runs.options(cfg, training=True)
    records = list(splits["train"])
    if cfg.balance == "sample":
        records = pipeline.oversample(records, cfg.seed)
    labels = pipeline.encode_labels(records, cfg.class_names, data_runs.task_of(cfg),
                                    opts.one_hot)
    augmented = bool(opts.augment)

    def batches(view: int):
        view_opts = dataclasses.replace(opts, training=augmented, shuffle=False, cache="none",
                                        seed=cfg.seed + view)
        return pipeline.file_dataset(records, labels, view_opts)
    train = feature_cache.SplitSource(
        "train", len(records), views if augmented else 1,
        lambda: feature_cache.records_digest(records), batches, cfg.batch_size,
        _shuffle_buffer(records, opts))
    val = (feature_cache.SplitSource("val", len(splits["val"]), 1,
                                     lambda: feature_cache.records_digest(splits["val"]),
                                     lambda view: val_ds, cfg.batch_size)
           if val_ds is not None else None)
    return {"train": train, "val": val}


def _shuffle_buffer(records: list, opts) -> int:
    """The training pipeline's shuffle buffer (``pipeline.file_dataset``)."""
    videos = any(r.fmt == VIDEO_FORMAT for r in records)
    if not videos or pipeline._cache_target(opts, len(records)) is not None:
        return len(records)
    return min(len(records), pipeline.VIDEO_SHUFFLE_BUFFER)


def task_metrics(probs: np.ndarray, y: np.ndarray, task: str) -> dict:
    """Multiclass: top-1 and NLL; binary/multilabel: per-output accuracy at 0.5 and BCE."""
    if task == "multiclass":
        return classification_metrics(probs, y.argmax(-1) if y.ndim == 2 else y)
    p = np.clip(np.asarray(probs, np.float64).reshape(y.shape), 1e-7, 1 - 1e-7)
    return {"accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
            "loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "count": int(len(y))}


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
