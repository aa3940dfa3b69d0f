"""End to end: what ``kerascls evaluate`` scores is what the device would say.

A small real training on rendered JPEGs (textured classes at awkward sizes), an int8
export, then ``kerascls evaluate --model RUN/bundle`` (its ``predictions.csv``) and
``kerascls-edge predict RUN/bundle`` on the same test-split files, compared image by image
(by file path): the same top-1 for ≥ 99.5 % of images, probabilities within 0.02. Both
are separate processes, as a user runs them. A logits run goes the same way: its bundle
carries the softmax its model.json names.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scenes import SIZES, render_folder, small_run
from tests.scenes import train_in_subprocess as _train

EDGE = [sys.executable, "-m", "kerascls_edge"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # small awkward sizes, plus frames large enough for the reduced-scale JPEG decoders
    sizes = (*SIZES, (1046, 802), (597, 448), (449, 1031))
    return render_folder(tmp_path_factory.mktemp("e2e") / "images", per_class=24, seed=5,
                         sizes=sizes)


def _edge_probs(bundle: Path, files: list[str], out: Path) -> dict[str, dict[str, float]]:
    proc = subprocess.run([*EDGE, "predict", str(bundle), *files, "-o", str(out),
                           "--top_k", "10"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    md = json.loads(out.read_text())
    names = md["classification_categories"]
    root = os.path.commonpath(files)  # MegaDetector files are relative to the inputs' root
    probs = {}
    for img in md["images"]:
        assert "failure" not in img, img
        cls = img["detections"][0]["classifications"]
        path = img["file"] if os.path.isabs(img["file"]) else os.path.join(root, img["file"])
        probs[os.path.realpath(path)] = {names[i]: p for i, p in cls}
    return probs


def _evaluate_probs(report_dir: Path) -> dict[str, dict[str, float]]:
    with open(report_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {os.path.realpath(r["filepath"]): {k[2:]: float(v) for k, v in r.items()
                                              if k.startswith("p_")} for r in rows}


@pytest.mark.parametrize("head", ["softmax", pytest.param("logits", marks=pytest.mark.slow)])
def test_evaluate_bundle_agrees_with_edge(head, data, tmp_path, cli):
    args = {"logits": True} if head == "logits" else {}
    run = _train(small_run(data, tmp_path / "run", model_args=args, test_fraction=0.35))
    cli("export", f"--model={run}", "--calibration_samples=60", "--parity_samples=40")
    bundle = run / "bundle"
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["output"]["activation"] == "softmax"  # the logits head exports its softmax
    cli("evaluate", f"--model={bundle}")
    ours = _evaluate_probs(run / "bundle_eval")
    with open(run / "splits" / "test.csv", newline="") as f:
        test_files = [r["filepath"] for r in csv.DictReader(f)]
    assert len(ours) == len(test_files) >= 20
    edge = _edge_probs(bundle, test_files, tmp_path / "edge.json")
    assert set(edge) == set(ours)
    names = meta["class_names"]
    top_same, worst = [], 0.0
    for path, p in ours.items():
        a = np.array([p[n] for n in names])
        b = np.array([edge[path].get(n, 0.0) for n in names])  # classes rounding to 0 left out
        top_same.append(a.argmax() == b.argmax() or abs(np.sort(a)[-1] - np.sort(a)[-2]) < 1e-3)
        worst = max(worst, float(np.abs(a - b).max()))
        assert abs(a.sum() - 1.0) < 0.02  # probabilities (int8 steps of 1/256), not logits
    print(f"{head}: {len(ours)} images, top-1 agreement {np.mean(top_same):.4f}, "
          f"max prob diff {worst:.4f}")
    assert np.mean(top_same) >= 0.995, (np.mean(top_same), worst)
    assert worst <= 0.02
    accuracy = json.loads((run / "bundle_eval" / "metrics.json").read_text())["accuracy"]
    assert accuracy >= 0.6  # 3 classes, chance 1/3: the comparison is of a real classifier
