"""Custom layers: .keras round trips (safe_mode) and numbers against references."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kerascls.layers import (
    AdaptiveAveragePooling2D,
    BatchChannelNormalization,
    GroupNorm,
    ImagePreprocessing,
    LayerNorm,
    LayerScale,
    LocalResponseNormalization,
    SqueezeExcite,
    StochasticDepth,
    WSConv2D,
    get_norm,
)
from kerascls.layers.pooling import adaptive_bins

RNG = np.random.default_rng(0)


def _x(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype("float32")


def _randomize(model: keras.Model) -> None:
    """Non-default weights (variances positive) so a load that drops one shows."""
    for v in model.weights:
        if "seed" not in v.path:
            v.assign(RNG.uniform(0.5, 1.5, size=v.shape).astype(v.dtype))


# name → (layer factory, input shape without batch)
LAYERS = {
    "lrn": (lambda: LocalResponseNormalization(size=5, alpha=0.1), (4, 4, 8)),
    "batch_channel": (lambda: BatchChannelNormalization(groups=4), (4, 4, 8)),
    "ws_conv": (lambda: WSConv2D(6, 3, padding="same"), (5, 5, 3)),
    "stochastic_depth": (lambda: StochasticDepth(0.3, seed=1), (4, 4, 8)),
    "layer_scale": (lambda: LayerScale(1e-3), (4, 4, 8)),
    "adaptive_pool_overlap": (lambda: AdaptiveAveragePooling2D(3), (5, 7, 4)),
    "adaptive_pool_repeat": (lambda: AdaptiveAveragePooling2D((7, 7)), (1, 2, 4)),
    "layer_norm": (lambda: LayerNorm(), (4, 4, 8)),
    "group_norm": (lambda: GroupNorm(groups=32), (4, 4, 8)),
    "instance_norm": (lambda: GroupNorm(groups=-1), (4, 4, 8)),
    "squeeze_excite": (lambda: SqueezeExcite(rd_channels=4), (4, 4, 8)),
    "preprocessing": (lambda: ImagePreprocessing(mean=(0.5, 0.4, 0.3)), (4, 4, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip_safe_mode(name, tmp_path):
    factory, shape = LAYERS[name]
    inputs = keras.Input(shape)
    model = keras.Model(inputs, factory()(inputs))
    _randomize(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _x(2, *shape, scale=50.0 if name == "preprocessing" else 1.0)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


def _lrn_reference(x, size, alpha, beta, bias):
    """The AlexNet paper's formula, one channel at a time."""
    out = np.empty_like(x)
    channels, half = x.shape[-1], size // 2
    for i in range(channels):
        window = x[..., max(0, i - half):min(channels, i + half + 1)]
        out[..., i] = x[..., i] / (bias + alpha * (window ** 2).sum(-1)) ** beta
    return out


@pytest.mark.parametrize("beta", [0.75, 0.5, 0.6])
def test_lrn_matches_paper_formula_and_tf_nn_lrn(beta):
    import tensorflow as tf
    x = _x(2, 3, 3, 11, scale=3.0)
    layer = LocalResponseNormalization(size=5, alpha=0.1, beta=beta, bias=2.0)
    got = np.asarray(layer(x))
    np.testing.assert_allclose(got, _lrn_reference(x, 5, 0.1, beta, 2.0), rtol=1e-5)
    tf_lrn = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=0.1,
                                                beta=beta).numpy()
    np.testing.assert_allclose(got, tf_lrn, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 0


def test_layer_norm_matches_keras_and_survives_float16():
    x = _x(2, 3, 3, 16, scale=4.0)
    ours, ref = LayerNorm(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
    ours.build(x.shape), ref.build(x.shape)
    gamma, beta = _x(16), _x(16)
    ours.set_weights([gamma, beta]), ref.set_weights([gamma, beta])
    np.testing.assert_allclose(ours(x), ref(x), atol=1e-5)
    # d*d of float16 activations near 300 overflows (65504) unless computed in float32.
    half = LayerNorm(dtype="mixed_float16")
    y = np.asarray(half(np.full((1, 2, 2, 4), 300.0, "float16") + np.arange(4) * 300))
    assert y.dtype == np.float16 and np.isfinite(y).all()


@pytest.mark.parametrize("groups,channels,resolved", [(4, 8, 4), (32, 48, 16), (-1, 6, 6)])
def test_group_norm_matches_keras_and_adapts_groups(groups, channels, resolved):
    x = _x(2, 3, 3, channels, scale=2.0)
    ours = GroupNorm(groups=groups, epsilon=1e-5)
    ref = keras.layers.GroupNormalization(groups=resolved, epsilon=1e-5)
    ours.build(x.shape), ref.build(x.shape)
    weights = [_x(channels), _x(channels)]
    ours.set_weights(weights), ref.set_weights(weights)
    np.testing.assert_allclose(ours(x), ref(x), atol=1e-5)
    assert ours.groups == resolved and ours.get_config()["groups"] == groups


def test_batch_channel_is_batch_norm_then_group_norm():
    x = _x(4, 3, 3, 8, scale=3.0) + 5.0
    layer = BatchChannelNormalization(groups=2, epsilon=1e-5)
    y = np.asarray(layer(x, training=True))
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    b = (x - mean) / np.sqrt(var + 1e-5)
    g = b.reshape(4, 3, 3, 2, 4)
    g = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, g.reshape(x.shape), atol=1e-4)
    moving_mean = layer.batch_norm.moving_mean.numpy()
    np.testing.assert_allclose(moving_mean, 0.01 * mean, rtol=1e-4)  # running stats update
    assert layer.count_params() == 8 * 4 + 2 * 2  # BN γ β μ σ² + per-group γ β
    assert isinstance(get_norm("batch_channel", name="n"), BatchChannelNormalization)


def test_ws_conv_standardizes_each_filter():
    layer = WSConv2D(5, 3, use_bias=False)
    x = _x(1, 6, 6, 4)
    y = np.asarray(layer(x))
    w = np.asarray(layer.standardized_kernel())
    np.testing.assert_allclose(w.mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(w.var((0, 1, 2)), 1.0, rtol=1e-3)
    plain = keras.layers.Conv2D(5, 3, use_bias=False)
    plain.build(x.shape)
    plain.set_weights([w])
    np.testing.assert_allclose(y, plain(x), atol=1e-4)
    assert isinstance(layer, keras.layers.Conv2D)


def test_stochastic_depth_drops_whole_samples():
    layer = StochasticDepth(0.5, seed=3)
    x = np.ones((64, 2, 2, 3), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample.min(1) == per_sample.max(1)).all()  # one decision per sample
    assert 10 < (per_sample[:, 0] == 0).sum() < 54


def test_layer_scale_starts_at_init_value():
    x = _x(2, 3, 3, 4)
    np.testing.assert_allclose(LayerScale(1e-2)(x), x * 1e-2, rtol=1e-6)


def _torch_adaptive_avg_pool(x, out_h, out_w):
    """nn.AdaptiveAvgPool2d, channels-last, straight from its definition."""
    h, w = x.shape[1:3]
    out = np.empty((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            out[:, i, j] = x[:, h0:h1, w0:w1].mean((1, 2))
    return out


@pytest.mark.parametrize("size,out", [((13, 13), (6, 6)), ((5, 7), (3, 3)), ((14, 14), (7, 7)),
                                      ((1, 1), (7, 7)), ((6, 6), (6, 6)), ((2, 3), (7, 6))])
def test_adaptive_pool_matches_torch_bins(size, out):
    x = _x(2, *size, 3)
    got = np.asarray(AdaptiveAveragePooling2D(out)(x))
    np.testing.assert_allclose(got, _torch_adaptive_avg_pool(x, *out), rtol=1e-5, atol=1e-6)
    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]  # torch's overlapping bins


def test_squeeze_excite_formula():
    layer = SqueezeExcite(rd_channels=2)
    x = _x(2, 3, 3, 4)
    y = np.asarray(layer(x))
    w1, b1, w2, b2 = layer.get_weights()
    s = np.maximum(x.mean((1, 2)) @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(y, x * (1 / (1 + np.exp(-s)))[:, None, None], rtol=1e-5)


@pytest.mark.parametrize("channels, rd", [(64, 8), (256, 16), (200, 16), (16, 8), (1000, 64)])
def test_squeeze_excite_bottleneck_width(channels, rd):
    # timm: make_divisible(C/16, 8, round_limit=0) — 64/16 = 4 rounds up to the minimum 8,
    # 200/16 = 12.5 to the nearest multiple 16, 1000/16 = 62.5 to 64
    layer = SqueezeExcite()
    layer.build((None, 4, 4, channels))
    w1, b1, w2, b2 = layer.get_weights()
    assert w1.shape == (channels, rd) and b1.shape == (rd,)
    assert w2.shape == (rd, channels) and b2.shape == (channels,)


JAX_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    assert keras.backend.backend() == "jax"
    from kerascls import layers as L
    x = keras.Input((6, 6, 8))
    y = L.WSConv2D(8, 3, padding="same")(x)
    y = L.BatchChannelNormalization(groups=4)(y)
    y = L.LocalResponseNormalization(beta=0.6)(y)
    y = L.GroupNorm(4)(y) + L.LayerNorm()(y)
    y = L.SqueezeExcite(rd_channels=4)(y)
    y = x + L.StochasticDepth(0.5, seed=0)(L.LayerScale(1e-2)(y))
    y = L.AdaptiveAveragePooling2D(4)(y)
    model = keras.Model(x, y)
    data = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    for training in (False, True):
        out = np.asarray(model(data, training=training))
        assert out.shape == (2, 4, 4, 8) and np.isfinite(out).all(), out
    print("ok")
""")


def test_layers_run_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_layers_convert_to_int8_tflite_without_float_ops():
    """One full-integer conversion of every norm/pool layer: no op may stay float."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = keras.Input((8, 8, 8), batch_size=1)
    y = WSConv2D(8, 3, padding="same")(x)
    y = BatchChannelNormalization(groups=4)(y)
    y = LocalResponseNormalization(alpha=0.1)(y)
    y = GroupNorm(4)(y) + LayerNorm()(y)
    y = AdaptiveAveragePooling2D(3)(y + LayerScale(0.1)(StochasticDepth(0.2)(y)))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([_x(1, 8, 8, 8)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = interpreter.get_tensor_details()
    float_ops = [op["op_name"] for op in interpreter._get_ops_details()
                 if any(tensors[i]["dtype"] == np.float32 for i in op["inputs"] if i >= 0)]
    assert not float_ops
