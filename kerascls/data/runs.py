"""File sources inside a run directory: the split lists, bad files and pipeline options.

``train`` writes ``RUN/splits/{train,val,test}.csv`` and ``RUN/bad_files.json``; ``export``
and ``evaluate`` read the lists back, so calibration and held-out images are exactly the
ones training set aside — never re-split, never leaked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerascls.config import TrainConfig
from kerascls.data.duplicates import check_duplicates
from kerascls.data.pipeline import (
    PipelineOptions,
    class_weights,
    encode_labels,
    file_dataset,
    oversample,
)
from kerascls.data.records import (
    Record,
    VideoRule,
    check_files,
    read_split_csv,
    write_bad_files,
)
from kerascls.data.splits import write_splits
from kerascls.data.transforms import LABEL_MIXING, parse_augment
from kerascls.errors import UserError

log = logging.getLogger("kerascls.data")
BALANCE = ("none", "weights", "sample")


def task_of(cfg: TrainConfig) -> str:
    """The head's task (model_args ``task``), which decides the label encoding."""
    return (cfg.model_args or {}).get("task", "multiclass")


def video_rule(cfg: TrainConfig) -> VideoRule:
    """The run's video sampling rule (``--frame_every``, ``--max_frames``)."""
    return VideoRule(float(cfg.frame_every), int(cfg.max_frames))


def options(cfg: TrainConfig, *, training: bool, batch_size: int | None = None) -> PipelineOptions:
    """Pipeline options of a run's config (the same resize for train, eval and export)."""
    augment = tuple(parse_augment(cfg.augment))
    return PipelineOptions(tuple(cfg.input_shape[:2]), batch_size or cfg.batch_size,
                           training=training, resize=cfg.resize,
                           augment=augment, cache=cfg.cache,
                           seed=cfg.seed, one_hot=bool(set(augment) & set(LABEL_MIXING)),
                           channels=cfg.input_shape[2], video=video_rule(cfg))


def prepare_splits(source, cfg: TrainConfig, run_dir: Path) -> dict[str, list[Record]]:
    """Split a checked file source, write the lists and bad files; log the counts."""
    write_bad_files(source.bad, run_dir)
    splits = source.splits(cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if not splits["train"]:
        raise UserError(f"{source.name}: no training images after the split")
    if cfg.max_train_images and cfg.max_train_images < len(splits["train"]):
        keep = np.random.default_rng(cfg.seed).permutation(len(splits["train"]))
        splits["train"] = [splits["train"][i] for i in sorted(keep[:cfg.max_train_images])]
    check_duplicates(splits, cfg.allow_duplicate_files, source.name)  # one image, two labels
    write_splits(splits, run_dir)
    log.warning("%s: %s images (%d bad files skipped, listed in %s)", source.name,
                " / ".join(f"{k} {len(v)}" for k, v in splits.items()), len(source.bad),
                Path(run_dir) / "bad_files.json")
    return splits


def dataset(records: list[Record], cfg: TrainConfig, *, training: bool,
            batch_size: int | None = None) -> tuple[tf.data.Dataset, np.ndarray]:
    """Batches for a split of a run, and the encoded labels in file order."""
    opts = options(cfg, training=training, batch_size=batch_size)
    if not training:
        opts.augment = ()  # labels stay one-hot where the loss needs it (validation)
    if training and cfg.balance == "sample":
        records = oversample(records, cfg.seed)
    labels = encode_labels(records, cfg.class_names, task_of(cfg), opts.one_hot)
    return file_dataset(records, labels, opts), labels


def fit_class_weight(records: list[Record], cfg: TrainConfig) -> dict[int, float] | None:
    """Keras ``class_weight`` when ``balance=weights`` (multiclass or binary only)."""
    if cfg.balance != "weights":
        return None
    if task_of(cfg) == "multilabel":
        raise UserError("balance=weights needs a multiclass or binary task; use balance=sample")
    return class_weights(records, cfg.class_names)


def split_records(run_dir: Path | None, split: str) -> list[Record] | None:
    """A run's saved split list (re-checked: files may have changed since), or None.

    Video frames are re-sampled by the run's rule (its config.json): a listed frame the rule
    no longer yields is left out with a warning.
    """
    if run_dir is None:
        return None
    name = {"validation": "val"}.get(split, split)
    path = Path(run_dir) / "splits" / f"{name}.csv"
    if not path.exists():
        return None
    cfg_file = Path(run_dir) / "config.json"
    rule = video_rule(TrainConfig.load(run_dir)) if cfg_file.exists() else VideoRule()
    result = check_files(read_split_csv(path), video=rule)
    if not result.records:
        raise UserError(f"{path}: no readable image")
    return result.records


def sample_records(spec: str, split: str, count: int, seed: int, run_dir: Path | None,
                   crop_boxes: bool = False, video: VideoRule | None = None) -> list[Record]:
    """``count`` seeded records of a split: the run's saved list, else a fresh split."""
    from kerascls.data.sources import load_source
    records = split_records(run_dir, split)
    if records is None:
        parts = load_source(spec, crop_boxes=crop_boxes, video=video).splits(0.1, 0.1, seed)
        records = parts.get({"validation": "val"}.get(split, split)) or []
    if not records:
        raise UserError(f"{spec}: the {split!r} split has no images")
    idx = np.random.default_rng(seed).permutation(len(records))[:count]
    return [records[i] for i in sorted(idx)]


def sample_file_images(spec: str, split: str, count: int, shape, seed: int = 0,
                       run_dir: Path | None = None,
                       multi_hot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (resized as the run trained) and class indices of a file source's split.

    Class indices follow the run's class list (config.json), so they match the model's
    outputs; a record's first label is its class, or with ``multi_hot`` its labels give a
    K-hot row (records with a label outside the class list are left out).
    """
    cfg_file = Path(run_dir) / "config.json" if run_dir else None
    cfg = TrainConfig.load(run_dir) if cfg_file and cfg_file.exists() else TrainConfig(data=spec)
    records = sample_records(spec, split, count, seed, run_dir, cfg.crop_boxes, video_rule(cfg))
    names = cfg.class_names or sorted({r.labels[0] for r in records})
    opts = PipelineOptions(tuple(shape[:2]), 64, resize=cfg.resize, channels=int(shape[2]),
                           cache="none", video=video_rule(cfg))
    if multi_hot:
        records = [r for r in records if set(r.labels) <= set(names)]
        y = encode_labels(records, names, "multilabel")
    else:
        y = np.array([names.index(r.labels[0]) if r.labels[0] in names else -1
                      for r in records])
    xs = [np.asarray(x, np.float32) for x, _ in file_dataset(records, y, opts)]
    return np.concatenate(xs), y
