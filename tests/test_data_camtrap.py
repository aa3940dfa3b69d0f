"""Image-file data on real camera-trap photos (../shared/data/camtrap), and a CLI run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kerascls.data.decode import RATIOS, decode_record, plan, preprocess
from kerascls.data.sources import load_source

CAMTRAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camtrap"
needs_camtrap = pytest.mark.skipif(not CAMTRAP.is_dir(),
                                   reason=f"camera-trap test photos not found at {CAMTRAP}")
SPECIESNET = CAMTRAP / "speciesnet_test_data"
ENA24 = CAMTRAP / "ena24_small"


def _small(rec, size=(96, 128)) -> np.ndarray:
    """A record decoded (DCT-scaled, upright) and resized, as float."""
    return decode_record(rec, size).astype(np.float64)


@needs_camtrap
def test_awkward_speciesnet_files():
    src = load_source(f"csv:{SPECIESNET / 'labels.csv'}")
    assert [Path(b.path).name for b in src.bad] == ["african_elephants_truncated_file.jpg"]
    assert "truncated" in src.bad[0].reason
    by_name = {Path(r.path).name: r for r in src.records}
    ref = _small(by_name["african_elephants.jpg"])
    grey_ref = ref @ np.array([0.299, 0.587, 0.114])
    exif = by_name["african_elephants_with_exif_orientation.jpg"]
    assert exif.orientation == 6 and exif.width < exif.height  # stored on its side
    for name in ("african_elephants_cmyk.jpg", "african_elephants_with_exif_orientation.jpg"):
        got = _small(by_name[name])
        assert got.shape == ref.shape and np.abs(got - ref).mean() < 6, name
    grey = _small(by_name["african_elephants_bw.jpg"])
    assert np.abs(grey[..., 0] - grey[..., 2]).max() < 1  # greyscale, as three equal channels
    assert np.abs(grey[..., 0] - grey_ref).mean() < 6


@needs_camtrap
def test_coco_and_csv_give_ena24_labels():
    with open(ENA24 / "labels.csv", newline="") as f:
        want = {row["filepath"]: row["label"] for row in csv.DictReader(f)}
    for spec in (f"csv:{ENA24 / 'labels.csv'}", f"coco:{ENA24 / 'coco_annotations.json'}"):
        src = load_source(spec)
        assert not src.bad
        assert {Path(r.path).name: r.labels[0] for r in src.records} == want, spec
        assert sorted(src.class_names) == sorted(set(want.values()))


@needs_camtrap
def test_coco_crop_boxes():
    coco = json.loads((ENA24 / "coco_annotations.json").read_text())
    src = load_source(f"coco:{ENA24 / 'coco_annotations.json'}:{ENA24}", crop_boxes=True)
    assert len(src.records) == sum(1 for a in coco["annotations"] if a.get("bbox"))
    rec = max(src.records, key=lambda r: r.bbox[2] * r.bbox[3])
    p = plan(rec, preprocess((64, 64)))
    ratio = RATIOS[p.branch]  # the box, in DCT-reduced pixels, still covers 64×64
    bw, bh = p.box[2] - p.box[0], p.box[3] - p.box[1]
    assert min(bw, bh) >= 64 - 1 and (ratio == 8 or min(bw, bh) / 2 < 64)
    assert abs(bw * ratio - rec.bbox[2]) <= ratio and abs(bh * ratio - rec.bbox[3]) <= ratio


def _write_folder(root: Path, classes=("deer", "fox"), per: int = 6) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for i, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for j in range(per):
            img = np.full((90, 120, 3), 60 + 120 * i, np.uint8)
            img += rng.integers(0, 30, img.shape, dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{j}.jpg")
    (root / "deer" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return root


def test_cli_train_evaluate_export_on_a_folder(cli, tmp_path):
    data = _write_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    cli("train", f"--data=folder:{data}", "--image_size=32", "--epochs=2", "--batch_size=4",
        "--val_fraction=0.2", "--test_fraction=0.2", "--resize=pad", "--augment=flip",
        f"--output_dir={run}")
    config = json.loads((run / "config.json").read_text())
    assert config["input_shape"] == [32, 32, 3] and config["data"] == f"folder:{data}"
    bad = json.loads((run / "bad_files.json").read_text())
    assert [Path(b["path"]).name for b in bad] == ["broken.jpg"]
    test_files = (run / "splits" / "test.csv").read_text().splitlines()[1:]
    assert test_files and json.loads((run / "metrics.json").read_text())["count"] == len(
        test_files)
    out = cli("evaluate", f"--model={run}").stdout
    assert f"images: {len(test_files)}" in out
    cli("export", f"--model={run}", "--calibration_samples=8", "--parity_samples=8")
    meta = json.loads((run / "bundle" / "model.json").read_text())
    assert meta["input"]["resize"] == "pad" and meta["class_names"] == ["deer", "fox"]


def test_cli_reports_data_errors_in_one_line(cli, tmp_path):
    data = _write_folder(tmp_path / "imgs")
    (data / "owl").mkdir()
    proc = cli("train", f"--data=folder:{data}", f"--output_dir={tmp_path / 'r'}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == \
        f"kerascls: error: train: folder:{data}: class 'owl' has no image"
