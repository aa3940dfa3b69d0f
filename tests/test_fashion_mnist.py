"""The Fashion-MNIST reader: the IDX format, and the Debian package's real files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from kerascls.data import fashion_mnist as fm
from kerascls.data.sources import holdout, load_source
from tests.conftest import needs_debian


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "x.gz"), images)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    _write_idx(tmp_path / "x.gz", np.zeros((3, 4, 4)))
    data = gzip.open(tmp_path / "x.gz").read()
    (tmp_path / "cut").write_bytes(data[:-5])
    with pytest.raises(ValueError, match="expected 48 values"):
        fm.read_idx(tmp_path / "cut")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        fm.read_idx(tmp_path / "png")


def test_env_dir_is_used(tmp_path, monkeypatch):
    for split, n in (("train", 6), ("test", 4)):
        img, lab = fm._FILES[split]
        _write_idx(tmp_path / img, np.full((n, 28, 28), 3))
        _write_idx(tmp_path / lab, np.arange(n) % 10)
    monkeypatch.setenv("KERASCLS_FASHION_MNIST_DIR", str(tmp_path))
    x, y = fm.load_fashion_mnist("test")
    assert x.shape == (4, 28, 28, 1) and list(y) == [0, 1, 2, 3]


@needs_debian
@pytest.mark.parametrize("split, count", [("train", 60_000), ("test", 10_000)])
def test_debian_files(split, count):
    x, y = fm.load_fashion_mnist(split)
    assert x.shape == (count, 28, 28, 1) and x.dtype == np.uint8
    assert y.shape == (count,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9
    assert np.bincount(y).tolist() == [count // 10] * 10  # the dataset is balanced
    assert 0 < x.mean() < 255 and x.max() == 255


@needs_debian
def test_source_and_stratified_holdout():
    src = load_source("fashion_mnist")
    assert src.class_names[0] == "T-shirt/top" and len(src.class_names) == 10
    (tx, ty), (vx, vy) = holdout(*src.split("train"), 0.1, seed=1)
    assert len(vy) == 6000 and len(ty) == 54_000
    assert np.bincount(vy).tolist() == [600] * 10
    (_, _), (_, vy2) = holdout(*src.split("train"), 0.1, seed=1)
    np.testing.assert_array_equal(vy, vy2)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("imagenet21k")
