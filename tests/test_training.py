"""Training pieces: config merging, schedules, history without duplicates, NaN stop,
transfer learning (frozen backbone, new head, two phases)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from kerascls.errors import UserError
from kerascls.training import train as T
from kerascls.training.callbacks import EpochHistory, StopOnNaN
from kerascls.training.config import TrainConfig, merge_config
from kerascls.training.distribute import _cpu_has_bf16, auto_precision
from tests.conftest import needs_debian


def test_config_file_values_yield_to_explicit_flags(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"epochs": 3, "learning_rate": 0.1, "arch": "resnet18",
                                "class_names": ["stale"]}))
    values = merge_config(str(file), {"epochs": 5}, {"epochs": 8, "learning_rate": 3e-3,
                                                      "arch": "small_cnn"})
    assert values == {"epochs": 5, "learning_rate": 0.1, "arch": "resnet18"}
    file.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match="unknown config keys"):
        merge_config(str(file), {}, {})


@pytest.mark.parametrize("name", ["cosine", "step"])
def test_lr_schedules(name):
    cfg = TrainConfig(lr_schedule=name, learning_rate=1.0, warmup_steps=10)
    sched = T._schedule(cfg, 100, 1.0)
    lr = [float(sched(s)) for s in (0, 10, 60, 80, 99)]
    if name == "step":
        assert lr == pytest.approx([1.0, 1.0, 0.1, 0.01, 0.01])
    else:
        assert lr[0] == 0 and lr[1] == pytest.approx(1.0) and lr[1] > lr[2] > lr[3] > lr[4]


class _FakeOptimizer:
    learning_rate = 0.5


def test_history_keeps_one_row_per_epoch_across_a_resume(tmp_path):
    cb = EpochHistory(tmp_path / "history.csv")
    cb.set_model(type("M", (), {"optimizer": _FakeOptimizer()})())
    for epoch in (0, 1, 2, 1, 2, 3):  # crash after epoch 2's row, resume from epoch 1
        cb.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[0]["learning_rate"]) == 0.5


def test_nan_loss_stops_with_one_clear_line():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.ones((64, 4), np.float32)
    x[40] = np.nan  # batch 3 of 8-image batches
    nan = StopOnNaN()
    model.fit(x, np.zeros(64), batch_size=8, epochs=3, callbacks=[nan], verbose=0,
              shuffle=False)
    assert nan.where[:2] == (1, 6)
    with pytest.raises(FloatingPointError) as err:
        nan.raise_if_stopped()
    assert "\n" not in str(err.value) and "epoch 1, batch 6" in str(err.value)


def _backbone(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for layer in model.layers if layer.name not in T.HEAD_LAYERS
            for w in layer.weights]


@needs_debian
def test_transfer_from_classes_0_4_to_5_9(tmp_path):
    """Frozen phase leaves every backbone weight (BatchNorm statistics too) unchanged and
    trains a fresh head; the fine-tuning phase then changes the backbone."""
    common = dict(epochs=1, max_train_images=2000, batch_size=64, val_fraction=0.1)
    src = T.train(TrainConfig(data="fashion_mnist:classes=0-4", output_dir=str(tmp_path / "a"),
                              **common))
    dst = T.train(TrainConfig(data="fashion_mnist:classes=5-9", output_dir=str(tmp_path / "b"),
                              weights=str(src), finetune_epochs=1, **common))
    source = keras.saving.load_model(src / "model.keras")
    phase1 = T.create_model("small_cnn", 5, (28, 28, 1))
    phase1.load_weights(dst / "train.weights.h5")
    final = keras.saving.load_model(dst / "model.keras")
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in source.layers)
    for a, b in zip(_backbone(source), _backbone(phase1)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(source.get_layer("head").kernel, phase1.get_layer("head").kernel)
    assert any(not np.allclose(a, b) for a, b in zip(_backbone(phase1), _backbone(final)))
    # --mixed_precision auto (the default) is resolved in config.json, and the saved model
    # computes in float32 whatever the run trained in: what export and evaluate ship
    assert json.loads((dst / "config.json").read_text())["mixed_precision"] == \
        auto_precision()
    assert {layer.dtype_policy.name for layer in final._flatten_layers()} == {"float32"}
    rows = list(csv.DictReader(open(dst / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["learning_rate"]) <= 0.1 * 3e-3 + 1e-12
    metrics = json.loads((dst / "metrics.json").read_text())
    assert metrics["count"] == 5000 and metrics["accuracy"] > 0.6  # 5 classes: chance 0.2


@needs_debian
def test_cli_config_file_precision_xla_and_step_schedule(cli, tmp_path):
    """A config file supplies settings, explicit flags override it; bfloat16 compute + XLA
    + step schedule train; the resolved config and the report land in the run."""
    file = tmp_path / "base.json"
    file.write_text(json.dumps({"epochs": 5, "batch_size": 32, "lr_schedule": "step",
                                "max_train_images": 640, "val_fraction": 0.1}))
    run = tmp_path / "run"
    cli("train", f"--config={file}", "--epochs=1", "--batch_size=64",
        "--mixed_precision=mixed_bfloat16", "--xla", f"--output_dir={run}")
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr_schedule"]) == (1, 64, "step")
    assert cfg["mixed_precision"] == "mixed_bfloat16" and cfg["xla"] is True
    saved = keras.saving.load_model(run / "model.keras")  # converted at the end of training
    assert {layer.dtype_policy.name for layer in saved._flatten_layers()} == {"float32"}
    assert (run / "report" / "training_curves.png").exists()
    assert any((run / "logs" / "train").iterdir())  # TensorBoard events
    assert keras.config.dtype_policy().name == "float32"  # (in this process: untouched)
    before = (run / "model.keras").read_bytes()
    again = cli("train", f"--config={file}", f"--output_dir={run}", check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith(
        f"kerascls: error: train: {run} already holds a finished run")
    assert (run / "model.keras").read_bytes() == before  # the finished run is untouched


def test_only_overwrite_retrains_a_finished_run(tmp_path):
    T.refuse_finished_run(tmp_path, overwrite=False)  # empty: a new run
    (tmp_path / "model.keras").write_bytes(b"trained")
    with pytest.raises(FileExistsError, match="--overwrite"):
        T.refuse_finished_run(tmp_path, overwrite=False)
    T.refuse_finished_run(tmp_path, overwrite=True)
    (tmp_path / "backup_finetune").mkdir()  # killed in a later phase: resume, not refuse
    T.refuse_finished_run(tmp_path, overwrite=False)


@needs_debian
def test_cli_nan_loss_stops_the_run_with_one_line(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "--optimizer=sgd", "--learning_rate=1e12", "--max_train_images=640",
               "--epochs=2", "--batch_size=64", f"--output_dir={run}", check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kerascls: error: train: training diverged: loss became nan")
    assert "Traceback" not in proc.stderr and not (run / "model.keras").exists()


@pytest.mark.parametrize("flags, native", [
    ("fpu vme avx512_bf16 amx_bf16 amx_tile amx_int8", True),
    ("fpu vme avx512f avx512_bf16 avx512_vnni", True),  # bf16 dot products (Zen 4/5)
    ("fpu vme avx512f avx512_vnni avx512_fp16", False),
    ("fpu vme amx_tile amx_int8", False),
])
def test_cpu_bfloat16_is_read_from_cpuinfo_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: some cpu amx_bf16\nflags\t\t: {flags}\n")
    assert _cpu_has_bf16(str(info)) is native
    assert _cpu_has_bf16(str(tmp_path / "missing")) is False


def test_auto_precision_off_without_onednn(monkeypatch):
    """A CPU run picks bfloat16 only with bfloat16 instructions and oneDNN's kernels on."""
    expected = "mixed_bfloat16" if _cpu_has_bf16() else "none"
    assert auto_precision("cpu:1") == expected
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert auto_precision("cpu:1") == "none"


HOLD_LOCK = """
import sys
from kerascls_edge.journal import OutputLock
with OutputLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@needs_debian
def test_second_training_on_one_output_dir_is_refused_until_the_first_dies(tmp_path):
    """Another process training into the same --output_dir: this one stops before writing
    anything; once that process is killed (kill -9 leaves its lock file), training may go on."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(output_dir=str(run), epochs=1, max_train_images=640)
        with pytest.raises(UserError, match=f"another run \\(pid {holder.pid}\\)"):
            T.train(cfg)
        assert list(run.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".run.lock").exists()
    with T._run_lock(run):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())


def test_resume_keeps_the_precision_the_interrupted_run_started_with(tmp_path):
    """``auto`` on a resume means what it meant when the run began (config.json), not what
    it means today; a run without resume state resolves it anew."""
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    started = "none" if auto_precision() == "mixed_bfloat16" else "mixed_bfloat16"
    (run / "config.json").write_text(json.dumps({"mixed_precision": started}))
    source = types.SimpleNamespace(image_shape=(28, 28, 1), class_names=["a", "b"])
    fresh = dict(arch="small_cnn", output_dir=str(run), mixed_precision="auto")
    assert T.resolve(TrainConfig(**fresh), source).mixed_precision == started
    explicit = T.resolve(TrainConfig(**{**fresh, "mixed_precision": "mixed_float16"}), source)
    assert explicit.mixed_precision == "mixed_float16"
    (run / "backup").rmdir()
    assert T.resolve(TrainConfig(**fresh), source).mixed_precision == auto_precision()


@needs_debian
def test_augment_reaches_in_memory_training_data(tmp_path):
    """``--augment flip`` on Fashion-MNIST mirrors images of the training batches (the same
    shuffle otherwise); it used to be ignored for in-memory data without a word."""
    from kerascls.data.sources import load_source
    source = load_source("fashion_mnist")
    first = {}
    for augment in ("", "flip"):
        cfg = T.resolve(TrainConfig(max_train_images=600, batch_size=64, augment=augment,
                                    output_dir=str(tmp_path)), source)
        first[augment] = next(iter(T._array_data(cfg, source)["train"]))[0].numpy()
    plain, flipped = first[""].astype(np.float32), first["flip"]
    mirrored = [np.array_equal(f, p[:, ::-1]) and not np.array_equal(p, p[:, ::-1])
                for f, p in zip(flipped, plain)]
    kept = [np.array_equal(f, p) for f, p in zip(flipped, plain)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54
