"""What users rely on from the Keras side of the workflow, at tiny sizes (issue 26).

- ``KerasClassifier`` (``kerascls predict`` on a run): one probability row per image in input
  order whatever the batching, a one-unit sigmoid head read as two columns, a logits head
  given its activation, labels from the run and a one-line error when they do not fit.
- The training callbacks: a backup at each epoch end, a NaN loss that stops the run where it
  happened, the best epoch (lowest loss, highest accuracy; ties, patience, resumes, epochs
  without the monitored value) and a history with one row per epoch.
- Temperature scaling: the fitted T against an independent grid search of the NLL, the NLL
  and ECE against hand-worked values, the numpy activations against Keras'.

Test names start with ``keras_classifier``, ``callbacks`` or ``calibration`` so that
mutation/run.py's ``-k`` picks each module's tests. Models are real Keras models of a few
weights; nothing of TensorFlow is mocked.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.scenes import SIZES, texture

builds_models = pytest.mark.usefixtures("free_keras_memory")  # the numpy-only tests skip it

SIDE = 16


def _pixels(n: int) -> np.ndarray:
    """n photo-like 16x16 RGB images (uint8) that all differ."""
    from PIL import Image
    kinds = ("rings", "stripes_fine", "stripes_coarse")
    return np.stack([np.asarray(Image.fromarray(texture(kinds[i % 3], w, h, i))
                                .resize((SIDE, SIDE), Image.BILINEAR))
                     for i, (w, h) in enumerate((SIZES * 2)[:n])])


# ---------------------------------------------------------------- keras_classifier


def _save_run(root: Path, name: str, units: int, activation: str, classes=None,
              task: str = "multiclass", layer: str = "head") -> Path:
    """A run directory: model.keras (a conv net of a few weights) and, given classes, the
    config.json a training run writes."""
    import keras

    from kerascls.training.config import TrainConfig
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(units, activation=activation, name=layer)(x)
    run = root / name
    run.mkdir()
    keras.Model(inp, out).save(run / "model.keras")
    if classes is not None:
        TrainConfig(class_names=list(classes), model_args={"task": task},
                    input_shape=[SIDE, SIDE, 3]).save(run)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The model shapes a user brings: 3-way softmax (a bare .keras file), 2-way softmax,
    a one-unit sigmoid binary head, a logits head, and two whose labels do not fit."""
    import keras
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("keras_runs")
    out = {"three": _save_run(root, "three", 3, "softmax") / "model.keras",
           "pair": _save_run(root, "pair", 2, "softmax", ["blank", "deer"]),
           "binary": _save_run(root, "binary", 1, "sigmoid", ["blank", "deer"], "binary"),
           "logits": _save_run(root, "logits", 3, None, ["a", "b", "c"],
                               layer="predictions"),
           "too_many": _save_run(root, "too_many", 2, "softmax", ["a", "b", "c"]),
           "one_of_three": _save_run(root, "one_of_three", 1, "sigmoid", ["a", "b", "c"],
                                     "multilabel")}
    keras.backend.clear_session()
    return out


def _bare(path: Path, pix: np.ndarray) -> np.ndarray:
    """The saved model's own outputs, loaded outside kerascls."""
    import keras
    file = path if path.suffix == ".keras" else path / "model.keras"
    return np.asarray(keras.saving.load_model(file).predict_on_batch(pix.astype(np.float32)),
                      np.float64)


@builds_models
def test_keras_classifier_rows_follow_the_images_in_any_batching(runs) -> None:
    """5 images in batches of 2 (2+2+1), of 64, and one HWC image alone: the same rows."""
    from kerascls.keras_classifier import KerasClassifier
    pix = _pixels(5)
    ref = _bare(runs["three"], pix)
    assert min(np.abs(ref[i] - ref[j]).max() for i in range(5) for j in range(i)) > 1e-4
    for batch in (2, 64):
        clf = KerasClassifier(runs["three"], batch_size=batch)
        assert clf.batch_size == batch and clf.labels == ["0", "1", "2"]
        got = clf.predict_array(pix)
        assert got.shape == (5, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(clf.predict_array(pix[3]), ref[3:4], atol=1e-6)
    assert len(clf.devices) == 1 and clf.devices[0] in ("/cpu:0", "/gpu:0")


REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kerascls.keras_classifier import KerasClassifier
    from tests.test_workflow_keras import SIDE, _pixels

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3)(x)
    norm = keras.layers.BatchNormalization()  # inference must use its moving statistics
    x = keras.layers.ReLU()(norm(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    norm.set_weights([np.array(v, np.float32) for v in
                      ([1.5, 0.5, 1, 2], [0.1, -0.2, 0, 0.3], [0.2, 0.1, -0.1, 0], [2, 1, 3, .5])])
    model.save(sys.argv[1])
    pix = _pixels(7)
    clf = KerasClassifier(sys.argv[1], batch_size=4, devices="cpu:2")
    print(json.dumps({"devices": clf.devices, "seven": clf.predict_array(pix).tolist(),
                      "two": clf.predict_array(pix[:2]).tolist(),
                      "one": clf.predict_array(pix[6]).tolist(),
                      "ref": np.asarray(model.predict_on_batch(pix.astype("float32"))).tolist()}))
""")


def test_keras_classifier_two_replicas_keep_rows_in_order(tmp_path) -> None:
    """``--devices cpu:2`` (two logical CPUs: a fresh process): 7 images in batches of 4
    and 3 (2 + 2, then 2 + 1 and a padding copy), 2 images, and one HWC image all equal the
    model's own inference rows (BatchNorm on its moving statistics)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "export")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", REPLICAS, str(tmp_path / "m.keras")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == ["/cpu:0", "/cpu:1"]
    ref = np.asarray(out["ref"])
    assert ref.shape == (7, 3)
    assert min(np.abs(ref[i] - ref[j]).max() for i in range(7) for j in range(i)) > 1e-4
    np.testing.assert_allclose(np.asarray(out["seven"]), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["two"]), ref[:2], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["one"]), ref[6:], atol=1e-5)


@builds_models
def test_keras_classifier_ignores_a_training_tf_config(runs, monkeypatch) -> None:
    """Inference is one process: a TF_CONFIG left in the shell by a multi-worker training
    (here one that no longer parses) is not read."""
    from kerascls.keras_classifier import KerasClassifier
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["host-a:2222", "host-b:22')
    pix = _pixels(2)
    np.testing.assert_allclose(KerasClassifier(runs["three"]).predict_array(pix),
                               _bare(runs["three"], pix), atol=1e-6)


@builds_models
def test_keras_classifier_threads_default_to_every_cpu(runs) -> None:
    from kerascls.keras_classifier import KerasClassifier
    assert KerasClassifier(runs["three"], threads=3).threads == 3
    assert KerasClassifier(runs["three"]).threads == (os.cpu_count() or 1)


@builds_models
def test_keras_classifier_two_classes_one_column_per_label(runs) -> None:
    """A 2-way softmax keeps its two columns; a one-unit sigmoid becomes [1 - p, p]."""
    from kerascls.keras_classifier import KerasClassifier
    pix = _pixels(3)
    pair = KerasClassifier(runs["pair"], batch_size=2)
    assert pair.labels == ["blank", "deer"]
    np.testing.assert_allclose(pair.predict_array(pix), _bare(runs["pair"], pix), atol=1e-6)
    binary = KerasClassifier(runs["binary"], batch_size=2)
    assert binary.labels == ["blank", "deer"]
    p = _bare(runs["binary"], pix)
    assert p.shape == (3, 1)
    got = binary.predict_array(pix)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, np.hstack([1 - p, p]), atol=1e-6)


@builds_models
def test_keras_classifier_gives_a_logits_head_its_softmax(runs) -> None:
    from kerascls.keras_classifier import KerasClassifier
    pix = _pixels(4)
    z = _bare(runs["logits"], pix)
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    got = KerasClassifier(runs["logits"], batch_size=3).predict_array(pix)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)


@builds_models
@pytest.mark.parametrize("name,says", [("too_many", "3 labels but the model has 2 outputs"),
                                       ("one_of_three", "3 labels but the model has 1 outputs"),
                                       ("absent", "no model at")])
def test_keras_classifier_labels_that_do_not_fit_are_one_line(runs, name, says) -> None:
    from kerascls.keras_classifier import KerasClassifier
    from kerascls_edge.bundle import EdgeError
    path = runs.get(name, runs["three"].parent.parent / "absent")
    with pytest.raises(EdgeError, match=says) as e:
        KerasClassifier(path)
    assert "\n" not in str(e.value)


def test_keras_classifier_knows_a_keras_model_path(runs, tmp_path) -> None:
    from kerascls.keras_classifier import is_keras_model
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"")
    (tmp_path / "m.tflite").write_bytes(b"")
    assert is_keras_model(runs["pair"]) and is_keras_model(runs["three"])
    assert is_keras_model(tmp_path / "not_yet.keras")  # a .keras name, as the CLI reads it
    assert not is_keras_model(bundle) and not is_keras_model(tmp_path / "m.tflite")
    assert not is_keras_model(tmp_path / "model.keras.d")


# ---------------------------------------------------------------- callbacks


def _tiny_model(units: int = 2):
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(units, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.25), "sparse_categorical_crossentropy")
    return model


def _xy(n: int = 16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n)


class _Epochs:
    """Records the epochs and batches fit ran; raises at the start of epoch ``crash_at``."""

    def __new__(cls, crash_at: int | None = None):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs, self.batches = [], []

            def on_epoch_begin(self, epoch, logs=None):
                if epoch == crash_at:
                    raise KeyboardInterrupt("killed")
                self.epochs.append(epoch)

            def on_train_batch_end(self, batch, logs=None):
                self.batches.append((self.epochs[-1], batch))
        return Recorder()


@builds_models
@pytest.mark.parametrize("save_freq", ["epoch", 1000])
def test_callbacks_backup_resumes_after_the_last_finished_epoch(tmp_path, save_freq) -> None:
    """Killed as epoch 2 begins: the resumed fit runs epochs 2 and 3 only, also when the
    backup is taken every 1000 batches (never reached in an epoch of 4)."""
    from kerascls.training.callbacks import Backup
    x, y = _xy()
    model = _tiny_model()
    first = _Epochs(crash_at=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[
            Backup(tmp_path / "backup", save_freq=save_freq), first])
    assert first.epochs == [0, 1]
    again = _Epochs()
    model = _tiny_model()
    model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[
        Backup(tmp_path / "backup", save_freq=save_freq), again])
    assert again.epochs == [2, 3]


@builds_models
def test_callbacks_nan_loss_stops_at_its_batch(tmp_path) -> None:
    """A NaN in image 13 (batch 4 of epoch 1): no batch runs after it, and the error says
    epoch 1, batch 4 in one line."""
    from kerascls.errors import is_user_error
    from kerascls.training.callbacks import StopOnNaN, TrainingDiverged
    x, y = _xy()
    x[13] = np.nan
    nan, seen = StopOnNaN(), _Epochs()
    model = _tiny_model()
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[nan, seen])
    assert seen.batches[-1] == (0, 3) and seen.epochs == [0]
    assert nan.where[:2] == (1, 4) and math.isnan(nan.where[2])
    with pytest.raises(TrainingDiverged, match="epoch 1, batch 4") as e:
        nan.raise_if_stopped()
    assert is_user_error(e.value) and isinstance(e.value, FloatingPointError)


@builds_models
def test_callbacks_first_non_finite_loss_is_the_one_reported() -> None:
    """Driven batch by batch: finite losses and batches without one pass; an inf counts;
    the first bad batch is kept."""
    from kerascls.training.callbacks import StopOnNaN
    model = _tiny_model()
    model.stop_training = False
    cb = StopOnNaN()
    cb.set_model(model)
    cb.on_epoch_begin(2)
    cb.on_train_batch_end(0, {"loss": 0.5})
    cb.on_train_batch_end(1, {})
    cb.on_train_batch_end(2, None)
    cb.raise_if_stopped()  # nothing to say yet
    assert cb.where is None and not model.stop_training
    cb.on_train_batch_end(3, {"loss": float("inf")})
    cb.on_train_batch_end(4, {"loss": float("nan")})
    assert cb.where == (3, 4, float("inf")) and model.stop_training


@builds_models
def test_callbacks_check_finite_names_the_bad_weight() -> None:
    from kerascls.training.callbacks import TrainingDiverged, check_finite
    model = _tiny_model()
    check_finite(model)  # a finite model passes
    kernel, bias = model.get_weights()
    bias[1] = np.nan
    model.set_weights([kernel, bias])
    with pytest.raises(TrainingDiverged, match="bias holds NaN/inf") as e:
        check_finite(model)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("monitor,mode", [("loss", "min"), ("val_loss", "min"),
                                          ("accuracy", "max"), ("val_accuracy", "max"),
                                          ("val_top5", "max")])
def test_callbacks_monitor_mode(monitor, mode) -> None:
    from kerascls.training.callbacks import monitor_mode
    assert monitor_mode(monitor) == mode


def _best(run: Path, monitor: str, patience: int = 0, start: int = 0):
    """A BestEpoch on a 3-input model whose weights are set to the epoch number."""
    from kerascls.training.callbacks import BestEpoch
    model = _tiny_model()
    model.stop_training = False
    cb = BestEpoch(run, monitor, patience=patience, start=start)
    cb.set_model(model)
    cb.on_train_begin()
    return cb, model


def _epoch(cb, model, epoch: int, logs: dict | None) -> bool:
    """One epoch end with the weights at ``epoch``; whether training should stop."""
    model.set_weights([np.full(w.shape, float(epoch), np.float32) for w in model.get_weights()])
    cb.on_epoch_end(epoch, logs)
    return model.stop_training


def _kept(run: Path) -> tuple[int, float]:
    """(epoch, value) of best.json, checked against the weights file it names."""
    state = json.loads((run / "best.json").read_text())
    model = _tiny_model()
    model.load_weights(run / state["weights"])
    assert {float(v) for w in model.get_weights() for v in np.ravel(w)} == {state["epoch"]}
    assert sorted(p.name for p in run.glob("best-epoch*")) == [state["weights"]]
    return state["epoch"], state["value"]


@builds_models
def test_callbacks_epochs_without_the_monitored_value_are_skipped(tmp_path) -> None:
    """No validation split this epoch (no val_loss in the logs): nothing is kept, and
    patience does not count it as a worse epoch of its own."""
    cb, model = _best(tmp_path, "val_loss", patience=5)
    assert not _epoch(cb, model, 0, {"loss": 0.3, "learning_rate": 0.25})
    assert not _epoch(cb, model, 1, None)
    assert not (tmp_path / "best.json").exists() and cb.state is None
    _epoch(cb, model, 2, {"loss": 0.3, "val_loss": 0.7})
    assert _kept(tmp_path) == (2, pytest.approx(0.7))


@builds_models
def test_callbacks_learning_rate_monitor_reads_the_optimizer(tmp_path) -> None:
    """``--monitor learning_rate`` (history.csv's column): from the optimizer when the logs
    lack it; higher is better."""
    cb, model = _best(tmp_path, "learning_rate")
    _epoch(cb, model, 0, {"loss": 0.5})
    assert _kept(tmp_path) == (0, pytest.approx(0.25))
    model.optimizer.learning_rate.assign(0.5)
    _epoch(cb, model, 1, {"loss": 0.5})
    assert _kept(tmp_path) == (1, pytest.approx(0.5))
    _epoch(cb, model, 2, {"learning_rate": 0.1})
    assert _kept(tmp_path) == (1, pytest.approx(0.5))


@pytest.mark.parametrize("monitor,values,best", [
    ("val_loss", [0.5, 0.5, 0.5], 0),                  # ties: the first stays
    ("val_accuracy", [0.5, 0.75, 0.75], 1),
    ("val_loss", [float("nan"), float("inf"), 0.9], 2),   # never a non-finite value
    ("val_accuracy", [float("nan"), 0.1, float("inf")], 1),
    ("val_loss", [0.25, 0.5, 0.125], 2),
])
@builds_models
def test_callbacks_best_epoch_ties_and_non_finite(tmp_path, monitor, values, best) -> None:
    cb, model = _best(tmp_path, monitor)
    for epoch, value in enumerate(values):
        _epoch(cb, model, epoch, {monitor: value})
    assert _kept(tmp_path) == (best, pytest.approx(values[best]))


@builds_models
def test_callbacks_patience_counts_from_the_best_or_the_resumed_start(tmp_path) -> None:
    """patience 2: stop at the 2nd epoch without a lower val_loss; a resumed run (start 5)
    with an old best at epoch 1 gets 2 epochs of its own; patience 0 never stops."""
    cb, model = _best(tmp_path / "a", "val_loss", patience=2)
    (tmp_path / "a").mkdir()
    stops = [_epoch(cb, model, e, {"val_loss": v}) for e, v in enumerate([0.5, 0.4, 0.45])]
    assert stops == [False, False, False] and cb.stopped_epoch is None
    assert _epoch(cb, model, 3, {"val_loss": 0.4}) and cb.stopped_epoch == 3

    (tmp_path / "b").mkdir()
    cb, model = _best(tmp_path / "b", "val_loss")
    _epoch(cb, model, 1, {"val_loss": 0.2})
    cb, model = _best(tmp_path / "b", "val_loss", patience=2, start=5)
    assert not _epoch(cb, model, 5, {"val_loss": 0.9})
    assert _epoch(cb, model, 6, {"val_loss": 0.8}) and cb.stopped_epoch == 6
    assert _kept(tmp_path / "b") == (1, pytest.approx(0.2))

    (tmp_path / "d").mkdir()  # resumed at 3, no finite val_loss yet: 2 epochs from 3
    cb, model = _best(tmp_path / "d", "val_loss", patience=2, start=3)
    assert not _epoch(cb, model, 3, {"val_loss": float("nan")})
    assert _epoch(cb, model, 4, {"val_loss": float("nan")}) and cb.stopped_epoch == 4

    (tmp_path / "c").mkdir()
    cb, model = _best(tmp_path / "c", "val_loss", patience=0)
    assert not any(_epoch(cb, model, e, {"val_loss": 0.5 + e}) for e in range(4))


@builds_models
def test_callbacks_an_epoch_redone_after_a_crash_replaces_its_old_best(tmp_path) -> None:
    """Killed after epoch 2 (the best) was saved but before its backup: the resumed run
    redoes epoch 2, and that redone epoch is the one kept even at a higher val_loss."""
    cb, model = _best(tmp_path, "val_loss")
    for e, v in enumerate([0.9, 0.6, 0.3]):
        _epoch(cb, model, e, {"val_loss": v})
    cb, model = _best(tmp_path, "val_loss", start=2)
    assert cb.state["epoch"] == 2
    _epoch(cb, model, 2, {"val_loss": 0.35})
    assert _kept(tmp_path) == (2, pytest.approx(0.35))
    _epoch(cb, model, 3, {"val_loss": 0.5})
    assert _kept(tmp_path) == (2, pytest.approx(0.35))


@builds_models
def test_callbacks_clear_best_removes_the_resume_state(tmp_path) -> None:
    from kerascls.training.callbacks import clear_best, read_best
    assert read_best(tmp_path) is None
    clear_best(tmp_path)  # nothing to clear: no error
    cb, model = _best(tmp_path, "val_accuracy")
    for e, v in enumerate([0.5, 0.75]):
        _epoch(cb, model, e, {"val_accuracy": v})
    assert read_best(tmp_path)["epoch"] == 1
    (tmp_path / "best-epoch1.weights.h5").unlink()  # removed by hand: the run goes on
    _epoch(cb, model, 2, {"val_accuracy": 0.875})
    assert read_best(tmp_path)["epoch"] == 2
    (tmp_path / "best-epoch2.weights.h5").unlink()
    (tmp_path / "keep.txt").write_text("x")
    clear_best(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@builds_models
def test_callbacks_history_file_one_row_per_epoch(tmp_path) -> None:
    """Rows replace their own and later epochs (a resume), columns are the union (a
    validation metric that starts later), the learning rate is the optimizer's unless
    logged, and every value is a number."""
    from kerascls.training.callbacks import EpochHistory
    model = _tiny_model()
    cb = EpochHistory(tmp_path / "history.csv")
    cb.set_model(model)
    cb.on_epoch_end(0, {"loss": np.float32(0.75)})
    cb.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.625})
    cb.on_epoch_end(2, {"loss": 0.25, "val_loss": 0.5, "learning_rate": 0.125})
    cb.on_epoch_end(1, {"loss": 0.375, "val_loss": 0.5})  # resumed from epoch 1
    rows = list(csv.DictReader(open(tmp_path / "history.csv", newline="")))
    assert list(rows[0]) == ["epoch", "loss", "learning_rate", "val_loss"]
    assert [(r["epoch"], float(r["loss"]), float(r["learning_rate"]), r["val_loss"])
            for r in rows] == [("0", 0.75, 0.25, ""), ("1", 0.375, 0.25, "0.5")]
    assert not list(tmp_path.glob("*.tmp*")) and len(list(tmp_path.iterdir())) == 1


# ---------------------------------------------------------------- calibration


def _reference_nll(z: np.ndarray, y: np.ndarray, task: str) -> float:
    """NLL written out per row in Python floats (log-sum-exp about the row's max)."""
    total, count = 0.0, 0
    if task == "multiclass":
        for row, label in zip(z.tolist(), np.ravel(y).tolist()):
            top = max(row)
            total += top + math.log(math.fsum(math.exp(v - top) for v in row)) - row[label]
            count += 1
    else:
        for v, t in zip(np.ravel(z).tolist(), np.ravel(y).tolist()):
            # -[t log s(v) + (1 - t) log(1 - s(v))], with log s(v) = -log(1 + e^-v)
            log_p = -(max(-v, 0) + math.log1p(math.exp(-abs(v))))
            log_q = -(max(v, 0) + math.log1p(math.exp(-abs(v))))
            total -= t * log_p + (1 - t) * log_q
            count += 1
    return total / count


def _grid_temperature(z: np.ndarray, y: np.ndarray, task: str) -> float:
    """argmin over T of the reference NLL: a grid on log T in [-3, 3] (steps of 0.025),
    then two finer ones about its best point (steps of 5e-4, then 1e-5)."""
    def best(grid):
        return grid[int(np.argmin([_reference_nll(z / math.exp(g), y, task) for g in grid]))]
    g = best(np.linspace(-3, 3, 241))
    g = best(np.linspace(g - 0.025, g + 0.025, 101))
    return math.exp(best(np.linspace(g - 5e-4, g + 5e-4, 101)))


def _sample(n: int, k: int, t: float, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return z * t, (p.cumsum(1) > rng.random((n, 1))).argmax(1)


@pytest.mark.parametrize("task,t,seed", [("multiclass", 0.4, 1), ("multiclass", 3.0, 2),
                                         ("multilabel", 1.7, 3), ("binary", 0.7, 4)])
def test_calibration_fit_is_the_argmin_of_the_nll(task, t, seed) -> None:
    """Against a grid search of an NLL written independently, on 120 images."""
    from kerascls.training.calibration import fit_temperature
    if task == "multiclass":
        z, y = _sample(120, 4, t, seed)
    else:
        rng = np.random.default_rng(seed)
        z = rng.normal(0, 2, (120, 3 if task == "multilabel" else 1))
        y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
        z = z * t
    want = _grid_temperature(z, y, task)
    assert 0.06 < want < 18  # inside the range, not at an end
    assert fit_temperature(z, y, task) == pytest.approx(want, rel=1e-4)


def test_calibration_fit_stops_at_the_ends_of_its_range() -> None:
    """Sure and always wrong: the NLL falls as T grows, the fit stops at e^3 (T ≈ 20);
    always right: it falls as T shrinks, the fit stops at e^-3 (T ≈ 0.05; logits of 0.5 so
    that the NLL at T = 0.05 is still above 0 in float64)."""
    from kerascls.training.calibration import fit_temperature
    z = np.array([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0], [6.0, 0.0, 0.0]])
    wrong, right = np.array([1, 2, 0, 2]), np.array([0, 1, 2, 0])
    assert fit_temperature(z, wrong) == pytest.approx(math.exp(3), rel=2e-4)
    z = z / 12
    assert fit_temperature(z, right) == pytest.approx(math.exp(-3), rel=2e-4)
    assert fit_temperature(z, right, tol=1e-6) == pytest.approx(math.exp(-3), rel=2e-6)


def test_calibration_nll_hand_worked() -> None:
    """p = 0.75, 0.25, 0.9 and 0.5 for the labelled class: NLL = -mean(log p), also for
    logits offset by 1000 (softmax and the log of it cannot overflow)."""
    from kerascls.training.calibration import nll
    z = np.array([[math.log(3), 0.0], [math.log(3), 0.0], [0.0, math.log(9)], [2.0, 2.0]])
    y = np.array([0, 1, 1, 0])
    want = -(math.log(0.75) + math.log(0.25) + math.log(0.9) + math.log(0.5)) / 4
    assert nll(z, y, "multiclass") == pytest.approx(want, rel=1e-12)
    assert nll(z + 1000, y.reshape(-1, 1), "multiclass") == pytest.approx(want, rel=1e-9)
    assert nll(z, y, "multiclass") == pytest.approx(_reference_nll(z, y, "multiclass"))
    # sigmoid: p(1) = 0.75 and 0.1; labels 1 and 0 -> -[log .75 + log .9] / 2; a sure wrong
    # logit of 800 costs 800
    s = np.array([[math.log(3)], [-math.log(9)]])
    assert nll(s, np.array([1.0, 0.0]), "binary") == pytest.approx(
        -(math.log(0.75) + math.log(0.9)) / 2, rel=1e-12)
    assert nll(np.array([[800.0, -800.0]]), np.array([[0.0, 0.0]]), "multilabel") == \
        pytest.approx(400.0, rel=1e-12)


def test_calibration_ece_hand_worked() -> None:
    """15 bins of 1/15. Softmax confidences 0.75 (right), 0.75 (wrong), 0.9 (right),
    0.5 (argmax 0, label 1: wrong): bins {0.75, 0.75} |0.5 - 0.75|, {0.9} 0.1, {0.5} 0.5
    -> ECE = (2·0.25 + 0.1 + 0.5) / 4 = 0.275."""
    from kerascls.training.calibration import quality
    z = np.array([[math.log(3), 0.0], [math.log(3), 0.0], [0.0, math.log(9)], [0.0, 0.0]])
    q = quality(z, np.array([0, 1, 1, 1]), "multiclass")
    assert q["ece"] == pytest.approx(0.275, abs=1e-9)
    assert q["nll"] == pytest.approx(-(math.log(.75) + math.log(.25) + math.log(.9)
                                       + math.log(.5)) / 4, rel=1e-12)
    # sigmoid outputs, each a binary decision: p = 0.75 (label 1: right, conf .75),
    # 0.1 (label 0: right, conf .9), 0.5 (label 0: right, conf .5), 0.9 (label 0: wrong)
    # -> (0.25 + 2·|0.5 - 0.9| + 0.5) / 4 = 0.3875
    s = np.array([[math.log(3), -math.log(9)], [0.0, math.log(9)]])
    q = quality(s, np.array([[1.0, 0.0], [0.0, 0.0]]), "multilabel")
    assert q["ece"] == pytest.approx(0.3875, abs=1e-9)


@builds_models
@pytest.mark.parametrize("task,units", [("multiclass", 3), ("multiclass", 2),
                                        ("multiclass", 1), ("binary", 1),
                                        ("multilabel", 3)])
def test_calibration_probabilities_are_the_heads_activation(task, units) -> None:
    """The numpy activation equals Keras' activation of the head for (task, units), with
    logits large enough to overflow a naive exp."""
    import keras

    from kerascls.training.calibration import probabilities
    from kerascls.training.heads import output_activation
    rng = np.random.default_rng(units)
    z = np.vstack([rng.normal(0, 3, (4, units)), np.linspace(-700, 700, units)[None]])
    want = keras.ops.convert_to_numpy(
        keras.activations.get(output_activation(task, units))(z.astype(np.float32)))
    got = probabilities(z, task)
    assert got.shape == z.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_calibration_separable_means_every_decision_right() -> None:
    from kerascls.training.calibration import separable
    z = np.array([[3.0, 0.0, 1.0], [0.0, 0.5, 2.0], [1.0, 4.0, 0.0]])
    assert separable(z, np.array([0, 2, 1]), "multiclass")
    assert separable(z, np.array([[0], [2], [1]]), "multiclass")
    assert not separable(z, np.array([0, 1, 1]), "multiclass")
    # four images of three classes: decided per image (row), never per class (column)
    w = np.array([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [4.0, 0.0, 0.5]])
    assert separable(w, np.array([1, 0, 2, 0]), "multiclass")
    assert not separable(w, np.array([1, 0, 2, 2]), "multiclass")
    s = np.array([[2.0, -1.0], [-0.5, 0.25]])
    assert separable(s, np.array([[1.0, 0.0], [0.0, 1.0]]), "multilabel")
    assert not separable(s, np.array([[1.0, 0.0], [1.0, 1.0]]), "multilabel")
    assert not separable(s, np.array([[1.0, 1.0], [0.0, 1.0]]), "multilabel")
    assert separable(np.array([[-0.1], [0.1]]), np.array([0.0, 1.0]), "binary")
    assert not separable(np.array([[0.1], [-0.1]]), np.array([0.0, 1.0]), "binary")


def test_calibration_one_unit_head_is_a_sigmoid_whatever_the_task() -> None:
    """One output is a sigmoid (heads.output_activation): probabilities, NLL, ECE and the
    separability check of a one-unit "multiclass" head are the binary head's."""
    from kerascls.training import calibration as C
    z = np.array([[math.log(3)], [-math.log(9)], [0.5], [-2.0]])
    y = np.array([1, 0, 0, 0])
    for f in (C.nll, C.quality, C.separable):
        assert f(z, y, "multiclass") == f(z, y, "binary"), f.__name__
    np.testing.assert_array_equal(C.probabilities(z, "multiclass"), C.probabilities(z, "binary"))
    assert C.nll(z, y, "multiclass") == pytest.approx(_reference_nll(z, y, "binary"))
    assert not C.separable(z, y, "multiclass") and C.separable(z, np.array([1, 0, 1, 0]),
                                                                "multiclass")


@builds_models
def test_calibration_separable_is_keras_accuracy_of_one() -> None:
    """Every sigmoid decision right by Keras' own rule for a logits head (BinaryAccuracy at
    threshold 0: a logit of exactly 0 decides 0)."""
    import keras

    from kerascls.training.calibration import separable
    cases = [(np.array([[0.0, 1.5], [-2.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 0.0]])),
             (np.array([[0.0, 1.5], [-2.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])),
             (np.array([[0.25], [-0.25]]), np.array([[1.0], [0.0]])),
             (np.array([[0.25], [-0.25]]), np.array([[0.0], [0.0]]))]
    for z, y in cases:
        acc = keras.metrics.BinaryAccuracy(threshold=0.0)
        acc.update_state(y.astype(np.float32), z.astype(np.float32))
        for task in ("multilabel", "binary"):
            assert separable(z, y, task) == (float(acc.result()) == 1.0), (z, y)


def test_calibration_labels_for_each_task() -> None:
    from kerascls.training.calibration import labels_for
    onehot = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float32)
    np.testing.assert_array_equal(labels_for(onehot, "multiclass"), [2, 0, 1])
    sparse = np.array([2, 0, 1])
    np.testing.assert_array_equal(labels_for(sparse, "multiclass"), sparse)
    np.testing.assert_array_equal(labels_for(onehot, "multilabel"), onehot)


def _headed(units: int = 3, head=None):
    """Input(4) -> Dense(5) -> Dropout -> head (Dense ``head`` by default) -> softmax
    ``predictions``: logits are read in inference mode (no dropout)."""
    import keras
    keras.utils.set_random_seed(1)
    inp = keras.Input((4,))
    x = keras.layers.Dense(5, activation="relu", name="body")(inp)
    x = keras.layers.Dropout(0.5)(x)
    x = (head or keras.layers.Dense(units, name="head"))(x)
    return keras.Model(inp, keras.layers.Activation("softmax", name="predictions")(x))


@builds_models
def test_calibration_logits_come_from_the_head_in_dataset_order() -> None:
    """Logits (before the softmax) and labels of three batches (4 + 4 + 2), in order,
    against the layers' weights applied in numpy."""
    from kerascls.training.calibration import predict_logits
    model = _headed()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    y = np.arange(10) % 3
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 10, 4)]
    z, labels = predict_logits(model, batches)
    (w1, b1), (w2, b2) = (model.get_layer(n).get_weights() for n in ("body", "head"))
    np.testing.assert_allclose(z, np.maximum(x @ w1 + b1, 0) @ w2 + b2, rtol=1e-5, atol=1e-6)
    assert z.dtype == np.float32 and z.shape == (10, 3)
    np.testing.assert_array_equal(labels, y)


@builds_models
def test_calibration_folds_into_a_dense_head_only(tmp_path) -> None:
    """A folded T gives softmax(logits / T); a model without a Dense ``head`` says why not."""
    import keras

    from kerascls.training.calibration import fold_temperature, why_not
    model = _headed()
    assert why_not(model) is None
    x = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    w1, b1 = model.get_layer("body").get_weights()
    w2, b2 = model.get_layer("head").get_weights()
    z = (np.maximum(x @ w1 + b1, 0) @ w2 + b2).astype(np.float64) / 2.5
    fold_temperature(model, 2.5)
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict_on_batch(x), want, rtol=1e-5, atol=1e-6)
    assert why_not(_headed(head=keras.layers.Dense(3, name="logits"))) == \
        "the model has no 'head' layer"
    assert why_not(_headed(head=keras.layers.Activation("linear", name="head"))) == \
        "its 'head' layer is a Activation, not Dense"


@pytest.mark.parametrize("text", ["{not json", '{"calibration": [1.5]}', '[1, 2]',
                                  '{"calibration": {"temperature": null}}', '{}'])
def test_calibration_bundle_entry_without_a_fitted_temperature(tmp_path, text) -> None:
    from kerascls.training.calibration import bundle_entry
    (tmp_path / "metrics.json").write_text(text)
    assert bundle_entry(tmp_path) == {}


def test_calibration_bundle_entry_records_where_it_was_fitted(tmp_path) -> None:
    from kerascls.training.calibration import bundle_entry
    (tmp_path / "metrics.json").write_text('{"calibration": {"temperature": 0.8}}')
    assert bundle_entry(tmp_path) == {"calibration": {
        "method": "temperature", "temperature": 0.8, "folded_into_head": True,
        "fitted_on": None}}
