"""Every registered architecture: builds small, trains, round-trips, counts as its reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerascls
from kerascls.errors import UserError
from kerascls.models import create_model, model_info, register_model, registry
from kerascls.summary import count_params
from tests.conftest import arch_params, giant, smallest_of_each_family

NAMES = kerascls.list_models()
SMALL = 32
CLASSES = 3
# The default run shrinks classifier widths that dwarf the rest (VGG's 25088×4096 Dense:
# a 500 MB .keras file per model); the code paths are the same. `-m slow` builds them as is.
SMALL_OVERRIDES = {"alexnet": {"fc_widths": (64, 64)}, "vgg": {"fc_widths": (64, 64)}}
# The default run builds one name per code path: the smallest of each family and of each
# structural option within it (VGG's BN and LRN, SE-ResNet, ResNet's bottleneck blocks from
# depth 50). Deeper and wider rows of the same builder (EfficientNet-B1…B7, ConvNeXt-S…)
# run with `-m slow` (CI): same code, 4–13 s each on 2 cores, ~190 s in all.
STRUCTURAL = {"vgg11_bn", "vgg11_lrn", "seresnet18", "resnet50"}
DEFAULT_BUILDS = smallest_of_each_family() | STRUCTURAL
# Reference counts: every name that has one; above COUNT_DEFAULT slow (weight initialization
# dominates; EffNetV2-M/L also build at 480 px).
COUNT_DEFAULT = 15_000_000
COUNTED = [n for n in NAMES if model_info(n).ref_params is not None]
DEFAULT_COUNTS = {n for n in COUNTED if model_info(n).ref_params <= COUNT_DEFAULT}


def overrides(name: str) -> dict:
    return SMALL_OVERRIDES.get(model_info(name).family, {})


def small_size(name: str) -> int:
    """32×32, or the smallest input a family declares (AlexNet's stride-4 stem needs 63)."""
    return max(SMALL, model_info(name).min_input_size)


def ref_classes(name: str) -> int:
    """Classes the reference count assumes (``ModelInfo.ref_classes``)."""
    return model_info(name).ref_classes


def _images(size: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")


pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py


@pytest.mark.parametrize("name", arch_params(NAMES, DEFAULT_BUILDS, giant))
def test_builds_trains_and_round_trips(name, tmp_path):
    size = small_size(name)
    model = create_model(name, CLASSES, (size, size, 3), **overrides(name))
    x = _images(size)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(
            np.array([0, 1]), model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads)
               if g is None or not np.isfinite(g).all()]
    assert not missing, f"no gradient reaches {missing}"

    # After the training step, so the loaded model sees the updated BN statistics too.
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, CLASSES) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(probs, np.asarray(loaded(x, training=False)))


@pytest.mark.parametrize("name", arch_params(COUNTED, DEFAULT_COUNTS))
def test_parameter_count_matches_reference(name):
    info = model_info(name)
    size = info.input_size
    model = create_model(name, ref_classes(name), (size, size, 3))
    # PyTorch's convention, as torchvision publishes: BN running statistics are buffers.
    ours, keras_count = count_params(model), model.count_params()
    assert ours == info.ref_params, (
        f"{name}: {ours:,} parameters (PyTorch convention, kerascls.summary.count_params; "
        f"Keras count_params with BN statistics: {keras_count:,}), reference "
        f"{info.ref_params:,} ({info.matches})")


def test_metadata_is_complete():
    for name in NAMES:
        info = model_info(name)
        assert info.family and info.paper and info.input_size > 0, name
    assert model_info("vgg16").matches == "torchvision.models.vgg16"


def test_duplicate_name_raises():
    register_model("_dup_test", family="test")(lambda x: x)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_model("_dup_test", family="test")(lambda x: x)
    finally:
        registry._REGISTRY.pop("_dup_test")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'vgg-16'.*did you mean.*vgg16"):
        create_model("vgg-16")


@pytest.mark.parametrize("task,logits,units,activation", [
    ("binary", False, 1, "sigmoid"), ("multilabel", False, 4, "sigmoid"),
    ("multiclass", True, 4, "linear"), ("multiclass", False, 4, "softmax")])
def test_heads(task, logits, units, activation):
    model = create_model("lenet", 4, (32, 32, 3), task=task, logits=logits)
    out = np.asarray(model(_images(32)))
    assert out.shape == (2, units) and np.isfinite(out).all()
    assert model.get_layer("predictions").get_config()["activation"] == activation
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    if activation == "sigmoid":
        assert ((out > 0) & (out < 1)).all()
    with pytest.raises(ValueError, match="task"):
        create_model("lenet", 4, (32, 32, 3), task="regression")


def test_family_options_norm_and_attention():
    model = create_model("vgg11", CLASSES, (SMALL, SMALL, 3), norm="group", attention="se",
                         fc_widths=(16,))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"GroupNorm", "SqueezeExcite"} <= kinds
    lrn = create_model("vgg11_lrn", CLASSES, (SMALL, SMALL, 3), fc_widths=(16,))
    assert lrn.get_layer("lrn").count_params() == 0


def test_unknown_family_option_names_it_and_lists_the_valid_ones():
    """Checked against the builder's signature before anything is built: one line, the
    valid keys named (resnet's options and the head's), not a TypeError from deep inside."""
    with pytest.raises(UserError, match=r"^model_args bogus, zz: not an option of resnet18; "
                                        r"valid keys: ") as err:
        create_model("resnet18", CLASSES, (SMALL, SMALL, 3), zz=2, bogus=1)
    listed = str(err.value).split("valid keys: ")[1].split(", ")
    assert {"attention", "drop_path", "norm", "stem_kind", "logits", "task"} <= set(listed)
    assert not {"x", "weights", "num_classes", "bogus"} & set(listed)
    assert "\n" not in str(err.value)
    model = create_model("small_cnn", CLASSES, (16, 16, 1), widths=(4, 8))
    assert model.get_layer("predictions").output.shape == (None, CLASSES)


JAX_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, keras
    assert keras.backend.backend() == "jax"
    from kerascls.models import create_model, model_info
    failures = []
    for name, options in json.loads(sys.argv[1]).items():
        size = max(32, model_info(name).min_input_size)
        try:
            model = create_model(name, 3, (size, size, 3), **options)
            x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
            out = np.asarray(model(x, training=False))
            assert out.shape == (2, 3) and np.isfinite(out).all(), out
        except Exception as exc:  # report every failing name, not only the first
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        keras.backend.clear_session()
    print("\\n".join(failures) or "ok")
    sys.exit(1 if failures else 0)
""")


def _run_under_jax(models: dict[str, dict]) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(models)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow  # 76 s; default: test_layers_run_under_jax
def test_one_model_per_family_builds_under_jax():
    """The smallest name of every family, small overrides applied: fast, every builder."""
    first = {}
    for name in NAMES:
        family = model_info(name).family
        if family not in first or (model_info(name).ref_params or 0) < (
                model_info(first[family]).ref_params or 0):
            first[family] = name
    _run_under_jax({n: overrides(n) for n in first.values()})


@pytest.mark.slow
def test_every_model_builds_under_jax():
    _run_under_jax({name: {} for name in NAMES})


def test_load_model_registers_the_custom_layers(tmp_path):
    """``kerascls.load_model`` loads a saved model in a fresh process, where plain
    ``keras.saving.load_model`` cannot find ImagePreprocessing and friends."""
    import subprocess
    import sys

    import numpy as np

    import kerascls
    model = kerascls.create_model("mobilenetv3_small", 3, (32, 32, 3))
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    code = ("import sys, numpy as np, kerascls; m = kerascls.load_model(sys.argv[1]); "
            "d = sys.argv[2]; print(np.abs(np.asarray(m(np.load(d + '/x.npy'))) "
            "- np.load(d + '/y.npy')).max())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5
