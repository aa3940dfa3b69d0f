"""keras.applications twins for the weight-file tests (not a test module: no tests here).

``test_weight_files.py`` and ``test_efficientnetv2.py`` both build keras.applications'
model with random weights, feed it photograph-like pixels and save it as Keras' legacy
HDF5; these helpers are that shared part, written once.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

from kerascls.models import weights as W


def keras_twin(name: str, shape: tuple[int, int, int], include_top: bool = True) -> keras.Model:
    """keras.applications' model for our ``name`` (``weights=None``, logits out)."""
    app = getattr(keras.applications, W.TWINS[name].app)
    return app(weights=None, include_top=include_top, input_shape=shape,
               classifier_activation=None)


def textured_images(size: tuple[int, int, int], seed: int = 1, n: int = 3,
                    amplitude: float = 50.0) -> np.ndarray:
    """Photograph-like raw pixels, 0–255: scenes from dark to bright, each a different
    colour gradient of ``amplitude`` grey levels with texture (noise of std 20)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / size[0]
    images = []
    for level in np.linspace(50, 200, n):
        f = rng.uniform(1, 6, 3)
        base = np.stack([level + amplitude * np.sin(f[c] * xx + c) * np.cos(f[2 - c] * yy)
                         for c in range(3)], -1)
        images.append(base + rng.normal(0, 20, size))
    return np.clip(np.stack(images), 0, 255).astype("float32")


def save_legacy_h5(model: keras.Model, path: str | Path) -> None:
    """The layout of keras.applications' published files (``layer_names`` + groups)."""
    from keras.src.legacy.saving import legacy_h5_format  # test-only: no public writer
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
