"""Frozen phases on cached backbone features (issue 28, point 1).

Real runs on rendered photo-like JPEG folders: the head trained on cached features equals
the one trained with the backbone run every step; a run killed mid frozen phase resumes on
the same cache file; a changed image, image size or weights file recomputes it.
"""

from __future__ import annotations

import csv
import dataclasses

import keras
import numpy as np
import pytest
from PIL import Image

from kerascls.models import create_model
from kerascls.training import callbacks, feature_cache
from kerascls.training import train as T
from tests.scenes import render_folder, small_run, texture

pytestmark = pytest.mark.usefixtures("free_keras_memory")


class Crash(Exception):
    """Stands for a kill: raised right after Backup saved the state of a chosen epoch."""


@pytest.fixture
def crash_after_epoch(monkeypatch):
    """Make the run stop (as a crash would) once Backup has saved after epoch ``n`` (0-based)."""
    def arm(n: int | None) -> None:
        save = callbacks.Backup.__dict__.get("_save_model_real", callbacks.Backup._save_model)
        monkeypatch.setattr(callbacks.Backup, "_save_model_real", save, raising=False)

        def _save_model(self):
            save(self)
            if n is not None and self._current_epoch == n + 1:
                raise Crash(f"after epoch {n}")
        monkeypatch.setattr(callbacks.Backup, "_save_model", _save_model)
    return arm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return render_folder(tmp_path_factory.mktemp("scenes"), per_class=12)


def _weights(run) -> list[np.ndarray]:
    model = keras.saving.load_model(run / "model.keras")
    return [np.asarray(w) for w in model.weights]


def _cache_file(run):
    return run / feature_cache.CACHE_DIR / "train.features.npy"


def test_head_on_cached_features_equals_the_uncached_head(folder, tmp_path, capsys):
    """Same seed, no augmentation: cached and uncached frozen phases give the same model
    (small_cnn: BatchNorm in the backbone, dropout before the head)."""
    runs = {}
    for mode in ("auto", "off"):
        cfg = small_run(folder, tmp_path / mode, epochs=3, freeze_backbone=True,
                        feature_cache=mode, calibrate=False)
        runs[mode] = T.train(cfg)
    out = capsys.readouterr().out
    assert "feature cache train: 21 images × 1 view" in out and "computed now: 21" in out
    assert not (runs["auto"] / feature_cache.CACHE_DIR).exists()  # removed after the phase
    cached, plain = _weights(runs["auto"]), _weights(runs["off"])
    for a, b in zip(cached, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    start = create_model("small_cnn", 3, (32, 32, 3), widths=[8, 16, 32])
    assert not np.allclose(keras.saving.load_model(runs["auto"] / "model.keras")
                           .get_layer("head").kernel, start.get_layer("head").kernel)
    rows = {m: list(csv.DictReader(open(r / "history.csv"))) for m, r in runs.items()}
    assert [float(r["loss"]) for r in rows["auto"]] == pytest.approx(
        [float(r["loss"]) for r in rows["off"]], rel=1e-4)


def test_split_keeps_dropout_with_the_head():
    model = create_model("efficientnetv2_b0", 4, (32, 32, 3))
    backbone, head = feature_cache.split_model(model)
    assert backbone.output_shape == (None, 1280)
    assert [type(layer).__name__ for layer in head.layers[1:]] == [
        "Dropout", "Dense", "Activation"]
    assert not any(layer.name == "head" for layer in backbone.layers)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(head(backbone(x)), model(x), rtol=1e-5, atol=1e-6)


def test_resume_mid_frozen_phase_reuses_the_cache_file(folder, tmp_path, capsys,
                                                       crash_after_epoch):
    """Killed in epoch 1 of the frozen phase, then in epoch 2: the second run reads the
    file the first wrote (same inode and mtime, 0 backbone passes); the third finishes."""
    cfg = small_run(folder, tmp_path / "run", epochs=4, finetune_epochs=1)
    crash_after_epoch(0)
    with pytest.raises(Crash):
        T.train(dataclasses.replace(cfg))
    first = _cache_file(tmp_path / "run").stat()
    assert "computed now: 21 backbone passes" in capsys.readouterr().out
    crash_after_epoch(1)
    with pytest.raises(Crash):
        T.train(dataclasses.replace(cfg))
    out = capsys.readouterr().out
    assert "feature cache train: 21 images × 1 view" in out and "reused: 0 backbone" in out
    assert "computed now" not in out and "Epoch 1/4" not in out and "Epoch 2/4" in out
    second = _cache_file(tmp_path / "run").stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    crash_after_epoch(None)
    run = T.train(dataclasses.replace(cfg))
    assert "reused: 0 backbone passes" in capsys.readouterr().out
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]
    assert epochs == [0, 1, 2, 3, 4] and (run / "model.keras").exists()
    assert not (run / feature_cache.CACHE_DIR).exists() and not list(run.glob("backup*"))


def _change_image(cfg, folder):
    """Re-render one training image in place (same name, same size, other pixels)."""
    with open(f"{cfg.output_dir}/splits/train.csv", newline="") as f:
        path = next(csv.DictReader(f))["filepath"]
    w, h = Image.open(path).size
    Image.fromarray(texture("rings", w, h, seed=999)).save(path, quality=90)
    return cfg


def _change_size(cfg, folder):
    return dataclasses.replace(cfg, image_size=40)


def _change_weights(cfg, folder):
    model = create_model("small_cnn", 3, (32, 32, 3), widths=[8, 16, 32])
    conv = next(layer for layer in model.layers if layer.weights)  # the first conv
    conv.weights[0].assign(conv.weights[0] * 1.5)
    model.save_weights(cfg.weights)  # the same path, other values
    return cfg


@pytest.mark.parametrize("change", [  # two in CI's slow step: the default run's time budget
    _change_image, pytest.param(_change_size, marks=pytest.mark.slow),
    pytest.param(_change_weights, marks=pytest.mark.slow)],
    ids=["image_content", "image_size", "weights_file"])
def test_a_changed_input_recomputes_the_cache(tmp_path, capsys, crash_after_epoch, change):
    folder = render_folder(tmp_path / "data", per_class=8)
    weights = tmp_path / "start.weights.h5"
    create_model("small_cnn", 3, (32, 32, 3), widths=[8, 16, 32]).save_weights(weights)
    cfg = small_run(folder, tmp_path / "run", epochs=3, freeze_backbone=True,
                    weights=str(weights))
    crash_after_epoch(0)
    with pytest.raises(Crash):
        T.train(dataclasses.replace(cfg))
    capsys.readouterr()
    crash_after_epoch(None)
    T.train(change(dataclasses.replace(cfg), folder))
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("feature cache train:"))
    assert "computed now: 15 backbone passes" in line
