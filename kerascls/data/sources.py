"""Data sources behind one ``--data`` spec string.

Only ``fashion_mnist`` (the default) is served from memory here; the file-based sources
(``folder:``, ``csv:``, ``coco:``, ``tfds:``) plug in behind the same ``load_source``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerascls.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

DEFAULT_DATA = "fashion_mnist"


@dataclass
class ArraySource:
    """A dataset held in memory as uint8 NHWC images and integer labels."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Arrays of ``train`` or ``test``; a missing test split is a clear error."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test" and self.x_test is not None:
            return self.x_test, self.y_test
        raise ValueError(f"data source {self.name!r} has no {name!r} split")


def load_source(spec: str = DEFAULT_DATA) -> ArraySource:
    """Resolve a ``--data`` spec to a source.

    Raises:
        ValueError: the spec names a source kind this build does not know.
    """
    kind = spec.split(":", 1)[0]
    if kind == "fashion_mnist":
        x_train, y_train = load_fashion_mnist("train")
        x_test, y_test = load_fashion_mnist("test")
        return ArraySource("fashion_mnist", list(CLASS_NAMES), x_train, y_train, x_test, y_test)
    raise ValueError(f"unknown data source {spec!r}; supported: fashion_mnist")


def holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded, class-stratified split of arrays into (train, validation) parts."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        val[rng.choice(idx, int(round(len(idx) * fraction)), replace=False)] = True
    return (x[~val], y[~val]), (x[val], y[val])
