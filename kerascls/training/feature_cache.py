"""Backbone features computed once for frozen phases (``--feature_cache``).

While the backbone is frozen it is a fixed function of the image, so running it over every
image in every epoch (what a frozen phase cost before) repeats the same work: the head is
all that learns. Here each training (and validation) image goes through the backbone once;
the head then trains on the stored features, epoch after epoch, at the cost of a Dense layer.

The model splits at the head (``split_model``): the backbone ends where the ``head`` Dense
layer's input starts, less the training-only noise layers right before it (dropout), which
stay with the head so they still draw fresh noise every step. A frozen backbone runs in
inference mode in both paths (no stochastic depth, BatchNorm on its moving statistics), so
the cached path trains the same head as the uncached one: with augmentation off, the same
seed gives the same weights (tests/test_feature_cache.py).

With augmentation, ``--feature_views`` augmented passes over the data are stored (at most
one per frozen epoch, so the cache never costs more backbone passes than it saves) and each
epoch takes one random view of every image.

The cache lives in ``RUN/feature_cache/`` (``SPLIT.features.npy``, ``SPLIT.labels.npy``,
``SPLIT.json``): a resumed run reuses it when the key in ``SPLIT.json`` — a sha256 over the
backbone's weights, the architecture and input settings, every record (path, box, labels)
with the content of its file, the augmentation and views — still matches; anything else
recomputes it. It is read into memory up to ``--feature_cache_memory_mb`` and memory-mapped
from the file above that; its size is printed. The directory is removed when the frozen
phase ends (the fine-tuning phase moves the backbone, so the features are then stale).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerascls.layers.regularization import StochasticDepth

CACHE_DIR = "feature_cache"
FORMAT = 1  # bump when the files' layout changes: older caches are then recomputed
# Layers that only add noise in training: they stay on the head's side of the cut.
NOISE_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                keras.layers.AlphaDropout, StochasticDepth)


def split_model(model: keras.Model, head: str = "head"
                ) -> tuple[keras.Model, keras.Model] | None:
    """(backbone, head model), sharing ``model``'s layers; None when there is no single head.

    The cut is the input of the ``head`` layer, moved back past any noise layers before it.
    """
    try:
        layer = model.get_layer(head)
        cut = layer.input
    except (ValueError, AttributeError):
        return None
    while True:
        producer = cut._keras_history.operation
        if not isinstance(producer, NOISE_LAYERS) or not isinstance(producer.input,
                                                                    keras.KerasTensor):
            break
        cut = producer.input
    if cut is model.inputs[0] or len(model.inputs) != 1:
        return None
    backbone = keras.Model(model.inputs, cut, name=f"{model.name}_backbone")
    return backbone, keras.Model(cut, model.outputs, name=f"{model.name}_head")


def frozen_trainer(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """Images → backbone in inference mode → head: the uncached frozen phase's model."""
    image = keras.Input(backbone.input_shape[1:], name="image")
    return keras.Model(image, head(backbone(image, training=False)), name="frozen")


def weights_digest(model: keras.Model) -> str:
    """sha256 of every variable of ``model`` (path-free: shapes, dtypes and values in order)."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (a file replaced in place keeps its name, not its content)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def records_digest(records: list) -> str:
    """sha256 of every record's fields and of the content of every file they name."""
    h = hashlib.sha256()
    contents: dict[str, str] = {}
    for r in records:
        if r.path not in contents:
            contents[r.path] = file_digest(r.path)
        h.update(json.dumps(dataclasses.asdict(r), sort_keys=True, default=str).encode())
        h.update(contents[r.path].encode())
    return h.hexdigest()


def arrays_digest(*arrays: np.ndarray) -> str:
    """sha256 of in-memory arrays (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_key(backbone_digest: str, parts: dict) -> str:
    """The key a cache is stored with: the backbone's weights and everything else that
    changes the features (``parts``: JSON-able settings and data digests)."""
    text = json.dumps({"format": FORMAT, "backbone": backbone_digest, **parts},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SplitSource:
    """One split's images as the backbone sees them, in a fixed order.

    Attributes:
        name: ``train`` or ``val`` (the cache files' prefix).
        count: examples in one pass.
        views: passes stored (augmented views; 1 without augmentation).
        digest: the data's part of the key (computed when asked: it reads every file).
        batches: ``view → (images, labels) batches``, the same examples in the same order
            for every view.
        batch_size: the uncached pipeline's batch size.
        shuffle_buffer: the uncached pipeline's shuffle buffer (None: not shuffled), so the
            cached batches come in the order the uncached ones do.
    """

    name: str
    count: int
    views: int
    digest: Callable[[], str]
    batches: Callable[[int], Iterable]
    batch_size: int
    shuffle_buffer: int | None = None


@dataclass
class CachedSplit:
    """A split's stored features and labels (``views × count`` rows, view-major)."""

    features: np.ndarray
    labels: np.ndarray
    count: int
    views: int
    computed: int  # images that went through the backbone in this process (0: reused)
    in_memory: bool

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.labels.nbytes)

    def _gather(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.features[index]), np.asarray(self.labels[index])

    def dataset(self, batch_size: int, shuffle_buffer: int | None, seed: int) -> tf.data.Dataset:
        """Batches of (features, labels): one view of every example per epoch.

        Shuffled as the uncached pipeline shuffles (a seeded shuffle of ``count`` elements
        draws the same order whatever the elements are); each example's view is drawn at
        random, anew every epoch.
        """
        index = tf.data.Dataset.range(self.count)
        if shuffle_buffer:
            index = index.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if self.views > 1:
            view = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
            index = tf.data.Dataset.zip((index, view)).map(
                lambda i, v: (v % self.views) * self.count + i)
        f_shape, l_shape = self.features.shape[1:], self.labels.shape[1:]

        def gather(i):
            f, y = tf.numpy_function(self._gather, [i], [tf.as_dtype(self.features.dtype),
                                                         tf.as_dtype(self.labels.dtype)])
            f.set_shape([None, *f_shape])
            y.set_shape([None, *l_shape])
            return f, y
        return index.batch(batch_size).map(gather).prefetch(tf.data.AUTOTUNE)


def _paths(directory: Path, name: str) -> dict[str, Path]:
    return {k: directory / f"{name}.{k}" for k in ("features.npy", "labels.npy", "json")}


def _load(directory: Path, name: str, key: str, memory_bytes: int) -> CachedSplit | None:
    """The stored split when its key matches and its files are whole, else None."""
    paths = _paths(directory, name)
    if not all(p.exists() for p in paths.values()):
        return None
    meta = json.loads(paths["json"].read_text())
    if meta.get("key") != key:
        return None
    size = paths["features.npy"].stat().st_size + paths["labels.npy"].stat().st_size
    mode = None if size <= memory_bytes else "r"
    features = np.load(paths["features.npy"], mmap_mode=mode)
    labels = np.load(paths["labels.npy"], mmap_mode=mode)
    if len(features) != meta["views"] * meta["count"] or len(labels) != len(features):
        return None
    return CachedSplit(features, labels, meta["count"], meta["views"], 0, mode is None)


def _stored_dtype(dtype) -> np.dtype:
    """The .npy dtype of a backbone's output: bfloat16 (mixed_bfloat16 runs) widens to
    float32, exactly, since neither ``.npy`` nor tf.data's numpy bridge knows bfloat16."""
    name = keras.backend.standardize_dtype(dtype)
    return np.dtype("float32" if name == "bfloat16" else name)


def _compute(backbone: keras.Model, source: SplitSource, directory: Path) -> None:
    """Run every view through the backbone once, writing ``.npy`` files (atomically)."""
    paths = _paths(directory, source.name)
    for p in paths.values():
        p.unlink(missing_ok=True)
    rows = source.views * source.count
    shape, dtype = backbone.output_shape[1:], _stored_dtype(backbone.output.dtype)
    tmp = {k: p.with_name(p.name + ".tmp.npy") for k, p in paths.items()}
    features = np.lib.format.open_memmap(tmp["features.npy"], "w+", dtype, (rows, *shape))
    labels = None
    at = 0
    for view in range(source.views):
        start = at
        for x, y in source.batches(view):
            f = np.asarray(backbone.predict_on_batch(x))
            y = np.asarray(y)
            if labels is None:
                labels = np.lib.format.open_memmap(tmp["labels.npy"], "w+", y.dtype,
                                                   (rows, *y.shape[1:]))
            features[at:at + len(f)], labels[at:at + len(f)] = f, y
            at += len(f)
        if at - start != source.count:
            raise RuntimeError(f"feature cache: view {view} of {source.name} gave "
                               f"{at - start} examples, expected {source.count}")
    features.flush()
    labels.flush()
    del features, labels
    os.replace(tmp["features.npy"], paths["features.npy"])
    os.replace(tmp["labels.npy"], paths["labels.npy"])


def load_or_compute(backbone: keras.Model, source: SplitSource, directory: Path, key: str,
                    memory_bytes: int) -> CachedSplit:
    """The split's cache: reused when its stored key matches ``key``, else computed."""
    directory.mkdir(parents=True, exist_ok=True)
    cached = _load(directory, source.name, key, memory_bytes)
    if cached is not None:
        return cached
    _compute(backbone, source, directory)
    meta = {"key": key, "count": source.count, "views": source.views, "format": FORMAT}
    path = _paths(directory, source.name)["json"]
    path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=2))
    os.replace(path.with_suffix(".json.tmp"), path)  # last: it vouches for the .npy files
    cached = _load(directory, source.name, key, memory_bytes)
    cached.computed = source.views * source.count
    return cached


def describe(split: CachedSplit, name: str, directory: Path) -> str:
    """One log line: the cache's size, where it is read from, and the backbone passes."""
    mb = split.nbytes / 2**20
    where = "in memory" if split.in_memory else "memory-mapped from the file"
    how = (f"computed now: {split.computed} backbone passes" if split.computed
           else "reused: 0 backbone passes")
    return (f"feature cache {name}: {split.count} images × {split.views} view"
            f"{'s' if split.views > 1 else ''} × {int(np.prod(split.features.shape[1:]))} "
            f"{split.features.dtype} = {mb:.1f} MB, {where} ({directory}); {how}")


def remove(run: Path) -> None:
    """Drop the run's cache (the frozen phase is over: the features are stale from here)."""
    shutil.rmtree(Path(run) / CACHE_DIR, ignore_errors=True)
