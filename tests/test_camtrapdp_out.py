"""Camtrap DP packages from kerascls-edge, validated by the standard's own check (frictionless).

The profile and table schemas are the standard's 1.0.2 files in ../shared/data/camtrapdp,
served on 127.0.0.1 (frictionless refuses a local-path profile and resolves the profile's
remote $refs, which point at offline copies here). Real images, the real Coral .tflite.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.camtrapdp_check import STANDARD, rows, validate  # noqa: E402
from tests.shared_paths import CORAL_MODEL, ENA24, SPECIESNET, coral_tflite  # noqa: E402

needs_data = pytest.mark.skipif(
    not (CORAL_MODEL.is_file() and SPECIESNET.is_dir() and (ENA24 / "md_annotations.json")
         .is_file() and (STANDARD / "camtrap-dp-profile.json").is_file()),
    reason="../shared/data (Coral model, camera-trap frames, Camtrap DP schemas) absent")


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


@needs_data
def test_the_check_rejects_a_bad_package(schema_server) -> None:
    """The recipe is a real check: the standard's example passes, a bad value fails."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        pkg = Path(d) / "example"
        shutil.copytree(STANDARD / "example", pkg)
        assert validate(pkg, schema_server) == []
        obs = (pkg / "observations.csv").read_text().replace(",animal,", ",beast,", 1)
        (pkg / "observations.csv").write_text(obs)
        errors = validate(pkg, schema_server)
        assert errors and any("observationType" in e or "constraint" in e for e in errors)


@needs_data
def test_whole_image_run_is_a_valid_package(tmp_path: Path, schema_server, capsys) -> None:
    images = tmp_path / "cards" / "site_a"
    images.mkdir(parents=True)
    for name in ("african_elephants.jpg", "blank.jpg", "human.jpg", "ocelot.jpg"):
        shutil.copy(SPECIESNET / name, images / name)
    before = digests(images)
    package = tmp_path / "cards"  # the package sits above the images: relative filePaths
    rc = main(["predict", str(coral_tflite(tmp_path)), str(tmp_path / "cards"), "--recursive",
               "--format", "camtrapdp", "-o", str(package), "--threads", "2",
               "--location", "51.05,3.72", "--utc_offset", "+01:00", "--progress_every", "-1",
               "--smooth", "mean"])
    assert rc == 0, capsys.readouterr().err
    assert validate(package, schema_server) == []
    media = rows(package, "media")
    assert sorted(m["filePath"] for m in media) == sorted(f"site_a/{n}" for n in before)
    assert {m["deploymentID"] for m in media} == {"site_a"}
    elephant = next(m for m in media if m["fileName"] == "african_elephants.jpg")
    assert elephant["timestamp"] == "2010-08-04T08:43:15+01:00"  # EXIF, with the given offset
    assert all(m["fileMediatype"] == "image/jpeg" for m in media)
    obs = rows(package, "observations")
    assert len(obs) == 4 and all(o["observationLevel"] == "media" for o in obs)
    assert all(o["classificationMethod"] == "machine" for o in obs)
    assert all(o["classifiedBy"].startswith("mobilenet_v2_1.0_224_quant sha256:") for o in obs)
    assert all(o["bboxX"] == "" for o in obs)  # whole images have no box
    md = json.loads((package / "megadetector.json").read_text())
    top = {im["file"].split("/")[-1]: md["classification_categories"][
        im["detections"][0]["classifications"][0][0]] for im in md["images"]}
    by_media = {m["mediaID"]: m["fileName"] for m in media}
    for o in obs:  # the ImageNet model has no empty/person class: all "animal", named by label
        assert o["observationType"] == "animal"
        assert o["scientificName"] == top[by_media[o["mediaID"]]]
        assert 0 < float(o["classificationProbability"]) <= 1
    assert all(o["eventID"].startswith("site_a-") for o in obs)  # bursts are events
    dep = rows(package, "deployments")
    assert [d["deploymentID"] for d in dep] == ["site_a"] and dep[0]["latitude"] == "51.05"
    assert digests(images) == before  # originals untouched


@needs_data
def test_detections_run_is_a_valid_package(tmp_path: Path, schema_server, capsys) -> None:
    package = tmp_path / "pkg"
    rc = main(["predict", str(coral_tflite(tmp_path)), str(ENA24), "--detections",
               str(ENA24 / "md_annotations.json"), "--format", "camtrapdp", "-o", str(package),
               "--threads", "2", "--detection_threshold", "0.3", "--deployment", "ena24",
               "--location", "35.0,-80.0", "--progress_every", "-1"])
    assert rc == 0, capsys.readouterr().err
    assert validate(package, schema_server) == []
    src = json.loads((ENA24 / "md_annotations.json").read_text())
    boxes = [(im["file"], d) for im in src["images"] for d in im["detections"]
             if d["conf"] >= 0.3]
    obs = rows(package, "observations")
    boxed = [o for o in obs if o["bboxX"]]
    assert len(boxed) == len(boxes)
    assert {o["deploymentID"] for o in obs} == {"ena24"}
    for o in boxed:
        assert 0 <= float(o["bboxX"]) <= 1 and 0 < float(o["bboxWidth"]) <= 1
    # filePaths are relative to the image folder here (the images lie outside the package)
    assert {m["filePath"] for m in rows(package, "media")} == {im["file"] for im in src["images"]}


@needs_data
def test_converted_megadetector_file_is_a_valid_package(tmp_path: Path, schema_server,
                                                         capsys) -> None:
    package = tmp_path / "pkg"
    taxonomy = tmp_path / "taxonomy.csv"
    taxonomy.write_text("label,kingdom,class,family,genus,species,commonName\n"
                        "grey_fox,Animalia,Mammalia,Canidae,Urocyon,cinereoargenteus,Grey fox\n")
    rc = main(["convert", str(ENA24 / "md_annotations.json"), "--to", "camtrapdp", "-o",
               str(package), "--location", "35.0,-80.0", "--taxonomy", str(taxonomy)])
    assert rc == 0, capsys.readouterr().err
    assert validate(package, schema_server) == []
    src = json.loads((ENA24 / "md_annotations.json").read_text())
    thr = src["info"]["detector_metadata"]["typical_detection_threshold"]
    obs = rows(package, "observations")
    media = rows(package, "media")
    assert len(media) == len(src["images"])
    n_boxes = sum(d["conf"] >= thr for im in src["images"] for d in im["detections"])
    assert sum(bool(o["bboxX"]) for o in obs) == n_boxes
    first = src["images"][0]["detections"][0]
    o = next(o for o in obs if o["mediaID"] == next(
        m["mediaID"] for m in media if m["filePath"] == src["images"][0]["file"]))
    assert o["scientificName"] == src["classification_categories"][first["classifications"][0][0]]
    assert float(o["classificationProbability"]) == pytest.approx(first["classifications"][0][1])
    assert [float(o[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")] == \
        pytest.approx(first["bbox"], abs=1e-4)
    assert o["classifiedBy"] == "md_v5.0.0 + ecosystem1_v2"
    names = {o["scientificName"] for o in obs}
    assert "Urocyon cinereoargenteus" in names and "grey_fox" not in names  # mapped
    assert "american_crow" in names  # a label the taxonomy does not know stays as it is
    desc = json.loads((package / "datapackage.json").read_text())
    assert {"scientificName": "Urocyon cinereoargenteus"} in desc["taxonomic"]


@needs_data
def test_convert_to_csv_and_bad_input_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.csv"
    assert main(["convert", str(ENA24 / "md_annotations.json"), "--to", "csv", "-o",
                 str(out)]) == 0
    got = list(csv.DictReader(out.open()))
    src = json.loads((ENA24 / "md_annotations.json").read_text())
    assert len(got) == sum(bool(d.get("classifications")) for im in src["images"]
                           for d in im["detections"])
    capsys.readouterr()
    assert main(["convert", str(ENA24 / "md_annotations.json"), "--to", "camtrapdp", "-o",
                 str(tmp_path / "p"), "--utc_offset", "+2"]) == 2
    assert capsys.readouterr().err.startswith("kerascls-edge: error: --utc_offset")


@needs_data
def test_a_foreign_package_is_not_replaced(tmp_path: Path, capsys) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "datapackage.json").write_text('{"name": "someone else\'s"}')
    for argv in (["convert", str(ENA24 / "md_annotations.json"), "--to", "camtrapdp"],
                 ["predict", str(coral_tflite(tmp_path)), str(ENA24), "--format", "camtrapdp"]):
        assert main([*argv, "-o", str(pkg)]) == 2
        assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in pkg.iterdir()) == ["datapackage.json"]


@pytest.mark.parametrize("content", [b"{}", b'{"images": [{"detections": []}]}',
                                     b"\xff\xd8 not json", b'{"images": 3}'])
@pytest.mark.parametrize("command", ["camtrapdp", "csv", "report"])
def test_bad_results_files_are_one_line_errors(tmp_path: Path, capsys, content: bytes,
                                               command: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    out = tmp_path / ("out.html" if command == "report" else "out.csv" if command == "csv"
                      else "pkg")
    argv = (["report", str(bad), "-o", str(out)] if command == "report"
            else ["convert", str(bad), "--to", command, "-o", str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kerascls-edge: error: ") and err.count("\n") == 1, err
    assert not out.exists() or out.is_dir() and not any(out.iterdir())


@needs_data
def test_non_utf8_file_name_gives_a_valid_package(tmp_path: Path, schema_server,
                                                  capsys) -> None:
    site = tmp_path / "card" / "site_a"
    site.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name, not UTF-8
    shutil.copy(SPECIESNET / "ocelot.jpg", site / name)
    pkg = tmp_path / "card"
    assert main(["predict", str(coral_tflite(tmp_path)), str(pkg), "--recursive", "--format",
                 "camtrapdp", "-o", str(pkg), "--location", "1,2", "--threads", "2",
                 "--progress_every", "-1"]) == 0, capsys.readouterr().err
    (pkg / "media.csv").read_bytes().decode("utf-8")  # valid UTF-8
    assert validate(pkg, schema_server) == []
    assert rows(pkg, "media")[0]["fileName"] == "caf\\xe9.jpg"


@needs_data
def test_convert_our_json_to_csv_equals_a_csv_run(tmp_path: Path, capsys) -> None:
    common = [str(coral_tflite(tmp_path)), str(SPECIESNET), "--threads", "2",
              "--progress_every", "-1", "--top_k", "3"]
    assert main(["predict", *common, "-o", str(tmp_path / "r.json")]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "direct.csv")]) == 0
    assert main(["convert", str(tmp_path / "r.json"), "--to", "csv", "-o",
                 str(tmp_path / "converted.csv")]) == 0, capsys.readouterr().err
    assert (tmp_path / "converted.csv").read_text() == (tmp_path / "direct.csv").read_text()
