"""TFLite export: bundles that LiteRT runs, the op audit, parity, atomic output, QAT, pruning.

Every conversion runs in a ``kerascls export`` subprocess (the converter leaks memory);
QAT and pruning add the tfmot bridge's own subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kerascls.data import fashion_mnist as fm
from kerascls.tflite import export as E
from tests.conftest import needs_debian

SMALL = ["--calibration_samples=64", "--parity_samples=300"]
FINETUNE = [*SMALL, "--finetune_samples=512"]


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory) -> Path:
    """A lenet trained one epoch on 3,000 Fashion-MNIST images (well above chance)."""
    import keras

    import kerascls
    x, y = fm.load_fashion_mnist("train")
    keras.utils.set_random_seed(0)
    model = kerascls.create_model("lenet", 10, (28, 28, 1))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:3000].astype("float32"), y[:3000], batch_size=64, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("lenet") / "lenet.keras"
    model.save(path)
    return path


def _layernorm_file(folder: Path) -> Path:
    """A model whose LayerNormalization leaves a float NEG op in int8 (kerascls/layers/norm.py)."""
    import keras

    from kerascls.layers.preprocessing import ImagePreprocessing
    inputs = keras.Input((28, 28, 1), name="image")
    x = ImagePreprocessing(name="preprocess")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.LayerNormalization(name="my_layer_norm")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    path = folder / "ln.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def _load_bundle(bundle: Path) -> tuple[dict, dict]:
    return (json.loads((bundle / "model.json").read_text()),
            json.loads((bundle / "report.json").read_text()))


def _run_litert(bundle: Path, images: np.ndarray) -> np.ndarray:
    """Top-1 of each raw uint8 image through ai_edge_litert, as a device would."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and tuple(inp["shape"]) == (1, 28, 28, 1)
    assert inp["quantization"] == (1.0, 0)  # raw pixels go in unchanged
    tops = []
    for img in images:
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        tops.append(int(it.get_tensor(out["index"])[0].argmax()))
    return np.array(tops)


def _check_int8_bundle(bundle: Path, min_accuracy: float = 0.5) -> dict:
    """The four files, a pure-integer model that LiteRT runs, accuracy above chance."""
    assert sorted(p.name for p in bundle.iterdir()) == [
        "labels.txt", "model.json", "model.tflite", "report.json"]
    meta, report = _load_bundle(bundle)
    assert meta["quantization"] == "int8" and meta["input"]["dtype"] == "uint8"
    assert report["non_integer_ops"] == 0
    x, y = fm.load_fashion_mnist("test")
    assert np.mean(_run_litert(bundle, x[:200]) == y[:200]) > min_accuracy
    return report


@needs_debian
def test_int8_bundle_contract_parity_and_litert(cli, lenet_file, tmp_path):
    bundle = tmp_path / "bundle"
    cli("export", f"--model={lenet_file}", "--data=fashion_mnist", f"--output_dir={bundle}",
        *SMALL)
    report = _check_int8_bundle(bundle)
    meta, _ = _load_bundle(bundle)
    assert meta["format"] == "kerascls-bundle" and meta["format_version"] == 1
    assert meta["input"] == {"height": 28, "width": 28, "channels": 1, "channel_order": "RGB",
                             "dtype": "uint8", "value_range": [0, 255], "resize": "stretch",
                             "interpolation": "bilinear",
                             "video": {"frame_every": 1.0, "max_frames": 32}}
    assert meta["output"] == {"activation": "softmax"} and len(meta["class_names"]) == 10
    assert (bundle / "labels.txt").read_text().splitlines() == meta["class_names"]
    p = report["parity"]
    assert p["images"] == 300 and p["top1_agreement"] >= 0.97
    assert abs(p["keras_accuracy"] - p["tflite_accuracy"]) <= 0.03
    assert 0.15 < report["size_ratio"] < 0.4 and report["latency_ms"] > 0
    assert {"op", "where", "layer", "float", "flex"} <= set(report["op_audit"][0])
    assert {r["layer"] for r in report["op_audit"]} >= {"conv1_conv", "fc1", "head"}


@needs_debian
def test_mixed_precision_run_exports_int8_at_float32(cli, tmp_path):
    """A model trained under mixed_bfloat16 saves bf16 compute policies, which TFLite cannot
    convert (tf.Relu on bf16, casts): export and evaluate load it at float32, same weights."""
    import keras

    import kerascls
    from kerascls.runs import load_run
    x, y = fm.load_fashion_mnist("train")
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = kerascls.create_model("small_cnn", 10, (28, 28, 1), plain_stages=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:3000].astype("float32"), y[:3000], batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "bf16.keras"
    model.save(path)
    loaded = load_run(path).model
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {"float32"}
    probe = x[3000:3064].astype("float32")
    assert np.abs(loaded.predict(probe, verbose=0) - model.predict(probe, verbose=0)).max() < 0.05
    bundle = tmp_path / "bundle"
    cli("export", f"--model={path}", "--data=fashion_mnist", f"--output_dir={bundle}", *SMALL)
    report = _check_int8_bundle(bundle)
    assert report["parity"]["top1_agreement"] >= 0.97


FLOAT_OP_SCRIPT = """
import json, sys
from kerascls.tflite.export import ExportError, export_bundle
model, bundle = sys.argv[1:3]
kw = dict(data="fashion_mnist", calibration_samples=64, parity_samples=100)
try:
    export_bundle(model, bundle, **kw)
except ExportError as e:
    print("FAILED:", e)
print("EXISTS:", __import__("os").path.exists(bundle))
export_bundle(model, bundle, allow_float_ops=True, **kw)
"""


@needs_debian
def test_float_op_fails_int8_naming_the_layer(tmp_path):
    import subprocess
    import sys
    model, bundle = _layernorm_file(tmp_path), tmp_path / "bundle"
    out = subprocess.run([sys.executable, "-c", FLOAT_OP_SCRIPT, str(model), str(bundle)],
                         capture_output=True, text=True, check=True).stdout
    assert "FAILED: int8 export keeps" in out and "in layers my_layer_norm:" in out
    assert "NEG in layer my_layer_norm" in out and "--allow_float_ops" in out
    assert "EXISTS: False" in out  # the failed export wrote nothing
    _, report = _load_bundle(bundle)
    floats = [r for r in report["op_audit"] if r["float"]]
    assert report["non_integer_ops"] == len(floats) > 0
    assert {r["layer"] for r in floats if r["op"] not in ("QUANTIZE", "DEQUANTIZE")} == {
        "my_layer_norm"}


def test_owning_layer_prefers_the_longest_name():
    names = ["block1", "block1_ln", "head"]
    assert E.owning_layer("m_1/block1_ln_1/sub;m_1/block1/x", names) == "block1_ln"
    assert E.owning_layer("m/quant_head/MatMul", names) == "head"
    assert E.owning_layer("StatefulPartitionedCall:0", names) == ""


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_old_bundle_and_no_temp(tmp_path, monkeypatch, interrupt):
    bundle = tmp_path / "bundle"
    meta = {"class_names": ["a", "b"]}
    E._write_bundle(bundle, b"old", meta, {"run": 1})
    real = Path.write_text

    def dying(self, text, *a, **k):
        if self.name == "report.json":
            raise interrupt("killed while writing")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", dying)
    with pytest.raises(interrupt):
        E._write_bundle(bundle, b"new", meta, {"run": 2})
    monkeypatch.undo()
    assert (bundle / "model.tflite").read_bytes() == b"old"
    assert json.loads((bundle / "report.json").read_text()) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_export_flags_reject_bad_combinations():
    with pytest.raises(ValueError, match="not both"):
        E.finetune_plan("int8", "fashion_mnist", 1, 0.5, 2)
    with pytest.raises(ValueError, match="int8 only"):
        E.finetune_plan("float16", "fashion_mnist", 1, 0.0, 2)
    assert E.finetune_plan("int8", "d", 0, 0.5, 3) == {"mode": "prune", "epochs": 3,
                                                         "sparsity": 0.5}


@pytest.mark.parametrize("arch, size, kwargs", [
    ("mobilenetv3_small", 32, {}), ("efficientnet_lite0", 32, {"drop_path": 0.1}),
    ("seresnet18", 32, {}), ("vgg11_bn", 32, {"fc_widths": (16,)})])
def test_rebuild_as_tf_keras_matches(arch, size, kwargs):
    """The tf_keras twin the bridge quantizes computes what the Keras 3 model does."""
    import kerascls
    from kerascls.tflite.tfmot_bridge import rebuild
    model = kerascls.create_model(arch, 10, (size, size, 3), **kwargs)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    twin, _ = rebuild(model)
    assert twin.count_params() >= model.count_params() - 10  # SE biases, same kernels
    np.testing.assert_allclose(twin(x).numpy(), np.asarray(model(x)), atol=1e-5)


def test_unsupported_layer_is_named():
    import keras

    from kerascls.layers import LocalResponseNormalization
    from kerascls.tflite.tfmot_bridge import BridgeError, rebuild
    inputs = keras.Input((8, 8, 3))
    x = LocalResponseNormalization(name="my_lrn")(inputs)
    with pytest.raises(BridgeError, match="'my_lrn' \\(LocalResponseNormalization\\)"):
        rebuild(keras.Model(inputs, keras.layers.Flatten()(x)))


@needs_debian
@pytest.mark.slow
def test_qat_export_is_a_valid_int8_bundle(cli, lenet_file, tmp_path):
    bundle = tmp_path / "qat"
    out = cli("export", f"--model={lenet_file}", "--data=fashion_mnist",
              f"--output_dir={bundle}", "--qat", *FINETUNE).stdout
    assert "qat: 1 epochs on 512 images" in out
    report = _check_int8_bundle(bundle)
    assert report["finetune"]["mode"] == "qat" and report["parity"]["tflite_accuracy"] > 0.5


@needs_debian
@pytest.mark.slow
def test_pruned_export_reports_its_sparsity(cli, lenet_file, tmp_path):
    bundle = tmp_path / "pruned"
    cli("export", f"--model={lenet_file}", "--data=fashion_mnist", f"--output_dir={bundle}",
        "--prune_sparsity=0.5", "--prune_epochs=1", *FINETUNE)
    report = _check_int8_bundle(bundle)
    f = report["finetune"]
    assert f["mode"] == "prune" and f["target_sparsity"] == 0.5
    assert 0.45 <= f["kernel_sparsity"] <= 0.55


@needs_debian
@pytest.mark.slow
def test_train_qat_ends_with_a_qat_bundle(cli, tmp_path):
    run = tmp_path / "run"
    out = cli("train", "--arch=lenet", "--epochs=1", "--max_train_images=2000",
              f"--output_dir={run}", "--qat", timeout=900).stdout
    assert "qat: 1 epochs on" in out and f"bundle: {run / 'bundle'}" in out
    report = _check_int8_bundle(run / "bundle")
    assert report["finetune"]["mode"] == "qat"


def test_train_refuses_qat_with_pruning_before_training(cli, tmp_path):
    proc = cli("train", "--arch=lenet", "--qat", "--prune_sparsity=0.5",
               f"--output_dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 1 and "not both" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_int8_hard_swish_is_hard_swish_and_swap_restores():
    import keras

    import kerascls
    from kerascls.tflite.convert import int8_friendly_activations, int8_hard_swish
    x = np.linspace(-8, 8, 1001).astype("float32")
    np.testing.assert_allclose(np.asarray(int8_hard_swish(x)),
                               np.asarray(keras.activations.hard_swish(x)), atol=1e-6)
    model = kerascls.create_model("mobilenetv3_small", 10, (32, 32, 3))
    acts = {layer.name: layer.activation for layer in model._flatten_layers()
            if hasattr(layer, "activation")}
    with int8_friendly_activations(model) as swapped:
        assert swapped == 19  # stem, 8 hard-swish blocks × 2, conv_1, conv_2 (a Dense)
        assert model.get_layer("conv_2").activation is int8_hard_swish
    assert acts == {layer.name: layer.activation for layer in model._flatten_layers()
                    if hasattr(layer, "activation")}


INT8_MNV3_SCRIPT = """
import json, sys, numpy as np, keras
import kerascls
from kerascls.tflite import audit as A
from kerascls.tflite.convert import convert
size = 48
keras.utils.set_random_seed(0)
model = kerascls.create_model("mobilenetv3_small", 10, (size, size, 3), logits=True)
# rendered images: smooth colour ramps and blobs, so BatchNorm statistics (set by
# training-mode passes) give the activation ranges of a working network
yy, xx = np.mgrid[0:size, 0:size] / size
rng = np.random.default_rng(0)
imgs = np.stack([np.stack([np.sin(6 * (a * xx + b * yy) + c) for a, b, c in
                           rng.uniform(-1, 1, (3, 3))], -1) for _ in range(64)])
imgs = ((imgs + 1) * 127.5).astype("float32")
for _ in range(10):
    model(imgs[:32], training=True)
out = {}
for q in ("int8", "none"):
    blob = convert(model, q, list(imgs[32:48]))
    out[q] = {"ops": sorted({r["op"] for r in A.op_audit(blob)}),
              "xnnpack": A.undelegated_ops(blob)}
    if q == "int8":
        it = A.interpreter(blob)
        logits = A.run_batch(it, imgs[48:])
        ref = np.asarray(model(imgs[48:]))
        out[q]["corr"] = float(np.corrcoef(logits.ravel(), ref.ravel())[0, 1])
print(json.dumps(out))
"""


def test_int8_mobilenetv3_runs_in_one_xnnpack_partition():
    """int8 hard-swish is spelled so XNNPACK takes the whole graph; float keeps the fused op."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", INT8_MNV3_SCRIPT], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "HARD_SWISH" not in out["int8"]["ops"] and "HARD_SWISH" in out["none"]["ops"]
    assert out["int8"]["xnnpack"]["partitions"] == 1, out["int8"]
    assert set(out["int8"]["xnnpack"]["ops"]) <= {"QUANTIZE", "SOFTMAX"}, out["int8"]
    assert out["none"]["xnnpack"] == {"partitions": 1, "ops": {}}
    assert out["int8"]["corr"] > 0.95, out["int8"]  # int8 logits track the float ones
