"""ResNet family: keras.applications weight compatibility and the family's options."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascls.models import create_model, list_models, model_info
from kerascls.models.blocks import drop_path_rates
from kerascls.models.weights import load_keras_applications_weights

SIZE = (64, 64, 3)
APPS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}


def _weighted(model: keras.Model) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """(class, name, weight shapes) of every layer that holds weights, in model order."""
    return [(type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers if layer.weights]


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Non-default values everywhere (BN statistics too) so a misordered load shows."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        scale = 0.05 if len(v.shape) > 1 else 0.2
        value = rng.normal(0.0, scale, size=v.shape)
        if "variance" in v.path:
            value = 1.0 + np.abs(value)
        v.assign(value.astype("float32"))


def _features(model: keras.Model) -> keras.Model:
    """The model up to global pooling and to the output, so the head is checked unsoftened."""
    return keras.Model(model.inputs, [model.get_layer("avg_pool").output, model.outputs[0]])


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """keras.applications ResNet50 with random non-default weights, and its weights file."""
    theirs = keras.applications.ResNet50(weights=None, input_shape=SIZE)
    _randomize(theirs)
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    theirs.save_weights(path)
    return theirs, path


@pytest.mark.parametrize("loader", ["ours", "keras"])
def test_resnet50_loads_keras_applications_weights(resnet50_file, loader):
    theirs, path = resnet50_file
    ours = create_model("resnet50", input_shape=SIZE, preprocess=False)
    if loader == "ours":
        load_keras_applications_weights(ours, path)
    else:  # same class order, so Keras' own loader lines the entries up too
        ours.load_weights(path)

    x = np.random.default_rng(1).normal(0, 50, size=(2, *SIZE)).astype("float32")
    their_feat, their_out = _features(theirs).predict(x, verbose=0)
    our_feat, our_out = _features(ours).predict(x, verbose=0)
    scale = max(1.0, float(np.abs(their_feat).max()))
    assert np.abs(our_feat - their_feat).max() / scale < 1e-5
    assert np.abs(our_out - their_out).max() < 1e-5


def test_fine_tuning_head_keeps_fresh_weights(resnet50_file):
    theirs, path = resnet50_file
    ours = create_model("resnet50", num_classes=10, input_shape=SIZE, preprocess=False)
    head = [w.numpy() for w in ours.get_layer("head").weights]
    load_keras_applications_weights(ours, path)
    for name in ("conv1_conv", "conv5_block3_3_bn"):
        for a, b in zip(ours.get_layer(name).weights, theirs.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(ours.get_layer("head").weights, head):
        np.testing.assert_array_equal(a.numpy(), b)


def test_mismatched_body_raises(resnet50_file):
    _, path = resnet50_file
    ours = create_model("resnet101", input_shape=SIZE, preprocess=False)
    with pytest.raises(ValueError, match="needs"):
        load_keras_applications_weights(ours, path)


@pytest.mark.parametrize("name", sorted(APPS))
def test_weighted_layers_match_keras_applications(name):
    """Same classes, names and shapes in the same order: what .weights.h5 matching needs."""
    theirs = getattr(keras.applications, APPS[name])(weights=None, input_shape=SIZE)
    ours = create_model(name, input_shape=SIZE, preprocess=False)
    their_layers, our_layers = _weighted(theirs), _weighted(ours)
    assert our_layers[-1][1] == "head" and their_layers[-1][1] == "predictions"
    assert [(c, s) for c, _, s in our_layers] == [(c, s) for c, _, s in their_layers]
    assert [n for _, n, _ in our_layers[:-1]] == [n for _, n, _ in their_layers[:-1]]


@pytest.mark.parametrize("norm", ["group", "none"])
def test_norm_option_builds_and_runs(norm):
    model = create_model("resnet18", num_classes=3, input_shape=(32, 32, 3), norm=norm)
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ("BatchNormalization" in kinds) is False


def test_seresnet_is_resnet_with_se():
    model = create_model("seresnet18", num_classes=3, input_shape=(32, 32, 3))
    se = [layer.name for layer in model.layers if type(layer).__name__ == "SqueezeExcite"]
    assert len(se) == 8 and se[0] == "conv2_block1_se"


def test_drop_path_rates_ramp_linearly():
    assert drop_path_rates(0.0, 4) == [0.0, 0.0, 0.0, 0.0]
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_drop_path_zero_adds_no_layer():
    model = create_model("resnet18", num_classes=3, input_shape=(32, 32, 3))
    assert not [layer for layer in model.layers if layer.name.endswith("_drop")]


def test_unknown_depth_raises():
    from kerascls.models.resnet import resnet
    with pytest.raises(ValueError, match="depth"):
        resnet(keras.Input((32, 32, 3)), depth=42)


def test_drop_path_inserts_stochastic_depth():
    model = create_model("resnet18", num_classes=3, input_shape=(32, 32, 3), drop_path=0.1)
    drops = [layer for layer in model.layers if type(layer).__name__ == "StochasticDepth"]
    assert len(drops) == 7  # the first of 8 blocks gets rate 0 and no layer
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert np.isfinite(keras.ops.convert_to_numpy(model(x, training=True))).all()


KERAS_COUNTS = {n: model_info(n).keras_params for n in list_models("resnet")
                if model_info(n).keras_params}


@pytest.mark.parametrize("name", sorted(KERAS_COUNTS))
def test_keras_count_equals_keras_applications(name):
    """Keras' count_params (BN statistics included) is keras.applications' own number."""
    assert create_model(name).count_params() == KERAS_COUNTS[name]


def test_small_stem_keeps_resolution_for_tiny_images():
    """The CIFAR-style stem: 32×32 reaches the first stage at 32×32, not 8×8."""
    model = create_model("resnet18", num_classes=10, input_shape=(32, 32, 3), stem_kind="small")
    assert model.get_layer("conv2_block1_out").output.shape[1:3] == (32, 32)
    assert model.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 10)
    with pytest.raises(ValueError, match="stem must be"):
        create_model("resnet18", input_shape=(32, 32, 3), stem_kind="cifar10")
