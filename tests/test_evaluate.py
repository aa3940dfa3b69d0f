"""``kerascls evaluate``: the report folder (metrics, per-class CSV, figures) of a model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import needs_debian


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    from kerascls.models import create_model
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("m") / "model.keras"
    create_model("small_cnn", 10, (28, 28, 1)).save(path)
    return path


def _idx_test_set() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's test split read straight from the IDX files (header: 4-byte magic,
    then one big-endian uint32 per dimension)."""
    import gzip

    from kerascls.data.fashion_mnist import DEBIAN_DIR

    def read(name: str, header: int) -> np.ndarray:
        with gzip.open(DEBIAN_DIR / name) as f:
            return np.frombuffer(f.read(), np.uint8)[header:]
    x = read("t10k-images-idx3-ubyte.gz", 16).reshape(10_000, 28, 28, 1)
    return x, read("t10k-labels-idx1-ubyte.gz", 8).astype(int)


def _predict(model_file, x: np.ndarray) -> np.ndarray:
    import kerascls
    model = kerascls.load_model(model_file)
    return np.asarray(model.predict(x.astype("float32"), batch_size=500, verbose=0), np.float64)


@needs_debian
def test_evaluate_writes_the_report(cli, model_file, tmp_path):
    out = tmp_path / "eval"
    proc = cli("evaluate", f"--model={model_file}", "--data=fashion_mnist",
               f"--output_dir={out}")
    assert "test accuracy:" in proc.stdout and "ECE:" in proc.stdout
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["count"] == 10_000 and 0 <= rep["accuracy"] <= rep["top5_accuracy"] <= 1
    assert np.asarray(rep["confusion_matrix"]).sum() == 10_000
    # the same numbers from another path: the IDX files parsed here, Keras predictions,
    # scikit-learn's metrics
    skm = pytest.importorskip("sklearn.metrics")
    x, y = _idx_test_set()
    probs = _predict(model_file, x)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)), abs=1e-4)
    assert rep["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs, k=5, labels=range(10)), abs=1e-4)
    assert rep["nll"] == pytest.approx(skm.log_loss(y, probs, labels=range(10)), rel=1e-3)
    assert rep["log_likelihood"] == pytest.approx(-10_000 * rep["nll"], rel=1e-9)
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


def _render(folder, rows: list[tuple[str, tuple[str, ...]]]) -> None:
    """32×32 pictures: a red square for deer, a blue bar for fox, noise only for empty."""
    from PIL import Image
    rng = np.random.default_rng(0)
    lines = ["filepath,label"]
    for name, labels in rows:
        img = rng.integers(60, 120, (32, 32, 3)).astype(np.uint8)
        if "deer" in labels:
            img[4:14, 4:14] = (220, 30, 30)
        if "fox" in labels:
            img[18:28, 6:26] = (30, 30, 220)
        Image.fromarray(img).save(folder / name)
        lines.append(f"{name},{'|'.join(labels)}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow  # ~30 s; the report's maths: test_metrics (default)
def test_multilabel_run_evaluates_per_class_ap(cli, tmp_path):
    sets = [("deer",), ("fox",), ("deer", "fox"), ("empty",)]
    _render(tmp_path, [(f"{i}.png", sets[i % 4]) for i in range(160)])
    run = tmp_path / "run"
    cli("train", f"--data=csv:{tmp_path / 'labels.csv'}", "--arch=small_cnn", "--epochs=3",
        "--batch_size=16", "--model_arg", "task=multilabel", "--test_fraction=0.25",
        f"--output_dir={run}", timeout=600)
    out = cli("evaluate", f"--model={run}").stdout
    assert "mAP:" in out and "exact match:" in out
    rep = json.loads((run / "eval" / "metrics.json").read_text())
    assert rep["task"] == "multilabel" and rep["class_names"] == ["deer", "empty", "fox"]
    assert rep["count"] >= 30 and 0 <= rep["exact_match"] <= 1
    rows = list(csv.DictReader(open(run / "eval" / "per_class.csv")))
    assert [r["class"] for r in rows] == ["deer", "empty", "fox"]
    support = {r["class"]: int(r["support"]) for r in rows}
    assert support["deer"] > support["empty"] > 0  # deer is in half the images, empty in a quarter
    assert rep["mAP"] > 0.6  # three easy cues: well above the ~0.4 of random scores
    assert not (run / "eval" / "confusion_matrix.png").exists()


@pytest.mark.slow  # ~30 s; the report's maths: test_metrics (default)
def test_binary_run_evaluates_both_classes(cli, tmp_path):
    _render(tmp_path, [(f"{i}.png", ("deer",) if i % 2 else ("empty",)) for i in range(120)])
    run = tmp_path / "run"
    cli("train", f"--data=csv:{tmp_path / 'labels.csv'}", "--arch=small_cnn", "--epochs=3",
        "--batch_size=16", "--model_arg", "task=binary", "--test_fraction=0.25",
        f"--output_dir={run}", timeout=600)
    cli("evaluate", f"--model={run}")
    rep = json.loads((run / "eval" / "metrics.json").read_text())
    assert rep["class_names"] == ["deer", "empty"] and rep["empty_class"] == "empty"
    assert np.asarray(rep["confusion_matrix"]).shape == (2, 2)
    assert rep["accuracy"] > 0.8 and rep["count"] == np.asarray(rep["confusion_matrix"]).sum()
    cli("export", f"--model={run}", "--calibration_samples=32", "--parity_samples=500")
    parity = json.loads((run / "bundle" / "report.json").read_text())["parity"]
    assert parity["images"] == rep["count"]  # the same held-out images
    assert parity["keras_accuracy"] == pytest.approx(rep["accuracy"])
