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

from kerascls.data.records import Record, read_split_csv, write_split_csv
from kerascls.training import heads
from kerascls.training.config import TrainConfig
from kerascls.training.train import train
from tests.scenes import (  # noqa: F401 (SIZES, texture: re-exported for other modules)
    CLASSES,
    SIZES,
    render_folder,
    small_run,
    texture,
)

pytestmark = pytest.mark.usefixtures("free_keras_memory")  # tests/conftest.py


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    return render_folder(tmp_path_factory.mktemp("data") / "three", per_class=30)


def test_logits_head_trains_like_softmax(three_classes, tmp_path):
    """Same seed and data: a logits head must learn as the softmax head does."""
    from kerascls.evaluation.evaluate import evaluate
    accs = {}
    for name, args in (("softmax", {}), ("logits", {"logits": True})):
        run = train(small_run(three_classes, tmp_path / name, model_args=args,
                              label_smoothing=0.0))  # the ≥ 0.8 below was set without it
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
