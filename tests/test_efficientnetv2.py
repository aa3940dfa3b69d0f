"""EfficientNetV2 B0–B3/S/M/L against keras.applications: counts, weight files, int8.

Weight compatibility is proven offline as for the other families: keras.applications'
model built with ``weights=None`` and given random non-default weights (BN statistics
too) is saved (Keras 3 ``.weights.h5``, and the legacy HDF5 of the official files under
keras' own file name, i.e. ``weights="imagenet"`` from the cache); ours, loaded from it
and fed the same raw pixels, must give the same logits within 1e-5. keras' model carries
its own preprocessing (``include_preprocessing``), so both take raw 0–255 pixels.
Default runs build B0 at 32×32; the bigger variants run under ``-m slow``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascls.models import create_model, list_models, model_info
from kerascls.models import weights as W
from kerascls.summary import count_params
from tests.twins import keras_twin, save_legacy_h5, textured_images

NAMES = ["efficientnetv2_b0", "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3",
         "efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l"]
SIZE = (32, 32, 3)


def _params(names: list[str]) -> list:
    return [n if n == "efficientnetv2_b0" else pytest.param(n, marks=pytest.mark.slow)
            for n in names]


pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py


def _theirs(name: str, include_top: bool = True, shape=SIZE) -> keras.Model:
    return keras_twin(name, shape, include_top)


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Non-default values in every weight, the signal kept: keras' own random kernels
    (variance-preserving), random biases, BN scales/offsets and moving statistics."""
    rng = np.random.default_rng(seed)
    deep = sum("project_bn" in layer.name for layer in model.layers) > 60  # L: 79 blocks
    for v in model.weights:
        if v.name in ("gamma", "beta", "bias", "moving_mean", "moving_variance"):
            value = rng.normal(0.0, 0.1, size=v.shape)
            if v.name == "gamma":
                # residual branches scaled down (project_bn), so 50+ blocks deep (M, L)
                # the activations stay O(1) and float32 rounding is not amplified
                branch = 0.55 if deep else 0.7
                value = (branch if "project_bn" in v.path else 1.0) + np.abs(value)
            elif v.name == "moving_variance":
                value = 1.0 + np.abs(value)
            v.assign(value.astype("float32"))


def _raw(seed: int = 1, n: int = 3) -> np.ndarray:
    return textured_images(SIZE, seed, n, amplitude=60)


def _assert_same(ours: keras.Model, theirs: keras.Model) -> None:
    x = _raw()
    a = np.asarray(theirs(x, training=False))
    b = np.asarray(ours(x, training=False))
    assert a.shape == b.shape
    assert np.ptp(a, axis=0).max() > 1e-4, "outputs must depend on the input"
    assert np.abs(a - b).max() < 1e-5 * max(1.0, np.abs(a).max()), np.abs(a - b).max()


def test_registered_with_metadata():
    assert set(NAMES) <= set(list_models("efficientnetv2"))
    for name in NAMES:
        info = model_info(name)
        assert info.min_input_size == 32 and info.ref_params and "EfficientNetV2" in info.matches
        assert name in W.TWINS


# --- parameter counts -----------------------------------------------------------------

@pytest.mark.parametrize("name", _params(NAMES))
def test_counts_equal_keras_applications(name):
    """Ours at the reference size vs keras.applications built here (not the table)."""
    size = model_info(name).input_size
    ours = create_model(name, input_shape=(size, size, 3))
    theirs = _theirs(name, shape=(size, size, 3))
    trainable = sum(int(np.prod(w.shape)) for w in theirs.trainable_weights)
    assert count_params(ours) == trainable == model_info(name).ref_params
    assert ours.count_params() == theirs.count_params() == model_info(name).keras_params


# --- weight files ---------------------------------------------------------------------

@pytest.mark.parametrize("name", _params(NAMES))
def test_keras_applications_weight_file_loads(name, tmp_path):
    theirs = _theirs(name)
    _randomize(theirs)
    path = tmp_path / "v2.weights.h5"  # renamed: recognised by its layout
    theirs.save_weights(path)
    _assert_same(create_model(name, 1000, SIZE, logits=True, weights=str(path)), theirs)


@pytest.mark.parametrize("name", _params(["efficientnetv2_b0", "efficientnetv2_s"]))
def test_imagenet_from_keras_cache(name, tmp_path, monkeypatch):
    """``weights="imagenet"``: the official legacy-HDF5 file name in keras' cache."""
    monkeypatch.setattr(W, "keras_home", lambda: str(tmp_path))
    (tmp_path / "models").mkdir()
    theirs = _theirs(name)
    _randomize(theirs)
    save_legacy_h5(theirs, tmp_path / "models" / W.TWINS[name].files[0])
    with pytest.warns(UserWarning, match="hash"):
        ours = create_model(name, 1000, SIZE, logits=True, weights="imagenet")
    _assert_same(ours, theirs)


def test_notop_file_for_k_class_model(tmp_path):
    theirs = _theirs("efficientnetv2_b0", include_top=False)
    _randomize(theirs)
    path = tmp_path / "efficientnetv2-b0_notop.h5"
    save_legacy_h5(theirs, path)
    ours = create_model("efficientnetv2_b0", 5, SIZE, weights=str(path))
    _assert_same(keras.Model(ours.inputs, ours.get_layer("top_activation").output), theirs)


def test_imagenet_offline_error_names_file(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(W.Twin, "origin", lambda self, f: "http://127.0.0.1:9/" + f)
    (tmp_path / "models").mkdir()
    with pytest.raises(W.WeightsNotFoundError, match=r"efficientnetv2-b0\.h5"):
        create_model("efficientnetv2_b0", input_shape=SIZE, weights="imagenet")


def test_imagenet_statistics():
    assert W.imagenet_stats("efficientnetv2_b0") == W.IMAGENET
    mean, std = W.imagenet_stats("efficientnetv2_l")
    x = np.array([0.0, 128.0, 255.0])
    np.testing.assert_allclose((x / 255 - mean[0]) / std[0], x / 128 - 1, atol=1e-6)


# --- family options -------------------------------------------------------------------

def test_family_options():
    model = create_model("efficientnetv2_b0", 3, SIZE, norm="group", attention=None,
                         drop_path=0.0, activation="relu6")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "GroupNorm" in kinds and "SqueezeExcite" not in kinds
    assert "StochasticDepth" not in kinds
    default = create_model("efficientnetv2_b0", 3, SIZE)
    kinds = {type(layer).__name__ for layer in default.layers}
    assert {"SqueezeExcite", "StochasticDepth", "BatchNormalization"} <= kinds
    with pytest.raises(ValueError, match="attention"):
        create_model("efficientnetv2_b0", 3, SIZE, attention="cbam")


# --- int8 -----------------------------------------------------------------------------

def test_int8_export_has_no_float_ops():
    # the same subprocess conversion and op audit as the other families
    from tests.int8_audit import audit
    result = audit("efficientnetv2_b0", 32)
    assert not result["float"], result
