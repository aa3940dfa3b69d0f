"""Fashion-MNIST, the default dataset: Debian's idx.gz files, else tensorflow-datasets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from kerascls.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class DataUnavailableError(UserError, RuntimeError):
    """Neither the Debian package nor tensorflow-datasets could provide the data."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as the uint8 array its header describes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path}: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def data_dir() -> Path:
    """Where the idx files live: $KERASCLS_FASHION_MNIST_DIR or the Debian package's folder."""
    return Path(os.environ.get("KERASCLS_FASHION_MNIST_DIR", DEBIAN_DIR))


def _from_debian(split: str) -> tuple[np.ndarray, np.ndarray] | None:
    images, labels = (data_dir() / f for f in _FILES[split])
    if not (images.exists() and labels.exists()):
        return None
    return read_idx(images)[..., None], read_idx(labels).astype(np.int64)


def _from_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
        ds = tfds.load("fashion_mnist", split=split, batch_size=-1, as_supervised=True)
        x, y = tfds.as_numpy(ds)
    except Exception as e:  # tfds raises many kinds: no network, no builder, …
        raise DataUnavailableError(
            "Fashion-MNIST not found: install the Debian package "
            "(`apt-get install dataset-fashion-mnist`, files under "
            f"{DEBIAN_DIR}) or give tensorflow-datasets network access ({e})") from e
    return x.astype(np.uint8), y.astype(np.int64)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28, 1) uint8 and labels (N,) int64 for ``train`` or ``test``."""
    if split not in _FILES:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    return _from_debian(split) or _from_tfds(split)
