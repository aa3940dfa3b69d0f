"""``kerascls predict --model RUN``: the Keras model, batched, writes what the bundle writes.

A tiny real run (small_cnn, 1 epoch, rendered textures at awkward sizes) and its int8
bundle classify the same folder (with a corrupt and an empty file) through
``kerascls predict --model RUN`` and ``--model RUN/bundle``: same file set, same fields,
the bad files as failures in both, top-1 agreement ≈ 1 and probabilities within int8
steps. ``--detections``, CSV and ``--resume`` go through the same journal and writers.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.scenes import render_folder, small_run
from tests.scenes import train_in_subprocess as _train

PROB_TOL = 0.03  # int8 output steps are 1/256; a 1-epoch model is not very confident


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, image folder): a 1-epoch run with its int8 bundle, and bad files."""
    root = tmp_path_factory.mktemp("predict_keras")
    data = render_folder(root / "data", per_class=10, seed=3)
    run = _train(small_run(data, root / "run", epochs=1))
    from tests.conftest import run_cli
    run_cli("export", f"--model={run}", "--calibration_samples=20", "--parity_samples=10")
    images = render_folder(root / "images", per_class=4, seed=11,
                           sizes=((97, 61), (61, 97), (640, 480), (123, 89)))
    (images / "rings" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 9)
    (images / "rings" / "empty.jpg").write_bytes(b"")
    return run, images


def _predict(cli, model: Path, images: Path, out: Path, *extra: str, check=True):
    return cli("predict", f"--model={model}", f"--output={out}", "--recursive", "--top_k=3",
               *extra,
               str(images), check=check)


def _by_file(md: dict) -> dict[str, dict]:
    return {img["file"]: img for img in md["images"]}


def _probs(img: dict, n: int) -> np.ndarray:
    p = np.zeros(n)
    for i, v in img["detections"][0]["classifications"]:
        p[int(i)] = v
    return p


@pytest.mark.slow  # training + int8 export fixture (~20 s) and two CLI runs (~15 s)
def test_keras_run_writes_what_the_bundle_writes(trained, tmp_path, cli):
    run, images = trained
    _predict(cli, run, images, tmp_path / "keras.json")
    _predict(cli, run / "bundle", images, tmp_path / "edge.json")
    ours, edge = (json.loads((tmp_path / f).read_text()) for f in ("keras.json", "edge.json"))
    assert set(ours) == set(edge)
    assert ours["classification_categories"] == edge["classification_categories"]
    assert [i["file"] for i in ours["images"]] == [i["file"] for i in edge["images"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge.json", "keras.json"]
    a, b = _by_file(ours), _by_file(edge)
    failed = {f for f, img in b.items() if "failure" in img}
    assert failed == {"rings/broken.jpg", "rings/empty.jpg"}
    assert {f for f, img in a.items() if "failure" in img} == failed
    n = len(ours["classification_categories"])
    agree, worst = [], 0.0
    for f in set(a) - failed:
        assert set(a[f]) == set(b[f]), f
        pa, pb = _probs(a[f], n), _probs(b[f], n)
        top2 = np.sort(pa)[-2:]
        agree.append(pa.argmax() == pb.argmax() or top2[1] - top2[0] < 2 * PROB_TOL)
        worst = max(worst, float(np.abs(pa - pb).max()))
    print(f"{len(agree)} images, top-1 agreement {np.mean(agree):.3f}, max diff {worst:.4f}")
    assert len(agree) == 12 and np.mean(agree) == 1.0 and worst <= PROB_TOL


def _md_file(images: Path, out: Path) -> Path:
    """A MegaDetector file naming two animal boxes, a vehicle, and a failed image."""
    md = {"info": {"format_version": "1.4", "detector": "test"},
          "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
          "images": [
              {"file": "rings/img000.jpg", "detections": [
                  {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.6]},
                  {"category": "3", "conf": 0.8, "bbox": [0.0, 0.0, 0.2, 0.2]}]},
              {"file": "stripes_fine/img001.jpg", "detections": [
                  {"category": "1", "conf": 0.5, "bbox": [0.3, 0.2, 0.4, 0.7]}]},
              {"file": "rings/broken.jpg", "detections": [
                  {"category": "1", "conf": 0.7, "bbox": [0.3, 0.2, 0.4, 0.4]}]}]}
    out.write_text(json.dumps(md))
    return out


@pytest.mark.slow  # four CLI runs, ~45 s
def test_detections_csv_and_resume(trained, tmp_path, cli):
    run, images = trained
    md = _md_file(images, tmp_path / "md.json")
    for name, model in (("keras", run), ("edge", run / "bundle")):
        _predict(cli, model, images, tmp_path / f"{name}_det.json", f"--detections={md}")
    ours, edge = (json.loads((tmp_path / f"{n}_det.json").read_text()) for n in ("keras", "edge"))
    for a, b in zip(ours["images"], edge["images"]):
        assert a["file"] == b["file"] and a.get("warnings") == b.get("warnings")
        for da, db in zip(a["detections"], b["detections"]):
            assert ("classifications" in da) == ("classifications" in db)
            if "classifications" in da:
                assert da["classifications"][0][0] == db["classifications"][0][0]
    # CSV, checkpointed every 5 images; a resumed run from a partial journal gives the same file
    full = tmp_path / "full.csv"
    _predict(cli, run, images, full, "--checkpoint_every=5", "--keep_checkpoint")
    parts = sorted((tmp_path / "full.csv.partial").glob("part-*.jsonl"))
    assert len(parts) == 3  # 14 images: 5 + 5 + 4
    shutil.copytree(tmp_path / "full.csv.partial", tmp_path / "again.csv.partial")
    (tmp_path / "again.csv.partial" / parts[-1].name).unlink()  # killed before the last part
    proc = _predict(cli, run, images, tmp_path / "again.csv", "--checkpoint_every=5", "--resume")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["resumed"] == 10
    with open(full, newline="") as f1, open(tmp_path / "again.csv", newline="") as f2:
        assert list(csv.reader(f1)) == list(csv.reader(f2))
    assert not (tmp_path / "again.csv.partial").exists()


def test_missing_run_is_one_line(tmp_path, cli):
    (tmp_path / "a.jpg").write_bytes(b"")
    proc = cli("predict", f"--model={tmp_path / 'nope.keras'}", str(tmp_path / "a.jpg"),
               f"--output={tmp_path / 'o.json'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "error:" in proc.stderr, proc.stderr


@pytest.mark.slow  # a local Ray and a Keras model per actor, ~60 s
def test_keras_model_on_ray_actors(trained, tmp_path, cli, monkeypatch):
    """--engine ray with --model RUN: the actors hold the Keras model; same file as locally."""
    pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
    run, images = trained
    _predict(cli, run, images, tmp_path / "local.json")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    _predict(cli, run, images, tmp_path / "ray.json", "--engine=ray", "--batch_size=5")
    local, ray = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert [i["file"] for i in ray["images"]] == [i["file"] for i in local["images"]]
    n = len(local["classification_categories"])
    for a, b in zip(local["images"], ray["images"]):
        assert ("failure" in a) == ("failure" in b) and set(a) == set(b)
        if "failure" not in a:  # other batch compositions: float rounding at most
            assert np.abs(_probs(a, n) - _probs(b, n)).max() <= 2e-3


@pytest.mark.slow  # two CLI runs on the trained fixture, ~20 s
def test_two_cpu_replicas_match_one_device(trained, tmp_path, cli):
    """--devices=cpu:2 (two logical CPUs standing in for two GPUs): same file as one device.

    12 images and 2 failures in chunks of 13: 11 images, then 1 (fewer than the replicas).
    The file holds 4 decimals, so "within 1e-5" reads as at most one rounding step here;
    test_predict_devices.py compares the raw rows at 1e-5.
    """
    run, images = trained
    one = _predict(cli, run, images, tmp_path / "one.json", "--batch_size=13")
    two = _predict(cli, run, images, tmp_path / "two.json", "--batch_size=13", "--devices=cpu:2")
    assert "replica" not in one.stderr
    assert "kerascls: predict: 2 replicas (/cpu:0, /cpu:1)" in two.stderr.splitlines()
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert [i["file"] for i in a["images"]] == [i["file"] for i in b["images"]]
    n = len(a["classification_categories"])
    good = [(x, y) for x, y in zip(a["images"], b["images"]) if "failure" not in x]
    assert len(good) == 12 and all("failure" not in y for _, y in good)
    worst = max(float(np.abs(_probs(x, n) - _probs(y, n)).max()) for x, y in good)
    print(f"{len(good)} images on 2 replicas vs one device: max diff {worst:.2e}")
    assert all(x["detections"][0]["classifications"][0][0]
               == y["detections"][0]["classifications"][0][0] for x, y in good)
    assert worst <= 1e-4 + 1e-9  # measured: 0 (every value the same)
