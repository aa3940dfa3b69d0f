"""EfficientNetV2 through the tfmot bridge: its tf_keras twin, and QAT and PTQ int8 bundles
with no float op.

B0 at 32×32, 3 rendered texture classes, a handful of images: the layers are what is
tested (FusedMBConv = Conv2D/BatchNorm/Activation, MBConv with its explicit stride-2
padding, SqueezeExcite, StochasticDepth, ImagePreprocessing), not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scenes import render_folder, texture

pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py
SIZE = 32


def test_tf_keras_twin_computes_what_the_model_does():
    """Every EfficientNetV2 layer has a tfmot-friendly tf_keras twin with equal outputs."""
    import kerascls
    from kerascls.tflite.tfmot.rebuild import rebuild
    model = kerascls.create_model("efficientnetv2_b0", 3, (SIZE, SIZE, 3))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"SqueezeExcite", "StochasticDepth", "ZeroPadding2D", "ImagePreprocessing"} <= kinds
    twin, custom = rebuild(model)
    x = np.stack([texture(c, SIZE, SIZE, i) for i, c in enumerate(("rings", "stripes_fine"))])
    x = x.astype("float32")
    np.testing.assert_allclose(twin(x).numpy(), np.asarray(model(x)), atol=1e-5)
    assert twin.count_params() == model.count_params()
    # the weightless layers tfmot does not know get an output-only quantize config
    assert sum(type(layer).__name__ == "Multiply" for layer in custom) == 16  # SE blocks


def test_layer_tfmot_cannot_take_is_named():
    """``norm=group`` (kerascls' GroupNorm) has no tfmot quantize config: one line naming it."""
    import kerascls
    from kerascls.tflite.tfmot import BridgeError
    from kerascls.tflite.tfmot.rebuild import rebuild
    model = kerascls.create_model("efficientnetv2_b0", 3, (SIZE, SIZE, 3), norm="group")
    with pytest.raises(BridgeError, match=r"^layer 'stem_bn' \(GroupNorm\) has no "
                                          r"tf_keras equivalent") as info:
        rebuild(model)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """efficientnetv2_b0 trained one epoch at 32×32 on 3×10 rendered images."""
    from tests.conftest import run_cli
    root = tmp_path_factory.mktemp("v2quant")
    data = render_folder(root / "images", 10)
    run = root / "run"
    run_cli("train", "--arch=efficientnetv2_b0", f"--data=folder:{data}", "--image_size=32",
            "--epochs=1", "--batch_size=8", "--val_fraction=0.2", "--test_fraction=0.2",
            f"--output_dir={run}", timeout=900)
    return run


def _check_bundle(bundle: Path) -> dict:
    """0 float ops in the report, and LiteRT runs the uint8 model to probabilities."""
    from ai_edge_litert.interpreter import Interpreter
    report = json.loads((bundle / "report.json").read_text())
    assert report["non_integer_ops"] == 0, report["op_audit"]
    it = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and tuple(inp["shape"]) == (1, SIZE, SIZE, 3)
    it.set_tensor(inp["index"], texture("rings", SIZE, SIZE, 7)[None])
    it.invoke()
    scale, zero = out["quantization"]
    probs = (it.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale
    assert probs.shape == (3,) and abs(probs.sum() - 1.0) < 0.05
    return report


@pytest.mark.slow  # with the run fixture: ~3 min on 2 loaded cores
def test_qat_bundle_has_no_float_ops(cli, run_dir, tmp_path):
    bundle = tmp_path / "qat"
    out = cli("export", f"--model={run_dir}", f"--output_dir={bundle}", "--qat",
              "--calibration_samples=16", "--parity_samples=6", "--finetune_samples=18",
              timeout=900).stdout
    assert "qat: 1 epochs on 18 images" in out
    report = _check_bundle(bundle)
    assert report["finetune"]["mode"] == "qat" and report["parity"]["images"] == 6


@pytest.mark.slow
def test_ptq_bundle_has_no_float_ops(cli, run_dir, tmp_path):
    bundle = tmp_path / "ptq"
    cli("export", f"--model={run_dir}", f"--output_dir={bundle}", "--calibration_samples=16",
        "--parity_samples=6", timeout=900)
    report = _check_bundle(bundle)
    assert "finetune" not in report and report["parity"]["top1_agreement"] >= 0.5
