"""Heads and labels that cannot silently train wrong.

A logits head trains with ``from_logits`` losses and logit-aware metrics (and reaches the
softmax head's accuracy), its export carries the softmax that model.json names; one class
is refused before a run directory exists; a class folder named ``a|b`` survives the run's
split files; every image ``evaluate`` leaves out is said on stderr. Images are rendered
here: textures whose stripe frequency, angle and tint tell the classes apart, at awkward
sizes, saved as JPEG.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from kerascls.data.records import Record, read_split_csv, write_split_csv
from kerascls.training import heads
from kerascls.training.config import TrainConfig
from kerascls.training.train import train

SIZES = ((97, 61), (150, 113), (61, 97), (201, 149), (64, 64), (123, 89))  # (w, h)
CLASSES = {"stripes_fine": (9.0, 0.3, (1.0, 0.8, 0.6)),      # frequency, angle, tint
           "stripes_coarse": (2.5, 1.2, (0.6, 0.9, 1.0)),
           "rings": (5.0, None, (0.9, 1.0, 0.7))}


def texture(cls: str, w: int, h: int, seed: int) -> np.ndarray:
    """A photo-like RGB image of a class: its pattern, tint, soft light and grain."""
    freq, angle, tint = CLASSES.get(cls, (4.0, 0.7, (1.0, 1.0, 1.0)))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi)
    if angle is None:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        pattern = np.sin(2 * np.pi * freq * np.hypot(xx - cx, yy - cy) + phase)
    else:
        a = angle + rng.normal(0, 0.15)
        pattern = np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)) + phase)
    light = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * (xx + yy) + phase)
    base = (110 + 70 * pattern) * light
    img = np.stack([base * t for t in tint], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render_folder(root: Path, per_class: int, classes=tuple(CLASSES), seed: int = 0,
                  sizes=SIZES) -> Path:
    """``root/CLASS/*.jpg`` at awkward sizes; returns root."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(i + c) % len(sizes)]
            Image.fromarray(texture(cls, w, h, seed + 1000 * c + i)).save(
                root / cls / f"img{i:03d}.jpg", quality=90)
    return root


def small_run(data: Path, out: Path, **kw) -> TrainConfig:
    """A tiny, real training config on image files (32×32, small_cnn, a few epochs)."""
    base = {"arch": "small_cnn", "data": f"folder:{data}", "epochs": 6, "batch_size": 16,
            "image_size": 32, "learning_rate": 3e-3, "warmup_steps": 5, "val_fraction": 0.15,
            "test_fraction": 0.2, "output_dir": str(out), "seed": 0,
            "model_args": {"widths": [8, 16, 32]}}
    base.update(kw)
    if "model_args" in kw:
        base["model_args"] = {"widths": [8, 16, 32], **kw["model_args"]}
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    return render_folder(tmp_path_factory.mktemp("data") / "three", per_class=30)


def test_logits_head_trains_like_softmax(three_classes, tmp_path):
    """Same seed and data: a logits head must learn as the softmax head does."""
    from kerascls.evaluation.evaluate import evaluate
    accs = {}
    for name, args in (("softmax", {}), ("logits", {"logits": True})):
        run = train(small_run(three_classes, tmp_path / name, model_args=args))
        metrics = json.loads((run / "metrics.json").read_text())
        accs[name] = metrics["accuracy"]
        assert 0.0 <= metrics["loss"] < 5.0  # NLL of probabilities, not of raw logits
        report = evaluate(run)  # the saved model outputs logits; evaluate reads probabilities
        assert abs(report["accuracy"] - metrics["accuracy"]) < 1e-6
        assert report["ece"] < 0.5 and report["nll"] == pytest.approx(metrics["loss"], 1e-3)
    assert accs["softmax"] >= 0.8, accs  # 3 classes: chance is 1/3
    assert accs["logits"] >= accs["softmax"] - 0.1, accs


def test_logit_losses_equal_probability_losses():
    """from_logits on logits == the same loss on their softmax/sigmoid (every task)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (8, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    for task, labels, act in (("multiclass", y, keras.ops.softmax),
                              ("multilabel", (z > 0.5).astype("float32"), keras.ops.sigmoid)):
        for smoothing in (0.0, 0.1):
            cfg = TrainConfig(model_args={"task": task}, label_smoothing=smoothing)
            logit = TrainConfig(model_args={"task": task, "logits": True},
                                label_smoothing=smoothing)
            a = float(heads.loss(cfg, 3, False)(labels, act(z)))
            b = float(heads.loss(logit, 3, False)(labels, z))
            assert abs(a - b) < 1e-4, (task, smoothing, a, b)
    acc = heads.metrics(TrainConfig(model_args={"task": "binary", "logits": True}), False)[0]
    acc.update_state(np.array([[1.0], [0.0]]), np.array([[0.2], [-0.3]]))  # logits 0.2, -0.3
    assert float(acc.result()) == 1.0  # sigmoid(0.2) > 0.5: a logit decision at 0


def test_one_class_refused_before_run_dir(tmp_path, cli):
    data = render_folder(tmp_path / "one", per_class=4, classes=("deer",))
    with pytest.raises(ValueError, match="at least 2 classes"):
        train(small_run(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    proc = cli("train", f"--data=folder:{data}", f"--output_dir={tmp_path / 'run2'}",
               "--epochs=1", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("kerascls: error:") and "at least 2 classes" in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run2").exists()


def test_label_separator_round_trip(tmp_path):
    """``a|b`` as one label and ``a``+``b`` as two stay apart through a split file."""
    records = [Record("x.jpg", ("cat|dog",)), Record("y.jpg", ("cat", "dog")),
               Record("z.jpg", ("back\\slash",)), Record("w.jpg", ("plain",))]
    write_split_csv(records, tmp_path / "split.csv")
    assert [r.labels for r in read_split_csv(tmp_path / "split.csv")] == \
        [r.labels for r in records]


def test_separator_class_folder_evaluates_every_image(tmp_path, capfd):
    """A class folder named ``a|b``: every test image is scored, none skipped."""
    from kerascls.evaluation.evaluate import evaluate
    data = render_folder(tmp_path / "sep", per_class=10,
                         classes=("stripes_fine", "stripes|coarse"))
    run = train(small_run(data, tmp_path / "run", epochs=1))
    test_rows = read_split_csv(run / "splits" / "test.csv")
    assert {r.labels for r in test_rows} <= {("stripes_fine",), ("stripes|coarse",)}
    report = evaluate(run)
    assert report["count"] == len(test_rows) >= 4
    assert report["skipped"]["count"] == 0 and "warning" not in capfd.readouterr().err


def test_evaluate_reports_skipped_images_on_stderr(tmp_path, capfd):
    from kerascls.evaluation.evaluate import evaluate
    data = render_folder(tmp_path / "d", per_class=10, classes=("stripes_fine", "rings"))
    run = train(small_run(data, tmp_path / "run", epochs=1))
    rows = read_split_csv(run / "splits" / "test.csv")
    Path(rows[0].path).write_bytes(b"not a jpeg any more")  # unreadable since training
    rows[1] = Record(rows[1].path, ("zebra",))              # a class the model never saw
    write_split_csv(rows, run / "splits" / "test.csv")
    capfd.readouterr()
    report = evaluate(run)
    err = capfd.readouterr().err
    assert report["count"] == len(rows) - 2
    assert report["skipped"] == {"count": 2, "unknown_label": 1, "unreadable": 1}
    assert f"scored {len(rows) - 2} of {len(rows)} images" in err
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    assert saved["skipped"]["count"] == 2
