"""Default-mark checks of two behaviours that only `slow` tests reached (issue 26).

- The best epoch by ``val_loss`` (the default ``--monitor``) is the *lowest*; by an accuracy
  the highest. ``BestEpoch`` is driven epoch by epoch on a real (tiny) Keras model with
  hand-chosen history values, and the weights it keeps are compared with the weights the
  model had at that epoch.
- ``kerascls predict --devices cpu:2``: a batch split over two replicas comes back in image
  order. Two logical CPUs must be configured before TensorFlow initialises, so this runs in
  a fresh process (as tests/test_predict_devices.py's slow version does), with a smaller
  model and fewer batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("free_keras_memory")


def _model():
    import keras
    inp = keras.Input((3,))
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))


def _drive(run: Path, monitor: str, values: list[float], patience: int = 0,
           start: int = 0):
    """BestEpoch over len(values) epochs; epoch e's weights are all e (to tell them apart)."""
    from kerascls.training.callbacks import BestEpoch
    model = _model()
    model.stop_training = False  # as fit() sets it
    cb = BestEpoch(run, monitor, patience=patience, start=start)
    cb.set_model(model)
    cb.on_train_begin()
    ran = []
    for epoch, value in enumerate(values, start=start):
        model.set_weights([np.full(w.shape, float(epoch), np.float32)
                           for w in model.get_weights()])
        cb.on_epoch_end(epoch, {monitor: value, "other": 0.5})
        ran.append(epoch)
        if model.stop_training:
            break
    return cb, model, ran


def _kept_epoch(run: Path) -> int:
    """The epoch whose weights the run kept (read back from its weights file)."""
    state = json.loads((run / "best.json").read_text())
    model = _model()
    model.load_weights(run / state["weights"])
    kept = {float(v) for w in model.get_weights() for v in np.ravel(w)}
    assert len(kept) == 1 and kept.pop() == state["epoch"]
    return state["epoch"]


@pytest.mark.parametrize("monitor,values,best", [
    ("val_loss", [0.9, 0.4, 0.6, 0.45], 1),           # lowest loss
    ("val_loss", [0.4, 0.9, 0.6], 0),
    ("loss", [0.9, 0.7, 0.8], 1),
    ("val_accuracy", [0.5, 0.8, 0.7, 0.75], 1),       # highest accuracy
    ("val_top5_accuracy", [0.9, 0.6, 0.95], 2),
    ("val_loss", [0.5, float("nan"), 0.5, 0.25], 3),  # NaN never best; a tie is no better
])
def test_best_epoch_direction_follows_the_monitor(tmp_path: Path, monitor, values,
                                                  best) -> None:
    cb, _, _ = _drive(tmp_path, monitor, values)
    state = json.loads((tmp_path / "best.json").read_text())
    assert state["monitor"] == monitor and state["mode"] == (
        "min" if "loss" in monitor else "max")
    assert state["value"] == pytest.approx(values[best])
    assert _kept_epoch(tmp_path) == best
    assert sorted(p.name for p in tmp_path.glob("best-epoch*")) == [f"best-epoch{best}.weights.h5"]


def test_a_tie_keeps_the_earlier_epoch(tmp_path: Path) -> None:
    _drive(tmp_path, "val_loss", [0.5, 0.25, 0.25, 0.5])
    assert _kept_epoch(tmp_path) == 1


def test_patience_stops_after_epochs_without_a_lower_val_loss(tmp_path: Path) -> None:
    cb, _, ran = _drive(tmp_path, "val_loss", [0.9, 0.5, 0.6, 0.7, 0.4, 0.3], patience=2)
    assert ran == [0, 1, 2, 3] and cb.stopped_epoch == 3 and _kept_epoch(tmp_path) == 1


def test_a_resumed_run_competes_with_the_epochs_before_the_crash(tmp_path: Path) -> None:
    _drive(tmp_path, "val_loss", [0.9, 0.3, 0.5])        # epochs 0-2, best 1 (0.3)
    cb, _, _ = _drive(tmp_path, "val_loss", [0.4, 0.35], start=3)  # resumed: 3, 4
    assert _kept_epoch(tmp_path) == 1 and cb.state["value"] == pytest.approx(0.3)
    _drive(tmp_path, "val_loss", [0.2], start=5)
    assert _kept_epoch(tmp_path) == 5
    _drive(tmp_path, "val_accuracy", [0.1], start=6)    # another monitor starts afresh
    assert _kept_epoch(tmp_path) == 6


REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from PIL import Image
    from kerascls.keras_classifier import KerasClassifier
    from tests.scenes import SIZES, texture

    path = sys.argv[1]
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    pix = np.stack([np.asarray(Image.fromarray(texture(c, w, h, i)).resize((16, 16)))
                    for i, ((w, h), c) in enumerate(zip(SIZES[:5],
                                                        ["rings", "stripes_fine"] * 3))])
    clf = KerasClassifier(path, batch_size=4, devices="cpu:2")
    ref = keras.saving.load_model(path)  # one device, no strategy
    print(json.dumps({"devices": clf.devices, "split": clf.predict_array(pix).tolist(),
                      "one": clf.predict_array(pix[3]).tolist(),
                      "ref": np.asarray(ref.predict_on_batch(pix.astype("float32"))).tolist()}))
""")


def test_two_replicas_return_rows_in_image_order(tmp_path: Path) -> None:
    """5 images in batches of 4 and 1 on 2 replicas: halves of 2+2, then 1 + a padding copy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", REPLICAS, str(tmp_path / "m.keras")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == ["/cpu:0", "/cpu:1"]
    ref, split = np.asarray(out["ref"]), np.asarray(out["split"])
    assert ref.shape == split.shape == (5, 3)
    # the images differ: a row in the wrong place would show
    assert min(np.abs(ref[i] - ref[j]).max() for i in range(5) for j in range(i)) > 1e-4
    np.testing.assert_allclose(split, ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["one"]), ref[3:4], atol=1e-5)
