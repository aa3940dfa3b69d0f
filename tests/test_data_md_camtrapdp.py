"""md: and camtrapdp: training sources (issue 14 parts 1–2).

The crop parity checks compare kerascls's training pipeline with the device's own
``--detections`` path (``runner._md_items`` → ``_detections_job`` of a real Classifier
loaded from a bundle whose model.json carries the crop rule).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kerascls_edge import runner
from kerascls_edge.classifier import Classifier

from kerascls.data.camtrap_sources import CropRule, DetectionOptions
from kerascls.data.pipeline import PipelineOptions, file_dataset
from kerascls.data.sources import load_source
from tests.test_fidelity import MAKE_BUNDLE, render

ENA24 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camtrap" / "ena24_small"
SIZE = 32  # MAKE_BUNDLE's input size


def write_md(path: Path, images: list[dict]) -> Path:
    path.write_text(json.dumps({
        "info": {"format_version": "1.4", "detector": "hand-made"},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": images}))
    return path


def write_labels(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "label", "location"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """Five rendered frames, a hand-made MD file and labels: boxes mid-frame, at the border,
    past the border, under the threshold, of a person, tiny; one frame with no detection.

    A frame's boxes are decoded at one DCT scale on the device (the smallest any box needs)
    but planned one box at a time in training: boxes of one frame that want different
    scales differ by ~2 grey levels, so the tiny box has a frame of its own here.
    """
    d = tmp_path_factory.mktemp("md")
    for i, (w, h) in enumerate([(640, 480), (480, 640), (800, 450), (500, 500), (800, 450)]):
        render(d, f"f{i}.jpg", w, h, seed=i, quality=92)
    write_md(d / "md.json", [
        {"file": "f0.jpg", "detections": [
            {"category": "1", "conf": 0.9, "bbox": [0.30, 0.25, 0.20, 0.40]},
            {"category": "1", "conf": 0.1, "bbox": [0.0, 0.0, 0.5, 0.5]},
            {"category": "2", "conf": 0.95, "bbox": [0.6, 0.6, 0.2, 0.2]}]},
        {"file": "f1.jpg", "detections": [
            {"category": "1", "conf": 0.5, "bbox": [0.85, 0.02, 0.15, 0.10]}]},
        {"file": "f2.jpg", "detections": [
            {"category": "1", "conf": 0.3, "bbox": [0.05, 0.5, 0.6, 0.45]},
            {"category": "1", "conf": 0.8, "bbox": [0.7, 0.1, 0.35, 0.3]}]},
        {"file": "f4.jpg", "detections": [
            {"category": "1", "conf": 0.8, "bbox": [0.7, 0.1, 0.01, 0.02]}]},
        {"file": "f3.jpg", "detections": []}])
    write_labels(d / "labels.csv", [("f0.jpg", "fox", "a"), ("f1.jpg", "deer", "b"),
                                    ("f2.jpg", "fox", "c"), ("f3.jpg", "fox", "d"),
                                    ("f4.jpg", "deer", "e")])
    return d


def bundle_with_crop(d: Path, crop: dict | None) -> Path:
    out = d / f"bundle{len(list(d.glob('bundle*')))}"
    proc = subprocess.run([sys.executable, "-c", MAKE_BUNDLE, str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if crop is not None:
        meta = json.loads((out / "model.json").read_text())
        (out / "model.json").write_text(json.dumps({**meta, "crop": crop}))
    return out


def device_crops(bundle: Path, md_file: Path, image_dir: Path) -> dict[str, list[np.ndarray]]:
    """What ``kerascls-edge predict --detections`` feeds the model, per file."""
    clf = Classifier(bundle)
    md = runner.load_md(md_file)
    job = runner._detections_job(clf, strict=False)
    out = {}
    for item in runner._md_items(md, str(image_dir), runner.Options(output=image_dir / "x")):
        dec = job(item)
        out[str(Path(item.path).resolve())] = [] if dec is None else dec.arrays
    return out


def training_crops(records, decoder: str) -> np.ndarray:
    opts = PipelineOptions((SIZE, SIZE), 8, decoder=decoder, cache="none", deterministic=True)
    y = np.zeros(len(records), np.int64)
    return np.concatenate([x.numpy() for x, _ in file_dataset(records, y, opts)])


def assert_parity(spec: str, image_dir: Path, rule: CropRule, tmp: Path) -> int:
    src = load_source(spec, detection=DetectionOptions(crop=rule))
    bundle = bundle_with_crop(tmp, rule.as_json() if rule != CropRule() else None)
    device = device_crops(bundle, Path(spec.split(":")[1]), image_dir)
    # the device classifies every box over the threshold: the same boxes, same order
    want = np.stack([a for r in dict.fromkeys(r.path for r in src.records)
                     for a in device[r]]).astype(np.float32)
    boxed = [r for r in src.records if r.bbox]
    assert len(boxed) == len(want)
    for decoder in ("tf", "pil"):
        got = training_crops(boxed, decoder)
        diff = np.abs(got - want).reshape(len(boxed), -1).mean(axis=1)
        assert diff.max() <= 1.0, (decoder, diff)
    return len(boxed)


def test_md_records_threshold_categories_and_labels(scene):
    src = load_source(f"md:{scene / 'md.json'}:{scene / 'labels.csv'}")
    boxes = [(Path(r.path).name, r.labels[0], r.location) for r in src.records]
    assert boxes == [("f0.jpg", "fox", "a"), ("f1.jpg", "deer", "b"), ("f2.jpg", "fox", "c"),
                     ("f2.jpg", "fox", "c"), ("f4.jpg", "deer", "e")]
    x, y, w, h = src.records[0].bbox  # pixels of the 640×480 frame
    assert (x, y, w, h) == pytest.approx((192, 120, 128, 192))
    assert src.class_names == ["deer", "fox"]


def test_md_empty_class_min_px_padding_and_square(scene):
    opts = DetectionOptions(crop=CropRule(0.1, True, 10), empty_class="empty")
    src = load_source(f"md:{scene / 'md.json'}", detection=opts)
    names = [(Path(r.path).name, r.labels[0]) for r in src.records]
    assert ("f3.jpg", "empty") in names and len(names) == 5  # f4's 8×9 px box dropped
    assert next(r for r in src.records if r.labels == ("empty",)).bbox is None
    x, y, w, h = src.records[0].bbox  # 128×192 box + 10 % a side, squared: 230.4 px
    assert (w, h) == pytest.approx((230.4, 230.4)) and x == pytest.approx(192 - 12.8 - 38.4)
    x, y, w, h = next(r.bbox for r in src.records if r.labels == ("deer",))
    assert x + w == pytest.approx(480) and y == pytest.approx(1.6)  # clipped at the right


def test_md_crop_pixels_match_the_device_default_rule(scene, tmp_path):
    assert assert_parity(f"md:{scene / 'md.json'}", scene, CropRule(), tmp_path) == 5


def test_md_crop_pixels_match_the_device_padded_square(scene, tmp_path):
    assert assert_parity(f"md:{scene / 'md.json'}", scene, CropRule(0.15, True), tmp_path) == 5


@pytest.mark.skipif(not (ENA24 / "md_annotations.json").exists(),
                    reason="../shared/data/camtrap/ena24_small absent")
def test_md_crop_pixels_match_the_device_on_ena24(tmp_path):
    spec = f"md:{ENA24 / 'md_annotations.json'}:{ENA24 / 'labels.csv'}"
    assert assert_parity(spec, ENA24, CropRule(0.1, True), tmp_path) >= 21


@pytest.mark.parametrize("text, needle", [
    ("{", "not valid JSON"), ('{"images": 3}', "no 'images' list"),
    ('{"images": [{"file": "a.jpg", "detections": [{"conf": 0.5}]}]}', r"detections\[0\]")])
def test_md_bad_files_are_one_line_errors(tmp_path, text, needle):
    (tmp_path / "md.json").write_text(text)
    write_labels(tmp_path / "labels.csv", [("a.jpg", "fox", "")])
    with pytest.raises(ValueError, match=needle):
        load_source(f"md:{tmp_path / 'md.json'}")


def test_md_unknown_category_is_named(scene):
    with pytest.raises(ValueError, match="'bird' is not among"):
        load_source(f"md:{scene / 'md.json'}", detection=DetectionOptions(categories=("bird",)))
