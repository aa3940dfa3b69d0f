"""``kerascls evaluate``: the report folder (metrics, per-class CSV, figures) of a model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.test_fashion_mnist import needs_debian


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    from kerascls.models import create_model
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("m") / "model.keras"
    create_model("small_cnn", 10, (28, 28, 1)).save(path)
    return path


@needs_debian
def test_evaluate_writes_the_report(cli, model_file, tmp_path):
    out = tmp_path / "eval"
    proc = cli("evaluate", f"--model={model_file}", "--data=fashion_mnist",
               f"--output_dir={out}")
    assert "test accuracy:" in proc.stdout and "ECE:" in proc.stdout
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["count"] == 10_000 and 0 <= rep["accuracy"] <= rep["top5_accuracy"] <= 1
    assert np.asarray(rep["confusion_matrix"]).sum() == 10_000
    assert rep["nll"] == pytest.approx(-rep["log_likelihood"] / 10_000)
    rows = list(csv.DictReader(open(out / "per_class.csv")))
    assert [r["class"] for r in rows][:2] == ["T-shirt/top", "Trouser"]
    for png in ("confusion_matrix.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "empty_filter.csv").exists()  # no class named empty


def test_report_with_an_empty_class(tmp_path):
    from kerascls.evaluation.evaluate import summary_lines, write_report
    from kerascls.evaluation.metrics import classification_report
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = np.full((200, 3), 0.05)
    probs[np.arange(200), y] = 0.9
    rep = classification_report(probs, y, ["deer", "empty", "fox"])
    rep.update(model="m", data="d", split="test", output_dir=str(tmp_path))
    write_report(rep, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "empty_filter.csv")))
    assert rows[0].keys() == {"threshold", "discarded", "precision", "recall", "animals_lost"}
    assert any(line.startswith("empty filter:") for line in summary_lines(rep))
