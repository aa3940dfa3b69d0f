"""A keras.applications weight file given by path behaves like ``weights="imagenet"``.

A user who downloaded ``resnet50_weights_tf_dim_ordering_tf_kernels.h5`` by hand passes
``create_model("resnet50", weights=PATH)`` and feeds raw RGB pixels; the result must be
keras.applications' own model fed ``preprocess_input(raw)`` (caffe BGR mean subtraction
for ResNet, the twin's in-model statistics for the others). Offline proof: the twin is
built with ``weights=None``, given random non-default weights (so its outputs are peaked
and a wrong preprocessing shows), saved under keras' own file name — as the legacy HDF5
of the official files and as a Keras 3 ``.weights.h5`` — and loaded by path. Small
inputs keep it fast; the large twins run under ``slow``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascls.models import create_model
from kerascls.models import weights as W
from tests.twins import keras_twin, save_legacy_h5, textured_images

SIZE = (32, 32, 3)
PREPROCESS = {"resnet": keras.applications.resnet.preprocess_input,
              "efficientnet": keras.applications.efficientnet.preprocess_input,
              "efficientnet_v2": keras.applications.efficientnet_v2.preprocess_input,
              "convnext": keras.applications.convnext.preprocess_input,
              "mobilenet_v3": keras.applications.mobilenet_v3.preprocess_input}
FAST = ["resnet50", "efficientnet_b0", "convnext_tiny", "mobilenetv3_small"]
SLOW = sorted(set(W.TWINS) - set(FAST))
VAR_FACTOR = 1.3  # BN variance over the batch's: outputs input-dependent, yet not chaotic
EFFICIENTNET_STATS = ((0.3, 0.45, 0.6), (0.04, 0.09, 0.0625))  # not the identity


pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py


def _twin(name: str, seed: int = 0, input_stats: tuple | None = None) -> keras.Model:
    """keras.applications' model (logits out), random weights that keep the input's signal.

    Its own initialisation, then BatchNorm statistics set to those of a batch of
    (preprocessed) images and the classifier scaled to logits of spread ~3 on the test
    images: the probabilities then depend on the input, so a wrong preprocessing shows.
    """
    keras.utils.set_random_seed(seed)
    model = keras_twin(name, SIZE)
    if input_stats:  # EfficientNet's in-model Normalization (mean, variance)
        _set_input_stats(model, *input_stats)
    layers = list(model._flatten_layers())
    norms = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    drops = [la for la in layers if isinstance(la, keras.layers.Dropout)]
    rates = [la.rate for la in drops]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode call sets the moving statistics
    for layer in drops:
        layer.rate = 0.0  # of the whole network (EfficientNet's drop-connect off)
    calib = _theirs_input(name, _raw(seed + 7, 32))
    model(calib, training=True)
    for layer in norms:  # then a little below the batch's spread: deep twins stay stable
        layer.momentum = 0.99
        layer.moving_variance.assign(layer.moving_variance * VAR_FACTOR)
    for layer, rate in zip(drops, rates):
        layer.rate = rate
    logits = np.asarray(model(_theirs_input(name, _raw()), training=False))  # the test's
    head = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][-1]
    scale = 3.0 / max(float(np.std(logits - logits.mean(axis=1, keepdims=True))), 1e-6)
    head.kernel.assign(head.kernel * scale)
    head.bias.assign(head.bias * scale)
    return model


def _set_input_stats(model: keras.Model, mean, variance) -> None:
    norm = next(la for la in model.layers if isinstance(la, keras.layers.Normalization))
    norm.adapt_mean.assign(np.asarray(mean, "float32"))
    norm.adapt_variance.assign(np.asarray(variance, "float32"))
    norm.finalize_state()


def _save(model: keras.Model, folder, name: str, fmt: str) -> str:
    """Under keras.applications' file name: legacy HDF5 (``.h5``) or Keras 3 format."""
    path = folder / W.TWINS[name].files[0]
    if fmt == ".h5":
        save_legacy_h5(model, path)
    else:
        path = path.with_name(path.name[:-3] + ".weights.h5")
        model.save_weights(path)
    return str(path)


def _raw(seed: int = 1, n: int = 3) -> np.ndarray:
    return textured_images(SIZE, seed, n, amplitude=50)


def _theirs_input(name: str, raw: np.ndarray) -> np.ndarray:
    return PREPROCESS[W.TWINS[name].module](raw.copy())


def _theirs(model: keras.Model, name: str, raw: np.ndarray) -> np.ndarray:
    """keras' probabilities for raw pixels: its own ``preprocess_input``, then softmax."""
    logits = np.asarray(model(_theirs_input(name, raw), training=False), np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ours(path: str, name: str, raw: np.ndarray, **kw) -> np.ndarray:
    model = create_model(name, 1000, SIZE, weights=path, **kw)
    return np.asarray(model(raw, training=False))


def _check_family(name: str, tmp_path, fmt: str) -> None:
    stats = EFFICIENTNET_STATS if W.TWINS[name].module == "efficientnet" else None
    theirs = _twin(name, input_stats=stats)  # non-trivial statistics must be read
    path = _save(theirs, tmp_path, name, fmt)
    raw = _raw()
    want = _theirs(theirs, name, raw)
    assert np.ptp(want, axis=0).max() > 1e-3, "outputs must depend on the input"
    got = _ours(path, name, raw)
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("name", FAST)
def test_weight_file_by_name_gets_twin_preprocessing(name, tmp_path):
    _check_family(name, tmp_path, ".h5")


@pytest.mark.parametrize("name", ["efficientnet_b0",
                                  pytest.param("resnet50", marks=pytest.mark.slow)])
def test_keras3_weight_file_by_name(name, tmp_path):
    _check_family(name, tmp_path, ".weights.h5")


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_every_twin_weight_file(name, tmp_path):
    _check_family(name, tmp_path, ".h5")


def test_renamed_file_recognised_by_layout(tmp_path):
    """No keras file name: the twin's layer layout (no ``head``) is enough."""
    theirs = _twin("resnet50")
    folder = tmp_path / "dl"
    folder.mkdir()
    path = _save(theirs, folder, "resnet50", ".weights.h5")
    renamed = tmp_path / "my_resnet.weights.h5"
    (folder / path.rsplit("/", 1)[-1]).rename(renamed)
    raw = _raw()
    np.testing.assert_allclose(_ours(str(renamed), "resnet50", raw),
                               _theirs(theirs, "resnet50", raw), atol=1e-4)


def test_official_efficientnet_statistics_mean_imagenet(tmp_path):
    """Keras' official files store the ImageNet std as the variance; ``weights="imagenet"``
    divides once more (tensorflow#49930). A file with those values gets the same."""
    mean, std = W.IMAGENET
    theirs = _twin("efficientnet_b0", input_stats=(mean, std))  # the official file's values
    path = _save(theirs, tmp_path, "efficientnet_b0", ".h5")
    assert W.expected_input("efficientnet_b0", path) == W.expected_input("efficientnet_b0",
                                                                         "imagenet")
    _set_input_stats(theirs, mean, np.square(std))  # what weights="imagenet" computes
    raw = _raw()
    np.testing.assert_allclose(_ours(path, "efficientnet_b0", raw),
                               _theirs(theirs, "efficientnet_b0", raw), atol=1e-4)


def test_own_weights_keep_own_preprocessing(tmp_path):
    """A kerascls model's own file is not a keras.applications file: nothing changes."""
    ours = create_model("mobilenetv3_small", 4, SIZE)
    path = tmp_path / "mobilenet_mine.weights.h5"
    ours.save_weights(path)
    assert W.expected_input("mobilenetv3_small", str(path)) is None
    again = create_model("mobilenetv3_small", 4, SIZE, weights=str(path))
    raw = _raw()
    np.testing.assert_allclose(again(raw, training=False), ours(raw, training=False),
                               atol=1e-5)


def test_explicit_stats_win_over_the_file(tmp_path):
    theirs = _twin("mobilenetv3_small")
    path = _save(theirs, tmp_path, "mobilenetv3_small", ".h5")
    model = create_model("mobilenetv3_small", 1000, SIZE, weights=path, mean=(0.5,) * 3,
                         std=(0.25,) * 3)
    assert model.get_layer("preprocess").std == (0.25,) * 3


def test_efficientnet_statistics_under_a_suffixed_name(tmp_path):
    """A twin built after another in one process names its layer ``normalization_1``."""
    keras.applications.EfficientNetB0(weights=None, input_shape=SIZE)
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=SIZE)
    mean, var = EFFICIENTNET_STATS
    _set_input_stats(theirs, mean, var)
    path = _save(theirs, tmp_path, "efficientnet_b0", ".h5")
    got = W.expected_input("efficientnet_b0", path).stats
    np.testing.assert_allclose(got[0], mean, atol=1e-6)
    np.testing.assert_allclose(got[1], np.sqrt(var), atol=1e-6)
