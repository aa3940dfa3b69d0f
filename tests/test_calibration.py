"""Temperature scaling: the fit finds the temperature that generated the data, the folded
head outputs softmax(logits / T) exactly (checked in numpy, on the model and after a save),
and on a real run it lowers the test ECE measured by the evaluation code."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerascls.models import create_model
from kerascls.training import calibration as C
from tests.conftest import needs_debian


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _overconfident(n: int, k: int, t: float, seed: int = 0):
    """Labels drawn from softmax(z); the 'model' reports z · t (too sure for t > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, k))
    p = _np_softmax(z)
    y = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)
    return z * t, y


@pytest.mark.parametrize("t", [0.5, 2.5])
def test_fit_recovers_the_generating_temperature(t):
    z, y = _overconfident(20000, 10, t)
    fitted = C.fit_temperature(z, y)
    assert fitted == pytest.approx(t, rel=0.05)
    assert C.nll(z / fitted, y, "multiclass") < C.nll(z, y, "multiclass")
    before, after = C.quality(z, y, "multiclass"), C.quality(z / fitted, y, "multiclass")
    assert after["ece"] < before["ece"] and after["nll"] < before["nll"]


def test_fit_sigmoid_heads_too():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (20000, 3))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
    assert C.fit_temperature(3 * z, y, "multilabel") == pytest.approx(3, rel=0.05)


@pytest.mark.parametrize("logits", [False, True])
def test_folded_head_outputs_softmax_of_logits_over_t(tmp_path, logits):
    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", 10, (28, 28, 1), logits=logits)
    head = model.get_layer("head")
    head.set_weights([w * 20 for w in head.get_weights()])  # confident enough to matter
    x = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1)).astype(np.float32)
    z = keras.Model(model.inputs, model.get_layer("head").output).predict(x, verbose=0)
    t = 1.7
    C.fold_temperature(model, t)
    model.save(tmp_path / "m.keras")
    for m in (model, keras.saving.load_model(tmp_path / "m.keras")):
        out = m.predict(x, verbose=0).astype(np.float64)
        want = z / t if logits else _np_softmax(z.astype(np.float64) / t)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-6)


def test_evaluate_reports_the_runs_temperature(tmp_path):
    from kerascls.evaluation.evaluate import _run_calibration, calibration_line
    entry = {"temperature": 1.5, "test_before": {"ece": 0.12, "nll": 0.9},
             "test_after": {"ece": 0.03, "nll": 0.8}}
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.json").write_text(json.dumps({"calibration": entry}))
    (tmp_path / "bundle").mkdir()
    assert _run_calibration(tmp_path) == entry == _run_calibration(tmp_path / "bundle")
    assert calibration_line(entry) == ("calibration: temperature 1.500 (fitted on val); "
                                       "test ECE 0.1200 → 0.0300, NLL 0.9000 → 0.8000")
    assert "no validation split" in calibration_line({"temperature": None,
                                                      "skipped": "no validation split"})


def test_bundle_records_the_folded_temperature(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"calibration": {"temperature": 1.25, "fitted_on": "val"}}))
    assert C.bundle_entry(tmp_path)["calibration"] == {
        "method": "temperature", "temperature": 1.25, "folded_into_head": True,
        "fitted_on": "val"}
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"calibration": {"temperature": None, "skipped": "--calibrate is off"}}))
    assert C.bundle_entry(tmp_path) == {} == C.bundle_entry(tmp_path / "absent")


def test_a_perfectly_classified_split_is_not_fitted():
    z = np.array([[3.0, 0.0], [0.0, 2.0]])
    assert C.separable(z, np.array([0, 1]), "multiclass")
    assert not C.separable(z, np.array([1, 1]), "multiclass")
    assert C.separable(np.array([[2.0], [-1.0]]), np.array([[1.0], [0.0]]), "binary")


def _ece_before_after(run) -> tuple[float, float, dict]:
    m = json.loads((run / "metrics.json").read_text())
    c = m["calibration"]
    return c["test_before"]["ece"], c["test_after"]["ece"], m


@pytest.mark.slow
def test_temperature_lowers_test_ece_on_an_image_file_run(tmp_path):
    """The README's image-file row (bench/calibration_ece.py): 5 rendered texture classes,
    two pairs alike, 3 epochs at 24 px leave an underconfident model."""
    from kerascls.training.train import train
    from tests import scenes
    extra = {"stripes_mid": (3.2, 1.1, (0.7, 0.9, 0.95)),
             "rings_fine": (5.8, None, (0.9, 1.0, 0.75))}
    classes = {**scenes.CLASSES, **extra}
    old = dict(scenes.CLASSES)
    scenes.CLASSES.update(extra)
    try:
        data = scenes.render_folder(tmp_path / "images", per_class=150, classes=tuple(classes),
                                    seed=3)
    finally:
        scenes.CLASSES.clear()
        scenes.CLASSES.update(old)
    run = train(scenes.small_run(data, tmp_path / "run", epochs=3, val_fraction=0.2,
                                 test_fraction=0.3, image_size=24, learning_rate=1e-3))
    before, after, metrics = _ece_before_after(run)
    assert after < before and metrics["calibration"]["temperature"] != 1.0
    assert metrics["loss"] == pytest.approx(metrics["calibration"]["test_after"]["nll"],
                                            rel=1e-4)


@pytest.mark.slow
@needs_debian
def test_temperature_lowers_test_ece_on_fashion_mnist(tmp_path):
    """Label smoothing leaves the model underconfident (the README's second row, smaller)."""
    from kerascls.training.config import TrainConfig
    from kerascls.training.train import train
    run = train(TrainConfig(arch="small_cnn", epochs=3, max_train_images=2000,
                            max_test_images=2000, batch_size=64, label_smoothing=0.1, seed=0,
                            output_dir=str(tmp_path / "run")))
    before, after, metrics = _ece_before_after(run)
    assert after < before and metrics["calibration"]["temperature"] < 1.0
