"""Model zoo II: ConvNeXt V1/V2, EfficientNet (+Lite), MobileNetV3, GRN, pretrained weights.

Weight compatibility is proven offline: a keras.applications twin built with
``weights=None`` and given random non-default weights (BN statistics too) is saved —
as a Keras 3 ``.weights.h5``, as a ``.keras``, and as the legacy HDF5 that Keras'
official ImageNet files use, under the exact file name keras.applications caches —
and ours, loaded from it, must give the same logits (1e-5). Small inputs keep it fast.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from kerascls.layers import GlobalResponseNorm
from kerascls.models import create_model, model_info
from kerascls.models import weights as W
from kerascls.summary import count_params

SIZE = (32, 32, 3)
# preprocessing the twin applies with weights=None: EfficientNet's Normalization is then
# the identity after /255, MobileNetV3 rescales to [-1, 1], ConvNeXt/ResNet ImageNet.
TWIN_STATS = {"efficientnet": ((0.0,) * 3, (1.0,) * 3), "mobilenetv3": W.INCEPTION}
FAST = ["convnext_tiny", "efficientnet_b0", "mobilenetv3_small", "mobilenetv3_large"]


pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Non-default values everywhere (BN statistics too) so a misordered copy shows."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "normalization" in v.path and v.name in ("mean", "variance", "count"):
            continue  # EfficientNet's input Normalization: keep it the identity
        value = rng.normal(0.0, 0.05 if len(v.shape) > 1 else 0.2, size=v.shape)
        if "variance" in v.name:
            value = 1.0 + np.abs(value)
        v.assign(value.astype("float32"))


def _twin(name: str, include_top: bool = True, seed: int = 0) -> keras.Model:
    model = getattr(keras.applications, W.TWINS[name].app)(
        weights=None, include_top=include_top, input_shape=SIZE, classifier_activation=None)
    _randomize(model, seed)
    return model


def _ours(name: str, num_classes: int = 1000, **kw) -> keras.Model:
    mean, std = TWIN_STATS.get(model_info(name).family, (None, None))
    if name.startswith("resnet"):
        kw.setdefault("preprocess", False)
    return create_model(name, num_classes, SIZE, logits=True, mean=mean, std=std, **kw)


def _images(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, *SIZE)).astype("float32")


def _assert_same(ours: keras.Model, theirs: keras.Model) -> None:
    x = _images()
    a = np.asarray(theirs(x, training=False))
    b = np.asarray(ours(x, training=False))
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 1e-5 * max(1.0, np.abs(a).max())


def _save_legacy_h5(model: keras.Model, path) -> None:
    """The format of Keras' official ImageNet files (``layer_names`` + per-layer groups)."""
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


# --- parameter counts: both conventions ---------------------------------------------

@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b1",
                                  pytest.param("efficientnet_b7", marks=pytest.mark.slow)])
def test_efficientnet_counts_both_conventions(name):
    size = model_info(name).input_size
    model = create_model(name, input_shape=(size, size, 3))
    assert count_params(model) == model_info(name).ref_params  # PyTorch / trainable
    assert model.count_params() + 7 == model_info(name).keras_params      # + keras' Normalization


@pytest.mark.parametrize("name", ["mobilenetv3_small", "mobilenetv3_large"])
def test_mobilenetv3_keras_count(name):
    ours = create_model(name)
    theirs = getattr(keras.applications, W.TWINS[name].app)(weights=None)
    assert ours.count_params() == theirs.count_params()  # 2,554,968 / 5,507,432


# --- weight compatibility -----------------------------------------------------------

def _roundtrip(name: str, tmp_path, fmt: str) -> None:
    theirs = _twin(name)
    path = tmp_path / f"{name}{fmt}"
    if fmt == ".h5":
        _save_legacy_h5(theirs, path)
    elif fmt == ".keras":
        theirs.save(path)
    else:
        theirs.save_weights(path)
    _assert_same(_ours(name, weights=str(path)), theirs)


@pytest.mark.parametrize("name", FAST)
def test_twin_weights_file_loads(name, tmp_path):
    _roundtrip(name, tmp_path, ".weights.h5")


@pytest.mark.parametrize("fmt", [".h5", ".keras"])
def test_twin_legacy_h5_and_keras_files_load(fmt, tmp_path):
    _roundtrip("convnext_tiny", tmp_path, fmt)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(W.TWINS))
@pytest.mark.parametrize("fmt", [".weights.h5", ".h5"])
def test_every_twin_loads(name, fmt, tmp_path):
    _roundtrip(name, tmp_path, fmt)


def test_own_weights_file_with_other_head(tmp_path):
    """Our own .weights.h5 (10 classes) into a 3-class model: backbone only."""
    src = create_model("efficientnet_lite0", 10, SIZE)
    _randomize(src)
    src.save_weights(tmp_path / "lite.weights.h5")
    dst = create_model("efficientnet_lite0", 3, SIZE, weights=str(tmp_path / "lite.weights.h5"))
    for a, b in zip(src.get_layer("top_bn").weights, dst.get_layer("top_bn").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert dst.get_layer("head").kernel.shape == (1280, 3)


# --- imagenet through keras' cache --------------------------------------------------

@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """An empty KERAS_HOME: ``~/.keras/models`` as keras.applications uses it."""
    monkeypatch.setattr(W, "keras_home", lambda: str(tmp_path))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_imagenet_offline_error_names_file_and_place(keras_cache):
    with pytest.raises(W.WeightsNotFoundError, match=r"convnext_tiny\.h5.*" + str(keras_cache)):
        create_model("convnext_tiny", input_shape=SIZE, weights="imagenet")


@pytest.mark.parametrize("name", ["convnext_tiny", "mobilenetv3_small"])
def test_imagenet_from_cached_legacy_file(name, keras_cache):
    theirs = _twin(name)
    _save_legacy_h5(theirs, keras_cache / W.TWINS[name].files[0])
    with pytest.warns(UserWarning, match="hash"):
        ours = create_model(name, input_shape=SIZE, logits=True, weights="imagenet")
    _assert_same(ours, theirs)  # and the imagenet preprocessing is the twin's


def test_imagenet_notop_file_for_k_class_model(keras_cache):
    theirs = _twin("efficientnet_b0", include_top=False)
    _save_legacy_h5(theirs, keras_cache / "efficientnetb0_notop.h5")
    with pytest.warns(UserWarning, match="hash"):
        ours = create_model("efficientnet_b0", 5, SIZE, weights="imagenet", mean=(0.0,) * 3,
                            std=(1.0,) * 3)
    features = keras.Model(ours.inputs, ours.get_layer("top_activation").output)
    _assert_same(features, theirs)


def test_resnet50_imagenet_flips_bgr_stem(keras_cache):
    theirs = _twin("resnet50")
    _save_legacy_h5(theirs, keras_cache / W.TWINS["resnet50"].files[0])
    with pytest.warns(UserWarning, match="hash"):
        ours = create_model("resnet50", input_shape=SIZE, logits=True, weights="imagenet")
    x = _images()
    caffe = x[..., ::-1] - np.array([103.939, 116.779, 123.68], "float32")
    a = np.asarray(theirs(caffe, training=False))
    b = np.asarray(ours(x, training=False))
    assert np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(a).max())


def test_no_imagenet_weights_for_v2():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model("convnextv2_atto", input_shape=SIZE, weights="imagenet")


# --- layers and options -------------------------------------------------------------

def test_grn_matches_reference_and_serializes():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 8)).astype("float32")
    layer = GlobalResponseNorm()
    np.testing.assert_allclose(layer(x), x, atol=1e-6)  # zero-initialized: identity
    layer.gamma.assign(np.linspace(-1, 1, 8).astype("float32"))
    layer.beta.assign(np.full(8, 0.5, "float32"))
    gx = np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True))
    ref = layer.gamma.numpy() * (x * gx / (gx.mean(-1, keepdims=True) + 1e-6)) + 0.5 + x
    np.testing.assert_allclose(layer(x), ref, rtol=1e-5, atol=1e-5)
    clone = GlobalResponseNorm.from_config(layer.get_config())
    assert clone.epsilon == layer.epsilon


@pytest.mark.parametrize("name,opts,kind", [
    ("convnextv2_atto", {"attention": "se", "drop_path": 0.1}, "SqueezeExcite"),
    ("efficientnet_lite0", {"attention": "se", "norm": "group"}, "GroupNorm"),
    ("mobilenetv3_small", {"attention": None, "drop_path": 0.1}, "StochasticDepth"),
])
def test_family_options(name, opts, kind):
    model = create_model(name, 3, SIZE, **opts)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kind in kinds
    if opts.get("attention") is None:
        assert "SqueezeExcite" not in kinds
    assert np.isfinite(np.asarray(model(_images(), training=True))).all()


@pytest.mark.parametrize("include_top", [True, False])
def test_mobilenetv3_k_class_keeps_conv_2_from_top_files_only(include_top, tmp_path):
    theirs = _twin("mobilenetv3_large", include_top=include_top)
    theirs.save_weights(tmp_path / "m.weights.h5")
    ours = _ours("mobilenetv3_large", 5)
    fresh = ours.get_layer("conv_2").kernel.numpy()
    W.load_path(ours, "mobilenetv3_large", str(tmp_path / "m.weights.h5"))
    kernel = ours.get_layer("conv_2").kernel.numpy()
    if include_top:
        np.testing.assert_array_equal(kernel, theirs.get_layer("conv_2").kernel.numpy()[0, 0])
    else:
        np.testing.assert_array_equal(kernel, fresh)
    if not include_top:  # the notop twin ends at conv_1's activation: pool it and compare
        features = keras.Model(ours.inputs, ours.get_layer("avg_pool").output)
        a = np.asarray(theirs(_images(), training=False)).mean(axis=(1, 2))
        b = np.asarray(features(_images(), training=False))
        np.testing.assert_allclose(b, a, atol=1e-5)
