"""kerascls_edge on the real camera-trap data and the third-party Coral model (../shared/data).

No TensorFlow here: the Coral MobileNet v2 is a .tflite nobody in this project made.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import Classifier  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from kerascls_edge.decode import TRUNCATED_WARNING, Preprocess, decode  # noqa: E402
from tests.shared_paths import (  # noqa: E402
    CORAL,
    CORAL_MODEL,
    ENA24,
    SPECIESNET,
    coral_labels,
    coral_tflite,
)

needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                 reason=f"Coral model not found under {CORAL} (../shared/data)")
needs_speciesnet = pytest.mark.skipif(not SPECIESNET.is_dir(),
                                      reason=f"{SPECIESNET} absent (../shared/data)")
needs_ena24 = pytest.mark.skipif(not (ENA24 / "md_annotations.json").is_file(),
                                 reason=f"{ENA24} absent (../shared/data)")


def validate_md(path: Path) -> list[str]:
    """Errors from MegaDetector's own validator (the test skips where it is not installed)."""
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    return v.validate_batch_results(str(path))["validation_results"]["errors"]


@pytest.fixture(scope="module")
def coral(tmp_path_factory) -> Classifier:
    if not CORAL_MODEL.is_file():
        pytest.skip("Coral model absent")
    labels = coral_labels(tmp_path_factory.mktemp("coral") / "labels.txt")
    return Classifier(CORAL_MODEL, labels=labels, threads=2)


@needs_coral
def test_coral_third_party_model_classifies_cat_and_parrot(coral: Classifier) -> None:
    assert len(coral.labels) == 1001 and coral.labels[0] == "background"
    assert coral.spec.height == coral.spec.width == 224 and coral.spec.dtype == "uint8"
    assert coral.classify(CORAL / "cat.bmp", top_k=1)[0][0] == "Egyptian cat"
    label, prob = coral.classify(CORAL / "parrot.jpg", top_k=3)[0]
    assert label == "macaw" and prob > 0.9


@needs_coral
def test_bare_tflite_finds_labels_file_beside_it(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").symlink_to(CORAL_MODEL)
    coral_labels(tmp_path / "labels.txt")
    clf = Classifier(tmp_path / "m.tflite", threads=1)
    assert clf.classify(CORAL / "cat.bmp", top_k=1)[0][0] == "Egyptian cat"


def _decoded(name: str, channels: int = 3) -> np.ndarray:
    pre = Preprocess(96, 128, channels, "stretch")
    return decode(SPECIESNET / name, pre).arrays[0].astype(np.float32)


@needs_speciesnet
def test_awkward_speciesnet_files_decode_upright_rgb_like_the_original() -> None:
    ref = _decoded("african_elephants.jpg")
    rotated = _decoded("african_elephants_with_exif_orientation.jpg")
    cmyk = _decoded("african_elephants_cmyk.jpg")
    grey = _decoded("african_elephants_bw.jpg")
    assert ref.shape == rotated.shape == cmyk.shape == grey.shape == (96, 128, 3)
    assert np.abs(rotated - ref).mean() < 4, "EXIF orientation not applied"
    assert np.abs(np.rot90(rotated, 2) - ref).mean() > 4 * np.abs(rotated - ref).mean()
    assert np.abs(cmyk - ref).mean() < 8, "CMYK not converted to matching RGB"
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    ref_luma = ref @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(grey[..., 0] - ref_luma).mean() < 6


@needs_speciesnet
def test_truncated_jpeg_decodes_with_warning_or_fails_when_strict() -> None:
    pre = Preprocess(64, 64)
    out = decode(SPECIESNET / "african_elephants_truncated_file.jpg", pre)
    assert out.warnings == [TRUNCATED_WARNING] and out.arrays[0].shape == (64, 64, 3)
    ref = decode(SPECIESNET / "african_elephants.jpg", pre).arrays[0].astype(np.float32)
    top = slice(0, 48)  # the file is ~93% there: the top of the frame must match the original
    assert np.abs(out.arrays[0][top].astype(np.float32) - ref[top]).mean() < 3
    with pytest.raises(OSError):
        decode(SPECIESNET / "african_elephants_truncated_file.jpg", pre, strict=True)


@needs_speciesnet
def test_exif_capture_time_is_read() -> None:
    out = decode(SPECIESNET / "african_elephants.jpg", Preprocess(32, 32))
    assert out.datetime == "2010-08-04 08:43:15"


@needs_coral
@needs_speciesnet
def test_predict_all_speciesnet_files_to_valid_megadetector_json(tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "results.json"
    rc = main(["predict", str(coral_tflite(tmp_path)), str(SPECIESNET), "-o", str(out),
               "--threads", "2", "--smooth", "mean", "--top_k", "3"])
    assert rc == 0, capsys.readouterr().err
    assert validate_md(out) == []
    d = json.loads(out.read_text())
    assert d["info"]["format_version"] == "1.6"
    assert d["info"]["classifier"] == "mobilenet_v2_1.0_224_quant"
    assert "typical_classification_threshold" in d["info"]["classifier_metadata"]
    files = [im["file"] for im in d["images"]]
    assert sorted(files) == sorted(p.name for p in SPECIESNET.glob("*.jpg"))
    by_file = {im["file"]: im for im in d["images"]}
    assert not any("failure" in im for im in d["images"])
    assert by_file["african_elephants_truncated_file.jpg"]["warnings"] == [TRUNCATED_WARNING]
    for im in d["images"]:
        (det,) = im["detections"]  # the ImageNet model has no empty class
        assert det["bbox"] == [0.0, 0.0, 1.0, 1.0]
        confs = [c for _, c in det["classifications"]]
        assert confs == sorted(confs, reverse=True) and 1 <= len(confs) <= 3
    # The elephant frames share an EXIF time: one sequence, smoothed beside per-image results.
    seqs = {by_file[f]["sequence"]["id"] for f in ("african_elephants.jpg",
                                                    "african_elephants_truncated_file.jpg",
                                                    "african_elephants_with_exif_orientation.jpg")}
    assert len(seqs) == 1
    assert by_file["african_elephants.jpg"]["sequence"]["frames"] >= 3


@needs_coral
@needs_speciesnet
def test_strict_makes_truncated_a_failure_and_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert main(["predict", str(coral_tflite(tmp_path)), str(SPECIESNET), "-o", str(out),
                 "--strict", "--threads", "2", "--progress_every", "-1"]) == 0
    assert validate_md(out) == []
    d = json.loads(out.read_text())
    failed = [im for im in d["images"] if im.get("failure")]
    assert [im["file"] for im in failed] == ["african_elephants_truncated_file.jpg"]
    assert failed[0]["detections"] is None and len(d["images"]) == 14


@needs_coral
@needs_ena24
def test_megadetector_detections_flow_on_ena24(tmp_path: Path) -> None:
    src = json.loads((ENA24 / "md_annotations.json").read_text())
    out = tmp_path / "md_classified.json"
    assert main(["predict", str(coral_tflite(tmp_path)), str(ENA24), "--detections",
                 str(ENA24 / "md_annotations.json"), "-o", str(out), "--threads", "2",
                 "--detection_threshold", "0.3", "--top_k", "3"]) == 0
    assert validate_md(out) == []
    d = json.loads(out.read_text())
    assert d["info"]["format_version"] == "1.6" and d["info"]["detector"] == "md_v5.0.0"
    assert len(d["classification_categories"]) == 1001
    assert "classification_category_descriptions" not in d  # they described the old classes
    assert [im["file"] for im in d["images"]] == [im["file"] for im in src["images"]]
    n_classified = 0
    for old, new in zip(src["images"], d["images"]):
        for od, nd in zip(old["detections"], new["detections"]):
            assert nd["bbox"] == od["bbox"] and nd["conf"] == od["conf"]
            eligible = src["detection_categories"][od["category"]] == "animal" and od["conf"] >= 0.3
            assert ("classifications" in nd) == eligible
            n_classified += eligible
    assert n_classified >= 15


@needs_coral
@needs_ena24
def test_detections_flow_csv_has_a_row_per_classified_box(tmp_path: Path) -> None:
    out = tmp_path / "md.csv"
    assert main(["predict", str(coral_tflite(tmp_path)), str(ENA24), "--detections",
                 str(ENA24 / "md_annotations.json"), "-o", str(out), "--threads", "2"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and all(r["label"] and 0 < float(r["confidence"]) <= 1 for r in rows)
    assert {r["file"] for r in rows} <= {p.name for p in ENA24.glob("*.jpg")}
