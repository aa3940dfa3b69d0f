"""``md:`` training crops from several MegaDetector categories, at the threshold (issue 26).

A user who trains on animals and people passes ``--detection_categories animal,person``:
every box of either category at or above ``--detection_threshold`` is one crop. The pixel
boxes below are worked out by hand from the normalized boxes and the rendered frame sizes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kerascls.config import TrainConfig
from kerascls.data.camtrap_sources import DetectionOptions, options_from_config
from kerascls.data.sources import load_source
from kerascls.errors import UserError
from tests.pictures import render

MD = {
    "info": {"format_version": "1.4", "detector": "hand-made"},
    "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
    "images": [
        {"file": "site_a/cam1/f0.jpg", "detections": [
            {"category": "1", "conf": 0.9, "bbox": [0.25, 0.125, 0.5, 0.25]},
            {"category": "3", "conf": 0.95, "bbox": [0.0, 0.0, 0.5, 0.5]},    # a vehicle
            {"category": "2", "conf": 0.25, "bbox": [0.5, 0.5, 0.25, 0.375]},  # = threshold
            {"category": "1", "conf": 0.1875, "bbox": [0.0, 0.5, 0.25, 0.25]}]},  # under it
        {"file": "site_a/cam2/f1.jpg", "detections": [
            {"category": "2", "conf": 0.75, "bbox": [0.125, 0.25, 0.5, 0.625]}]},
        {"file": "site_b/f2.jpg", "detections": [
            {"category": "1", "conf": 0.5, "bbox": [0.75, 0.75, 0.25, 0.25]}]},
    ]}
LABELS = [("site_a/cam1/f0.jpg", "fox"), ("site_a/cam2/f1.jpg", "walker"),
          ("site_b/f2.jpg", "fox")]
# pixel boxes (x, y, w, h) of each category's qualifying boxes: f0 640x480, f1 480x640,
# f2 800x448
ANIMAL = [("f0.jpg", "fox", (160, 60, 320, 120)), ("f2.jpg", "fox", (600, 336, 200, 112))]
PERSON = [("f0.jpg", "fox", (320, 240, 160, 180)), ("f1.jpg", "walker", (60, 160, 240, 400))]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cats")
    for i, (rel, (w, h)) in enumerate(zip([r for r, _ in LABELS],
                                          [(640, 480), (480, 640), (800, 448)])):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        render((d / rel).parent, Path(rel).name, w, h, seed=20 + i, quality=90)
    (d / "md.json").write_text(json.dumps(MD))
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "label"), *LABELS])
    return d


def _boxes(scene: Path, opts: DetectionOptions) -> list:
    src = load_source(f"md:{scene / 'md.json'}", detection=opts)
    return sorted((Path(r.path).name, r.labels[0], tuple(round(v, 3) for v in r.bbox))
                  for r in src.records)


@pytest.mark.parametrize("names,categories", [
    ("animal,person", ("animal", "person")), (" person , animal ", ("person", "animal")),
    ("1,2", ("1", "2")), ("animal,2,", ("animal", "2"))])
def test_several_detection_categories_are_all_cropped(scene: Path, names: str,
                                                      categories: tuple) -> None:
    opts = options_from_config(TrainConfig(detection_categories=names,
                                           detection_threshold=0.25))
    assert opts.categories == categories and opts.threshold == 0.25
    assert _boxes(scene, opts) == sorted(ANIMAL + PERSON)


def test_one_category_and_the_threshold(scene: Path) -> None:
    assert _boxes(scene, DetectionOptions(threshold=0.25, categories=("person",))) == \
        sorted(PERSON)
    # f0's 0.1875 animal box joins at a threshold equal to it
    low = _boxes(scene, DetectionOptions(threshold=0.1875, categories=("animal",)))
    assert low == sorted(ANIMAL + [("f0.jpg", "fox", (0, 240, 160, 120))])
    # above the person box's 0.25, and f1 (a person only) has no animal: walker is gone
    only = load_source(f"md:{scene / 'md.json'}",
                       detection=DetectionOptions(threshold=0.2500001, categories=("animal",)))
    assert only.class_names == ["fox"] and len(only.records) == 2


def test_images_without_a_box_are_counted(scene: Path, caplog) -> None:
    """At 0.8 only f0's animal (0.9) qualifies: f1 and f2 are left out, and said so."""
    with caplog.at_level("WARNING", logger="kerascls.data"):
        src = load_source(f"md:{scene / 'md.json'}",
                          detection=DetectionOptions(threshold=0.8, categories=("animal", "2")))
    assert [Path(r.path).name for r in src.records] == ["f0.jpg"]
    assert ": 2 labelled images have no detection at or above 0.8" in caplog.text


@pytest.mark.parametrize("images", ["[3]", '[{"detections": []}]', '[{"file": 7}]'])
def test_md_image_entries_without_a_file_are_one_line(tmp_path: Path, images: str) -> None:
    md = tmp_path / "md.json"
    md.write_text(f'{{"images": {images}}}')
    (tmp_path / "labels.csv").write_text("filepath,label\nx.jpg,fox\n")
    with pytest.raises(UserError, match=r"images\[0\] has no 'file' string") as e:
        load_source(f"md:{md}")
    assert "\n" not in str(e.value)


def test_an_unknown_category_among_several_is_named(scene: Path) -> None:
    with pytest.raises(UserError, match="'bird' is not among 1=animal, 2=person, 3=vehicle"):
        load_source(f"md:{scene / 'md.json'}",
                    detection=DetectionOptions(categories=("animal", "bird")))


def test_unlabelled_images_are_left_out_and_counted(scene: Path, tmp_path: Path,
                                                   caplog) -> None:
    """Images missing from labels.csv (here the first two) are skipped, the rest still count;
    a labels file without the needed columns is a one-line error."""
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label,location,seq_id,datetime\n"
                      f"{scene / LABELS[2][0]},fox,loc9,burst7,2024-04-01 10:00:00\n")
    with caplog.at_level("WARNING", logger="kerascls.data"):
        src = load_source(f"md:{scene / 'md.json'}:{labels}",
                          detection=DetectionOptions(threshold=0.25))
    assert [(Path(r.path).name, r.labels, r.location, r.seq_id, r.datetime)
            for r in src.records] == [("f2.jpg", ("fox",), "loc9", "burst7",
                                       "2024-04-01 10:00:00")]
    assert ": 2 images have no label" in caplog.text and "no detection" not in caplog.text
    for text in ("filepath,species\nx.jpg,fox\n", ""):
        labels.write_text(text)
        with pytest.raises(UserError, match="needs a header with filepath and label"):
            load_source(f"md:{scene / 'md.json'}:{labels}")


def _package(d: Path, media: list[tuple], obs: list[tuple], drop: str = "") -> Path:
    """A hand-written Camtrap DP package: media (mediaID, file, mediatype) and media-level
    animal observations (mediaID, scientificName[, "x,y,w,h"]); ``drop`` leaves a resource
    out."""
    resources = [{"name": n, "path": f"{n}.csv"} for n in ("deployments", "media",
                                                           "observations") if n != drop]
    (d / "datapackage.json").write_text(json.dumps({"resources": resources}))
    (d / "deployments.csv").write_text("deploymentID,locationID\ndep1,loc1\n")
    rows = [f"{m},dep1,2024-04-01T10:00:0{i}Z,{f},{t}" for i, (m, f, t) in enumerate(media)]
    (d / "media.csv").write_text("mediaID,deploymentID,timestamp,filePath,fileMediatype\n"
                                 + "\n".join(rows) + "\n")
    rows = [f"o{i},dep1,{o[0]},2024-04-01T10:00:00Z,2024-04-01T10:00:09Z,media,animal,{o[1]},"
            + (o[2] if len(o) > 2 else ",,,") for i, o in enumerate(obs)]
    (d / "observations.csv").write_text(
        "observationID,deploymentID,mediaID,eventStart,eventEnd,observationLevel,"
        "observationType,scientificName,bboxX,bboxY,bboxWidth,bboxHeight\n"
        + "\n".join(rows) + "\n")
    return d / "datapackage.json"


def test_camtrapdp_skips_videos_unlabelled_media_and_unidentified_animals(
        scene: Path, tmp_path: Path) -> None:
    """Each skipped row (a video, an image nobody labelled, an animal not identified yet)
    comes before rows that must still be read."""
    media = [("v1", "clip.mp4", "video/mp4"), ("m0", str(scene / LABELS[2][0]), "image/jpeg"),
             ("m1", str(scene / LABELS[0][0]), "image/jpeg"),
             ("m2", str(scene / LABELS[1][0]), "image/jpeg")]
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    obs = [("v1", "Meles meles"), ("m1", ""), ("m1", "Vulpes vulpes"), ("m2", "Meles meles")]
    src = load_source(f"camtrapdp:{_package(tmp_path, media, obs)}")
    assert sorted((Path(r.path).name, r.labels, r.location) for r in src.records) == [
        ("f0.jpg", ("Vulpes vulpes",), "loc1"), ("f1.jpg", ("Meles meles",), "loc1")]


@pytest.mark.parametrize("drop", ["media", "observations"])
def test_camtrapdp_missing_resource_is_one_line(scene: Path, tmp_path: Path, drop: str) -> None:
    pkg = _package(tmp_path, [("m1", str(scene / LABELS[0][0]), "image/jpeg")],
                   [("m1", "Vulpes vulpes")], drop=drop)
    with pytest.raises(UserError, match=f"no '{drop}' resource with a path") as e:
        load_source(f"camtrapdp:{pkg}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("min_px,categories,kept,dropped", [
    # f0's animal (320 x 120 px) and f2's (200 x 112) are under 121; f0's person (160 x 180)
    # and f1's (240 x 400) are not
    (121, ("animal", "person"), [("f0.jpg", "fox", (320, 240, 160, 180)),
                                 ("f1.jpg", "walker", (60, 160, 240, 400))], 2),
    (120, ("animal", "person"), [("f0.jpg", "fox", (160, 60, 320, 120)),  # 120 = 120: kept
                                 ("f0.jpg", "fox", (320, 240, 160, 180)),
                                 ("f1.jpg", "walker", (60, 160, 240, 400))], 1),
])
def test_small_boxes_are_dropped_and_counted(scene: Path, caplog, min_px, categories, kept,
                                            dropped) -> None:
    """--min_crop_px compares the detector box's shorter side in pixels."""
    from kerascls.data.camtrap_sources import CropRule
    opts = DetectionOptions(threshold=0.25, categories=categories, crop=CropRule(min_px=min_px))
    with caplog.at_level("WARNING", logger="kerascls.data"):
        assert _boxes(scene, opts) == kept
    assert f": {dropped} crops under {min_px} px dropped" in caplog.text


def test_no_crop_left_is_one_line(scene: Path) -> None:
    """f1's person box is 240 px wide (its shorter side) and 400 high: under 241."""
    from kerascls.data.camtrap_sources import CropRule
    opts = DetectionOptions(threshold=0.25, categories=("person",), crop=CropRule(min_px=241))
    with pytest.raises(UserError, match="no crop left"):
        load_source(f"md:{scene / 'md.json'}", detection=opts)


def test_the_empty_class_label_and_failures_give_no_crops(scene: Path, tmp_path: Path) -> None:
    """Images labelled with --empty_class are whole-image examples even when the detector saw
    something; a frame MegaDetector failed on gives nothing."""
    md = json.loads((scene / "md.json").read_text())
    md["images"][2] = {"file": md["images"][2]["file"], "failure": "Failure image access"}
    for im in md["images"]:  # absolute paths: this file lies elsewhere
        im["file"] = str(scene / im["file"])
    (tmp_path / "md.json").write_text(json.dumps(md))
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label\n" + "".join(f"{scene / f},{lab}\n" for f, lab in LABELS))
    src = load_source(f"md:{tmp_path / 'md.json'}:{labels}",
                      detection=DetectionOptions(threshold=0.25, categories=("animal", "person"),
                                                 empty_class="walker"))
    got = sorted((Path(r.path).name, r.labels[0], r.bbox is None) for r in src.records)
    assert got == [("f0.jpg", "fox", False), ("f0.jpg", "fox", False),
                   ("f1.jpg", "walker", True)]


def test_camtrapdp_remote_media_need_a_media_root(scene: Path, tmp_path: Path) -> None:
    """URLs are looked up under MEDIA_ROOT by fileName, else by the URL's last part."""
    root = scene / "site_a" / "cam1"
    media = [("m1", "https://example.org/site/f0.jpg", "image/jpeg")]
    pkg = _package(tmp_path, media, [("m1", "Vulpes vulpes")])
    with pytest.raises(UserError, match=r"1 of its 1 image media files are remote URLs "
                                        r"\(e\.g\. https://example\.org/site/f0\.jpg\)"):
        load_source(f"camtrapdp:{pkg}")
    src = load_source(f"camtrapdp:{pkg}:{root}")
    assert [Path(r.path) for r in src.records] == [(root / "f0.jpg").resolve()]
    text = (tmp_path / "media.csv").read_text().replace("fileMediatype", "fileMediatype,fileName")
    (tmp_path / "media.csv").write_text(text.replace("image/jpeg", "image/jpeg,f0.jpg")
                                        .replace("/site/f0.jpg", "/a/b/c/other.jpg"))
    src = load_source(f"camtrapdp:{pkg}:{root}")
    assert [Path(r.path) for r in src.records] == [(root / "f0.jpg").resolve()]


def test_camtrapdp_without_deployments_and_a_missing_column(scene: Path, tmp_path: Path
                                                           ) -> None:
    pkg = _package(tmp_path, [("m1", str(scene / LABELS[0][0]), "image/jpeg")],
                   [("m1", "Vulpes vulpes")], drop="deployments")
    src = load_source(f"camtrapdp:{pkg}")
    assert [r.location for r in src.records] == ["dep1"]  # no locationID: the deployment
    media = tmp_path / "media.csv"
    media.write_text(media.read_text().replace(",timestamp,", ",taken,", 1))
    with pytest.raises(UserError, match="media.csv: line 1: unknown column 'taken'"):
        load_source(f"camtrapdp:{pkg}")
    media.write_text(media.read_text().replace(",taken,", ",", 1).replace("Z,", ",", 1)
                     .replace(",2024-04-01T10:00:00", "", 1))
    with pytest.raises(UserError, match="media.csv: line 1: required column 'timestamp' is "
                                        "missing"):
        load_source(f"camtrapdp:{pkg}")


def test_camtrapdp_event_observations_cover_their_ends(scene: Path, tmp_path: Path) -> None:
    """An event-level observation labels the deployment's images taken from its start to its
    end, both included; images outside it are not labelled."""
    media = [(f"m{i}", str(scene / f), "image/jpeg") for i, (f, _) in enumerate(LABELS)]
    pkg = _package(tmp_path, media, [])  # media at 10:00:00, 10:00:01, 10:00:02
    (tmp_path / "observations.csv").write_text(
        "observationID,deploymentID,eventID,eventStart,eventEnd,observationLevel,"
        "observationType,scientificName\n"
        "e1,dep1,ev1,2024-04-01T10:00:01Z,2024-04-01T10:00:02Z,event,animal,Meles meles\n"
        "e2,dep1,ev2,2024-04-01T09:00:00Z,2024-04-01T10:00:00Z,event,animal,Vulpes vulpes\n")
    src = load_source(f"camtrapdp:{pkg}")
    got = sorted((Path(r.path).name, r.labels, r.seq_id) for r in src.records)
    assert got == [("f0.jpg", ("Vulpes vulpes",), "ev2"), ("f1.jpg", ("Meles meles",), "ev1"),
                   ("f2.jpg", ("Meles meles",), "ev1")]


@pytest.mark.parametrize("box,ok", [
    ("0,0.125,1,0.875", True),   # from the left edge to the right one, down to the bottom
    ("0.5,0.5,1.5,0.25", False), ("0.5,0.5,0.25,-0.1", False), ("0.1,0.1,0,0.2", False),
    ("0.1,0.1,0.2,0", False), ("-0.1,0.1,0.2,0.2", False)])
def test_camtrapdp_boxes_must_lie_in_the_image(scene: Path, tmp_path: Path, box: str,
                                               ok: bool) -> None:
    pkg = _package(tmp_path, [("m1", str(scene / LABELS[0][0]), "image/jpeg")],
                   [("m1", "Vulpes vulpes", box)])
    if ok:
        src = load_source(f"camtrapdp:{pkg}", crop_boxes=True)
        assert [tuple(round(v, 3) for v in r.bbox) for r in src.records] == [(0, 60, 640, 420)]
        whole = load_source(f"camtrapdp:{pkg}")  # without crop_boxes: the image, labelled
        assert [(r.bbox, r.labels) for r in whole.records] == [(None, ("Vulpes vulpes",))]
        return
    with pytest.raises(UserError, match=r"observations.csv: line 2: bbox .* is not a box"):
        load_source(f"camtrapdp:{pkg}", crop_boxes=True)
