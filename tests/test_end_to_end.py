"""A tiny but real pass through the flow: train → evaluate → export → predict."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from kerascls.data import fashion_mnist as fm
from tests.conftest import needs_debian


@pytest.mark.slow  # the default run's time budget (issue 26): CI's slow step runs it
@needs_debian
def test_train_export_predict_on_a_slice(cli, tmp_path):
    run = tmp_path / "run"
    out = cli("train", "--epochs=2", "--max_train_images=3000", "--batch_size=64",
              f"--output_dir={run}").stdout
    assert "accuracy:" in out
    for name in ("model.keras", "config.json", "history.csv", "metrics.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "small_cnn" and config["input_shape"] == [28, 28, 1]
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["count"] == 10_000 and metrics["accuracy"] > 0.5  # 10 classes: chance 0.1

    cli("export", f"--model={run}", "--calibration_samples=100", "--parity_samples=300")
    bundle = run / "bundle"
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["input"] == {**meta["input"], "height": 28, "width": 28, "channels": 1,
                             "dtype": "uint8"}
    assert (bundle / "labels.txt").read_text().splitlines() == list(fm.CLASS_NAMES)
    report = json.loads((bundle / "report.json").read_text())
    assert report["non_integer_ops"] == 0 and report["size_ratio"] < 0.5
    assert report["parity"]["top1_agreement"] > 0.9

    x, y = fm.load_fashion_mnist("test")
    files = []
    for i in range(12):
        files.append(tmp_path / f"img{i:02d}_{y[i]}.png")
        Image.fromarray(x[i, :, :, 0]).save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    results = tmp_path / "results.json"
    cli("predict", f"--model={bundle}", f"--output={results}", str(tmp_path / "broken.png"),
        *map(str, files))
    md = json.loads(results.read_text())
    assert set(md["classification_categories"].values()) == set(fm.CLASS_NAMES)
    by_file = {img["file"]: img for img in md["images"]}
    assert len(by_file) == 13 and "failure" in next(v for k, v in by_file.items()
                                                   if k.endswith("broken.png"))
    hits = 0
    for path, label in zip(files, y[:12]):
        img = next(v for k, v in by_file.items() if k.endswith(path.name))
        top_id, conf = img["detections"][0]["classifications"][0]
        hits += md["classification_categories"][top_id] == fm.CLASS_NAMES[label]
        assert 0 <= conf <= 1
    assert hits >= 7  # a 2-epoch model on 3,000 images is right far above chance


def test_export_refuses_a_missing_model(cli, tmp_path):
    proc = cli("export", f"--model={tmp_path}", check=False)
    assert proc.returncode == 1 and "no model at" in proc.stderr
    assert not (tmp_path / "bundle").exists()
