"""The design card's own command, for every architecture: ``kerascls train --arch NAME`` on
the default data (Fashion-MNIST, 28×28), then ``kerascls export --tflite``.

Each name trains in this process through the CLI's own flag definitions and command
function (no TensorFlow start-up per name); refusals go through a real subprocess, where
the one-line error and the exit status are what a user sees. Minimum input sizes are
checked against Keras itself: the builder (not ``create_model``, which refuses below the
minimum) is built at the declared minimum and one pixel less.
"""

from __future__ import annotations

import gc
import json
import os
import shutil

import keras
import numpy as np
import pytest
from absl import flags

import kerascls
from kerascls import cli
from kerascls.data import fashion_mnist as fm
from kerascls.layers import AdaptiveAveragePooling2D
from kerascls.models import model_info
from tests.conftest import arch_params, giant, smallest_of_each_family

NAMES = kerascls.list_models()
NATIVE = 28  # Fashion-MNIST's side
# What each run costs decides where it runs. The train runs use --run_eagerly: tracing the
# train step, not the one step itself, dominated a smoke run (measured on the shared 2-core
# box, load ~12, one step of 8 images, wall / CPU seconds):
#   graph: vgg16 87 / 25, convnext_tiny 172 / 49, efficientnetv2_s 468 / 139
#   eager: vgg16 58, convnext_tiny 43, efficientnetv2_s 37 (the three: 34 s user CPU in all,
#          TF import included); saving .keras is then the biggest part for vgg16 (16 s)
# By default: the small CNNs. `-m slow` (CI): every other name, in this process, one eager
# step each (the giants also marked `giant`: CI runs those alone); the ones under
# EXPORT_PARAMS reference parameters go on to an int8 bundle. The minimum-size builds
# below still run one name per family unless KERASCLS_ALL_ARCHS=1.
ALL_ARCHS = bool(os.environ.get("KERASCLS_ALL_ARCHS"))


DEFAULT = {"lenet", "small_cnn"}
EXPORT_PARAMS = 4_000_000  # lenet, small_cnn, mobilenetv3_small, convnextv2_atto
# Widths that change no spatial size, for the shape-only builds of the size check.
SHAPE_OVERRIDES = {"alexnet": {"fc_widths": (8,)}, "vgg": {"fc_widths": (8,)}}

needs_fashion_mnist = pytest.mark.skipif(
    not (fm.DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"dataset-fashion-mnist not installed ({fm.DEBIAN_DIR})")


def params(names, default: set[str], slow: set[str]) -> list:
    """Names as pytest params: ``default`` by default, ``slow`` with `-m slow`, every
    other name only with KERASCLS_ALL_ARCHS=1 (the minimum-size builds)."""
    every = pytest.mark.skipif(not ALL_ARCHS, reason="one name per family runs; "
                               "KERASCLS_ALL_ARCHS=1 builds every name")
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow if n in slow
                                                else every) for n in names]


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    keras.backend.clear_session()


# --- minimum input sizes, checked against Keras --------------------------------------------

def raw_build(name: str, size: int, **overrides) -> keras.Model | None:
    """The backbone as Keras builds it at size×size, or None where Keras refuses."""
    info = model_info(name)
    x = keras.Input((size, size, 3))
    options = {**info.defaults, **SHAPE_OVERRIDES.get(info.family, {}), **overrides}
    try:
        return keras.Model(x, info.builder(x, **options))
    except ValueError:  # "Computed output size would be zero or negative"
        return None


def total_stride(name: str, **overrides) -> int:
    """How many input pixels one pixel of the smallest feature map spans, at 224×224."""
    model = raw_build(name, 224, **overrides)
    sides = [layer.output.shape[1] for layer in model.layers
             if len(layer.output.shape) == 4 and not isinstance(layer, AdaptiveAveragePooling2D)]
    return 224 // min(sides)


def fits(name: str, size: int, stride: int, **overrides) -> bool:
    """Keras builds it and every downsampling stage keeps at least one whole pixel."""
    built = raw_build(name, size, **overrides) is not None
    keras.backend.clear_session()
    return built and size // stride >= 1


MIN_DEFAULT = {"lenet", "small_cnn", "alexnet", "vgg11", "convnext_tiny", "convnextv2_atto"}
MIN_SLOW = smallest_of_each_family() - MIN_DEFAULT


def test_every_architecture_declares_its_minimum():
    """A family registered without ``min_input_size`` would get 1 and fail deep in Keras."""
    undeclared = [n for n in NAMES if model_info(n).min_input_size <= 1]
    assert not undeclared, f"register_model(..., min_input_size=N) missing for {undeclared}"


@pytest.mark.parametrize("name", params(NAMES, MIN_DEFAULT, MIN_SLOW))
def test_min_input_size_is_the_smallest_that_fits(name):
    least = model_info(name).min_input_size
    stride = total_stride(name)
    assert fits(name, least, stride), f"{name} does not fit its declared minimum {least}"
    assert not fits(name, least - 1, stride), f"{name} fits {least - 1} < declared {least}"


def test_min_input_size_follows_family_options():
    info = model_info("resnet18")
    least = info.min_size(stem_kind="small")
    stride = total_stride("resnet18", stem_kind="small")
    assert least < info.min_input_size
    assert fits("resnet18", least, stride, stem_kind="small")
    assert not fits("resnet18", least - 1, stride, stem_kind="small")
    kerascls.create_model("resnet18", 3, (least, least, 1), stem_kind="small")


def test_create_model_refuses_sizes_with_a_value_error_naming_the_limit():
    with pytest.raises(ValueError, match=r"vgg16 needs an input of at least 32×32"):
        kerascls.create_model("vgg16", 10, (28, 28, 1))
    with pytest.raises(ValueError, match=r"alexnet needs an input of at least 63×63"):
        kerascls.create_model("alexnet", 10, (62, 62, 3))
    with pytest.raises(ValueError, match=r"above the largest size.*4096"):
        kerascls.create_model("small_cnn", 10, (4097, 64, 3))


# --- the design card's command for every architecture ---------------------------------------

def kerascls_in_process(capsys, *argv: str) -> list[str]:
    """``kerascls CMD FLAGS...`` with the CLI's own flags and command, in this process."""
    cmd, *rest = argv
    fv = flags.FlagValues()
    cli.COMMANDS[cmd][0](fv, f"kerascls {cmd}")
    positional = fv([f"kerascls {cmd}", *rest])[1:]
    capsys.readouterr()
    cli.COMMANDS[cmd][1](fv, positional)
    return capsys.readouterr().out.splitlines()


SMOKE = ("--epochs=1", "--batch_size=12", "--max_train_images=24", "--val_fraction=0",
         "--max_test_images=16")  # one epoch of two steps on 24 images, tested on 16
ONE_STEP = ("--epochs=1", "--batch_size=8", "--max_train_images=8", "--val_fraction=0",
            "--max_test_images=8", "--run_eagerly")  # one eager step, tested on 8 images


def smoke_train(capsys, name: str, run, *extra: str) -> list[str]:
    return kerascls_in_process(capsys, "train", f"--arch={name}", *SMOKE,
                               f"--output_dir={run}", *extra)


def kerascls_subprocess(*argv: str) -> list[str]:
    """A fresh process, as a user runs it (the README flow)."""
    from tests.conftest import run_cli
    return run_cli(*argv, timeout=1800).stdout.splitlines()


def every_name(default: set[str]) -> list:
    """``default`` by default; every other name with `-m slow` (CI). The giants over
    GIANT_PARAMS (VGG, ConvNeXt large/xlarge, ConvNeXtV2 large/huge, EfficientNetV2-L) are
    also marked ``giant``: their cost is memory (16 bytes a parameter for weights, gradients
    and Adam: 10.6 GB for convnextv2_huge, 20.5 GB peak RSS with its .keras save) and the GBs
    they write, so CI runs them on their own, one at a time, after the other slow tests
    (measured on 2 cores: convnextv2_huge 92 s, convnext_xlarge 70 s, a VGG 10–13 s)."""
    return arch_params(NAMES, default, giant)


@needs_fashion_mnist
@pytest.mark.parametrize("name", every_name(DEFAULT))
def test_design_card_trains_every_architecture_on_the_default_data(name, tmp_path, capsys):
    run = tmp_path / "run"
    out = kerascls_in_process(capsys, "train", f"--arch={name}", *ONE_STEP,
                              f"--output_dir={run}")
    least = model_info(name).min_input_size
    resized = [line for line in out if "needs at least" in line]
    if least > NATIVE:
        line = (f"{name} needs at least {least}×{least}; Fashion-MNIST's "
                f"{NATIVE}×{NATIVE} images are resized to {least}×{least}")
        assert resized == [line], out
    else:
        assert not resized, out
    assert any(line.startswith("accuracy:") for line in out), out
    side = max(least, NATIVE)
    assert json.loads((run / "config.json").read_text())["input_shape"] == [side, side, 1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["count"] == 8 and 0 <= metrics["accuracy"] <= 1, metrics
    assert (run / "model.keras").stat().st_size > 0
    if (model_info(name).ref_params or 0) < EXPORT_PARAMS:  # on to a checked int8 bundle
        kerascls_in_process(capsys, "export", f"--model={run}", "--tflite",
                            "--calibration_samples=8", "--parity_samples=8")
        assert (run / "bundle" / "model.tflite").stat().st_size > 0
    shutil.rmtree(run)  # the big ones write GBs; pytest keeps tmp dirs of three sessions
    gc.collect()


# --- refusals and reruns ---------------------------------------------------------------------

def test_too_small_image_size_is_refused_in_one_line_before_anything_is_written(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "--arch=vgg16", "--image_size=16", f"--output_dir={run}", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("kerascls: error: train: --image_size 16 is below vgg16's "
                               "minimum input size 32"), lines[0]
    assert not run.exists()


@pytest.mark.parametrize("args, words", [
    (["train", "--image_size=100000"], ["--image_size 100000", "maximum 4096"]),
    (["train", "--arch=alexnet", "--image_size=62"], ["--image_size 62", "alexnet", "63"]),
    (["summary", "--arch=alexnet", "--image_size=32"], ["--image_size 32", "alexnet", "63"]),
    (["summary", "--arch=lenet", "--image_size=5000"], ["--image_size 5000", "maximum 4096"]),
])
def test_bad_image_sizes_are_refused_before_data_or_files(tmp_path, capsys, args, words):
    """In process (the runner turns the ValueError into the one line tested above)."""
    run = tmp_path / "run"
    extra = [f"--output_dir={run}", "--data=folder:/nonexistent"] if args[0] == "train" else []
    with pytest.raises(ValueError) as info:
        kerascls_in_process(capsys, *args, *extra)
    for word in words:
        assert word in str(info.value)
    assert not run.exists()


@needs_fashion_mnist
def test_rerun_after_a_refused_or_failed_start_needs_no_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="below lenet's minimum input size 16"):
        smoke_train(capsys, "lenet", run, "--image_size=8")
    assert not run.exists()
    # A start that fails after the run directory was made (the model does not build).
    with pytest.raises(ValueError, match="norm must be one of"):
        smoke_train(capsys, "lenet", run, "--model_arg=norm=bogus")
    assert not run.exists()
    out = smoke_train(capsys, "lenet", run, "--image_size=16")
    assert f"run directory: {run}" in out
    assert kerascls.load_model(run).input_shape[1:] == (16, 16, 1)


@needs_fashion_mnist
def test_a_failed_start_in_an_existing_directory_leaves_it_as_it_was(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="norm must be one of"):
        smoke_train(capsys, "lenet", run, "--model_arg=norm=bogus")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


@pytest.mark.slow
@pytest.mark.giant  # 7.3 GB peak on a 512-image run (README): alone, like the giants above
@needs_fashion_mnist
def test_vgg16_train_export_predict_as_the_readme_shows(tmp_path, capsys):
    """The README's flow with the 138 M-parameter VGG16 (few images, one epoch)."""
    from PIL import Image
    run = tmp_path / "run"
    out = kerascls_subprocess("train", "--arch=vgg16", *SMOKE, f"--output_dir={run}")
    assert "vgg16 needs at least 32×32" in out[0]
    kerascls_subprocess("export", f"--model={run}", "--tflite", "--calibration_samples=16",
                        "--parity_samples=16")
    rng = np.random.default_rng(0)
    # A textured grey photo-like image: smooth gradient plus noise, not a flat colour.
    yy, xx = np.mgrid[0:96, 0:80]
    img = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + rng.normal(0, 20, (96, 80))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB").save(
        tmp_path / "photo.jpg")
    results = tmp_path / "results.json"
    kerascls_subprocess("predict", f"--model={run / 'bundle'}", f"--output={results}",
                        str(tmp_path / "photo.jpg"))
    images = json.loads(results.read_text())["images"]
    assert len(images) == 1 and "failure" not in images[0], images
    scores = [c for _, c in images[0]["detections"][0]["classifications"]]
    assert 1 <= len(scores) <= 5 and scores == sorted(scores, reverse=True)
    assert all(0 <= c <= 1 for c in scores)
