"""What a user relies on in a Camtrap DP package, field by field (issue 26).

Every expected value below is worked by hand from the MegaDetector entries written here (or
checked by the standard's own validator, frictionless, against its 1.0.2 schemas), never
computed by the writer's code: the observation rows of boxes, blanks, failures and whole-image
calls; roll-up tags; capture times from the record, the image's EXIF or its mtime, with
--utc_offset; event ids; deployments and their spans; filePaths the standard accepts; the
datapackage.json the profile requires; reruns that keep the user's edits; the swap that leaves
the old package whole.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sys
import time
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import packagedir  # noqa: E402
from kerascls_edge.bundle import EdgeError  # noqa: E402
from kerascls_edge.camtrapdp import (  # noqa: E402
    PackageOptions,
    check_deployment,
    parse_location,
    parse_offset,
    write_package,
)
from tests.camtrapdp_check import STANDARD, rows, validate  # noqa: E402
from tests.pictures import texture  # noqa: E402

needs_standard = pytest.mark.skipif(not (STANDARD / "camtrap-dp-profile.json").is_file(),
                                    reason="../shared/data/camtrapdp absent")

TAXA = {"red_fox": "Vulpes vulpes", "badger": "Meles meles", "roe_deer": "Capreolus capreolus"}
HEADER = {
    "info": {"format_version": "1.4", "detector": "MDV5A", "classifier": "speciesnet_v4.0.1a",
             "detection_completion_time": "2024-07-01 09:00:00",
             "classification_completion_time": "2024-07-02 13:14:15",
             "detector_metadata": {"typical_detection_threshold": 0.15},
             "classifier_metadata": {"taxonomy_rollup": {"threshold": 0.8,
                                                         "first_taxon_id": 3}}},
    # MegaDetector writes lower case; a capitalised name is still the same category
    "detection_categories": {"1": "Animal", "2": "Person", "3": "Vehicle", "4": "insect"},
    # ids from 3 on are rolled-up taxa (first_taxon_id), as kerascls-edge writes them
    "classification_categories": {"0": "red_fox", "1": "badger", "2": "roe_deer",
                                  "3": "Vulpes"}}


def _det(cat: str, conf, bbox, *cls) -> dict:
    out = {"category": cat, "bbox": bbox}
    if conf is not None:
        out["conf"] = conf
    if cls:
        out["classifications"] = [list(c) for c in cls]
    return out


FAILURE = "Failure image access: " + "x" * 400
ENTRIES = [
    {"file": "site_a/cam1/IMG_0001.JPG", "datetime": "2024-06-01 23:30:00",
     "sequence": {"id": "site_a/cam1#00000", "frames": 1},
     "detections": [
         # rolled up to the genus (id 3 >= first_taxon_id): the raw label follows in the tags
         _det("1", 0.8, [0.125, 0.25, 0.5, 0.625], ("3", 0.9), ("0", 0.6)),
         # a category that is none of animal/person/vehicle: "unknown"
         _det("4", 0.5, [0.5, 0.0, 0.25, 0.125]),
         # exactly at the file's threshold (0.15); past the right and bottom edges: clipped
         _det("2", 0.15, [0.875, 0.9375, 0.25, 0.125], ("1", 0.7)),
         # just under the threshold: no observation
         _det("1", 0.1499, [0.0, 0.0, 0.5, 0.5], ("1", 0.99))]},
    {"file": "site_a/IMG_0002.JPG", "datetime": "2024-06-02T06:00:00",
     "sequence": {"id": 0, "frames": 1},  # id 0 is an id
     "detections": [
         # the raw label on top (id 0 < 3): nothing rolled up, whatever follows
         _det("1", 0.95, [0.0, 0.5, 1.0, 0.5], ("0", 0.85), ("3", 0.1)),
         # a taxon with nothing after it: no raw label to name; a zero-width box
         _det("1", 0.6, [0.25, 0.125, 0.0, 0.25], ("3", 0.7)),
         # left of the image and below it: clipped to x = 0, y = 1 (no height left)
         _det("1", 0.4, [-0.0625, 1.5, 0.25, 0.25], ("2", 0.45))]},
    {"file": "site_b/IMG_0003.JPG", "datetime": "2024:06:03 12:00:00.250",
     "sequence": {"id": None},
     # a whole-image call (a box that rounds to the whole frame): never thresholded, no count
     "detections": [_det("1", 0.05, [0.0, 0.0, 1.0000004, 1.0], ("2", 0.55), ("1", 0.3))]},
    {"file": "IMG_0004.JPG", "datetime": "2024-05-31 04:00:00",
     # every box under the threshold (one with no conf at all): blank, P = 1 - 0.125
     "detections": [_det("1", 0.1, [0.1, 0.1, 0.2, 0.2]), _det("2", 0.125, [0.5, 0.5, 0.1, 0.1]),
                    _det("1", None, [0.3, 0.3, 0.1, 0.1])]},
    {"file": "site_b/IMG_0005.JPG", "datetime": "2024-06-08 00:00:00", "failure": FAILURE,
     "detections": None},
    {"file": "site_b/IMG_0006.png", "datetime": "2024-06-06 18:00:00", "detections": []},
    {"file": "site_b/IMG_0007", "datetime": "2024-06-02 10:00:00", "detections": []},
    # no detections list and no failure text: not classified either
    {"file": "site_b/IMG_0008.JPG", "datetime": "2024-06-04 00:00:00", "detections": None},
]
BOX = ("bboxX", "bboxY", "bboxWidth", "bboxHeight")
KEYS = ("observationType", "scientificName", "count", "classificationProbability", *BOX,
        "observationTags")
# (type, scientificName, count, probability, x, y, width, height, tags), worked by hand
EXPECTED = {
    "site_a/cam1/IMG_0001.JPG": [
        ("animal", "Vulpes", "1", "0.9000", "0.1250", "0.2500", "0.5000", "0.6250",
         "label:Vulpes|rolledUpFrom:red_fox|rawProbability:0.6000"),
        ("unknown", "", "1", "0.5000", "0.5000", "0.0000", "0.2500", "0.1250", ""),
        ("human", "", "1", "0.7000", "0.8750", "0.9375", "0.1250", "0.0625", "label:badger")],
    "site_a/IMG_0002.JPG": [
        ("animal", "Vulpes vulpes", "1", "0.8500", "0.0000", "0.5000", "1.0000", "0.5000",
         "label:red_fox"),
        ("animal", "Vulpes", "1", "0.7000", "0.2500", "0.1250", "0.0001", "0.2500",
         "label:Vulpes"),
        ("animal", "Capreolus capreolus", "1", "0.4500", "0.0000", "1.0000", "0.2500",
         "0.0001", "label:roe_deer")],
    "site_b/IMG_0003.JPG": [
        ("animal", "Capreolus capreolus", "", "0.5500", "", "", "", "", "label:roe_deer")],
    "IMG_0004.JPG": [("blank", "", "", "0.8750", "", "", "", "", "")],
    "site_b/IMG_0005.JPG": [("unclassified", "", "", "", "", "", "", "", "")],
    "site_b/IMG_0006.png": [("blank", "", "", "", "", "", "", "", "")],
    "site_b/IMG_0007": [("blank", "", "", "", "", "", "", "", "")],
    "site_b/IMG_0008.JPG": [("unclassified", "", "", "", "", "", "", "", "")],
}


def package(tmp: Path, md: dict, name: str = "pkg", **opts) -> tuple[dict, str]:
    """write_package into tmp/name; (its summary, what it warned)."""
    warn = io.StringIO()
    opts.setdefault("image_dir", tmp / "card")
    opts.setdefault("location", (51.5, -0.125))
    summary = write_package(md, tmp / name, PackageOptions(**opts), warn=warn)
    return summary, warn.getvalue()


def by_file(pkg: Path) -> tuple[dict, dict]:
    """({filePath: media row}, {filePath: [its observation rows]})."""
    media = {m["filePath"]: m for m in rows(pkg, "media")}
    path_of = {m["mediaID"]: p for p, m in media.items()}
    obs: dict = {}
    for o in rows(pkg, "observations"):
        obs.setdefault(path_of[o["mediaID"]], []).append(o)
    return media, obs


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def jpeg(path: Path, w: int, h: int, seed: int, exif: dict | None = None) -> Path:
    """A textured picture (JPEG, or the format of its suffix); `exif`: {"original": ...,
    "datetime": ...} capture times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(texture(w, h, seed))
    ex = Image.Exif()
    if exif and "datetime" in exif:
        ex[0x0132] = exif["datetime"]
    if exif and "original" in exif:
        ex.get_ifd(0x8769)[0x9003] = exif["original"]
    im.save(path, exif=ex.tobytes(), **({"quality": 88} if path.suffix == ".jpg" else {}))
    return path


# -- the rows of one package, worked by hand ------------------------------------------------


@needs_standard
def test_observations_media_and_deployments_worked_by_hand(tmp_path: Path,
                                                           schema_server) -> None:
    md = {**HEADER, "images": ENTRIES}
    summary, warned = package(tmp_path, md, "card", utc_offset="+02:00",
                              taxon_of=lambda label: TAXA.get(label, label))
    pkg = tmp_path / "card"  # the package in the image folder: paths below it
    assert validate(pkg, schema_server) == []
    assert summary == {"deployments": 3, "media": 8, "observations": 12, "output": str(pkg)}
    assert "warning" not in warned
    media, obs = by_file(pkg)
    assert set(media) == set(EXPECTED)
    assert {p: [tuple(o[k] for k in KEYS) for o in rows_] for p, rows_ in obs.items()} == \
        EXPECTED
    assert {p: m["deploymentID"] for p, m in media.items()} == {
        "site_a/cam1/IMG_0001.JPG": "site_a", "site_a/IMG_0002.JPG": "site_a",
        "site_b/IMG_0003.JPG": "site_b", "IMG_0004.JPG": "card", "site_b/IMG_0005.JPG": "site_b",
        "site_b/IMG_0006.png": "site_b", "site_b/IMG_0007": "site_b",
        "site_b/IMG_0008.JPG": "site_b"}
    assert {p: m["timestamp"] for p, m in media.items()} == {
        "site_a/cam1/IMG_0001.JPG": "2024-06-01T23:30:00+02:00",
        "site_a/IMG_0002.JPG": "2024-06-02T06:00:00+02:00",
        "site_b/IMG_0003.JPG": "2024-06-03T12:00:00+02:00",
        "IMG_0004.JPG": "2024-05-31T04:00:00+02:00",
        "site_b/IMG_0005.JPG": "2024-06-08T00:00:00+02:00",
        "site_b/IMG_0006.png": "2024-06-06T18:00:00+02:00",
        "site_b/IMG_0007": "2024-06-02T10:00:00+02:00",
        "site_b/IMG_0008.JPG": "2024-06-04T00:00:00+02:00"}
    assert {p: (m["fileName"], m["fileMediatype"], m["filePublic"]) for p, m in media.items()
            } == {"site_a/cam1/IMG_0001.JPG": ("IMG_0001.JPG", "image/jpeg", "false"),
                  "site_a/IMG_0002.JPG": ("IMG_0002.JPG", "image/jpeg", "false"),
                  "site_b/IMG_0003.JPG": ("IMG_0003.JPG", "image/jpeg", "false"),
                  "IMG_0004.JPG": ("IMG_0004.JPG", "image/jpeg", "false"),
                  "site_b/IMG_0005.JPG": ("IMG_0005.JPG", "image/jpeg", "false"),
                  "site_b/IMG_0006.png": ("IMG_0006.png", "image/png", "false"),
                  "site_b/IMG_0007": ("IMG_0007", "image/jpeg", "false"),
                  "site_b/IMG_0008.JPG": ("IMG_0008.JPG", "image/jpeg", "false")}
    # every observation: its media's deployment and time; one event per burst
    for path, rows_ in obs.items():
        for o in rows_:
            assert (o["deploymentID"], o["eventStart"], o["eventEnd"]) == (
                media[path]["deploymentID"], media[path]["timestamp"], media[path]["timestamp"])
            assert o["observationLevel"] == "media"
    assert {p: {o["eventID"] for o in r} for p, r in obs.items()} == {
        "site_a/cam1/IMG_0001.JPG": {"site_a-site_a/cam1#00000"},
        "site_a/IMG_0002.JPG": {"site_a-0"}, "site_b/IMG_0003.JPG": {""},
        "IMG_0004.JPG": {""}, "site_b/IMG_0005.JPG": {""}, "site_b/IMG_0006.png": {""},
        "site_b/IMG_0007": {""}, "site_b/IMG_0008.JPG": {""}}
    ids = [o["observationID"] for r in obs.values() for o in r]
    assert len(set(ids)) == len(ids) == 12
    assert len({m["mediaID"] for m in media.values()}) == 8
    # who and when classified: the completion time of the classification, in UTC
    classified = [o for r in obs.values() for o in r if o["observationType"] != "unclassified"]
    assert {(o["classificationMethod"], o["classifiedBy"], o["classificationTimestamp"])
            for o in classified} == {("machine", "MDV5A + speciesnet_v4.0.1a",
                                      "2024-07-02T13:14:15Z")}
    failed = obs["site_b/IMG_0005.JPG"][0]
    assert (failed["classificationMethod"], failed["classifiedBy"],
            failed["classificationTimestamp"]) == ("", "", "")
    assert failed["observationComments"] == FAILURE[:300]
    assert [(o["classifiedBy"], o["observationComments"])
            for o in obs["site_b/IMG_0008.JPG"]] == [("", "")]
    deps = rows(pkg, "deployments")
    assert [(d["deploymentID"], d["deploymentStart"], d["deploymentEnd"], d["latitude"],
             d["longitude"], d["deploymentComments"]) for d in deps] == [
        ("card", "2024-05-31T04:00:00+02:00", "2024-05-31T04:00:00+02:00", "51.5", "-0.125",
         ""),
        ("site_a", "2024-06-01T23:30:00+02:00", "2024-06-02T06:00:00+02:00", "51.5", "-0.125",
         ""),
        ("site_b", "2024-06-02T10:00:00+02:00", "2024-06-08T00:00:00+02:00", "51.5", "-0.125",
         "")]
    desc = json.loads((pkg / "datapackage.json").read_text())
    # names of animals only (the person classified "badger" adds none), sorted
    assert desc["taxonomic"] == [{"scientificName": "Capreolus capreolus"},
                                 {"scientificName": "Vulpes"},
                                 {"scientificName": "Vulpes vulpes"}]
    assert desc["temporal"] == {"start": "2024-05-31", "end": "2024-06-08"}
    assert desc["spatial"] == {"type": "Point", "coordinates": [-0.125, 51.5]}
    assert desc["contributors"] == [{"title": "MDV5A + speciesnet_v4.0.1a",
                                     "role": "contributor"}]
    # resources and profile exactly as the standard's own example package declares them
    example = json.loads((STANDARD / "example" / "datapackage.json").read_text())
    assert desc["resources"] == example["resources"][:3]
    assert desc["profile"] == example["profile"]
    assert desc["project"] == {"title": "Camera trap classifications (kerascls-edge)",
                               "samplingDesign": "opportunistic",
                               "captureMethod": ["activityDetection"],
                               "individualAnimals": False, "observationLevel": ["media"]}
    assert desc["title"] == "Camera trap classifications (kerascls-edge)"
    from kerascls_edge import __version__
    assert desc["sources"] == [{"title": "kerascls-edge", "version": __version__}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", desc["created"])
    # the header is exactly the standard's columns, in its order
    for table in ("deployments", "media", "observations"):
        schema = json.loads((STANDARD / f"{table}-table-schema.json").read_text())
        with open(pkg / f"{table}.csv", newline="", encoding="utf-8") as f:
            assert next(csv.reader(f)) == [fl["name"] for fl in schema["fields"]]


@pytest.mark.parametrize("name,kind", [
    ("animal", "animal"), ("person", "human"), ("human", "human"), ("vehicle", "vehicle"),
    ("PERSON", "human"), ("Vehicle", "vehicle"), ("insect", "unknown"), (None, "unknown")])
def test_observation_type_from_the_detection_category(tmp_path: Path, name, kind) -> None:
    """A category the file does not name (None) or that is none of animal/person/vehicle is
    'unknown', never guessed; only animals get a scientificName."""
    md = {"info": {}, "detection_categories": {"1": name} if name else {"2": "animal"},
          "classification_categories": {"0": "red_fox"},
          "images": [{"file": "s/IMG_1.JPG", "datetime": "2024-06-01 10:00:00",
                      "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2], ("0", 0.7))]}]}
    package(tmp_path, md)
    o = rows(tmp_path / "pkg", "observations")[0]
    assert (o["observationType"], o["scientificName"], o["observationTags"]) == (
        kind, "red_fox" if kind == "animal" else "", "label:red_fox")


def test_media_ids_are_one_per_image_and_stable_across_packages(tmp_path: Path) -> None:
    """The same image, however the results spell its path, has the same mediaID in every
    package made from it (a rerun's observations join the earlier media)."""
    first = {**HEADER, "images": [
        {"file": "site_a/IMG_1.JPG", "datetime": "2024-06-01 08:00:00", "detections": []},
        {"file": "site_a/IMG_2.JPG", "datetime": "2024-06-01 08:00:01", "detections": []}]}
    second = {**HEADER, "images": [
        {"file": "./site_a/x/../IMG_2.JPG", "datetime": "2024-06-01 08:00:01",
         "detections": []},
        {"file": "site_a\\IMG_1.JPG", "datetime": "2024-06-01 08:00:00", "detections": []}]}
    package(tmp_path, first, "one")
    package(tmp_path, second, "two")
    one = {m["fileName"]: m["mediaID"] for m in rows(tmp_path / "one", "media")}
    two = {m["fileName"]: m["mediaID"] for m in rows(tmp_path / "two", "media")}
    assert one == two and one["IMG_1.JPG"] != one["IMG_2.JPG"]
    assert {m["filePath"] for m in rows(tmp_path / "two", "media")} == {
        "site_a/IMG_1.JPG", "site_a/IMG_2.JPG"}
    assert all(re.fullmatch(r"[0-9a-f]{16}", m) for m in one.values())
    obs = {o["mediaID"]: o["observationID"] for o in rows(tmp_path / "two", "observations")}
    assert obs == {m: f"{m}-0" for m in one.values()}


# -- thresholds, classifiers, timestamps ----------------------------------------------------


def _thr_md(info: dict) -> dict:
    confs = [0.19, 0.2, 0.3, 0.5]
    return {"info": info, "detection_categories": {"1": "animal"},
            "images": [{"file": f"s/IMG_{k}.JPG", "datetime": f"2024-06-0{k + 1} 10:00:00",
                        "detections": [_det("1", c, [0.1, 0.1, 0.2, 0.2])]}
                       for k, c in enumerate(confs)]}


@pytest.mark.parametrize("info,flag,kept", [
    ({}, None, ["0.2000", "0.3000", "0.5000"]),  # no threshold anywhere: 0.2
    ({"detector_metadata": {"typical_detection_threshold": 0.3}}, None, ["0.3000", "0.5000"]),
    ({"detector_metadata": {"typical_detection_threshold": 0}}, None,  # an int: 0 keeps all
     ["0.1900", "0.2000", "0.3000", "0.5000"]),
    ({"detector_metadata": {"typical_detection_threshold": "0.3"}}, None,  # not a number
     ["0.2000", "0.3000", "0.5000"]),
    ({"detector_metadata": "0.3"}, None, ["0.2000", "0.3000", "0.5000"]),
    ({"detector_metadata": {"typical_detection_threshold": 0.3}}, 0.5, ["0.5000"]),
    ({"detector_metadata": {"typical_detection_threshold": 0.3}}, 0.0,  # the flag, even 0
     ["0.1900", "0.2000", "0.3000", "0.5000"]),
])
def test_the_detection_threshold_comes_from_the_flag_then_the_file(tmp_path: Path, info,
                                                                   flag, kept) -> None:
    package(tmp_path, _thr_md(info), detection_threshold=flag)
    got = [o["classificationProbability"] for o in rows(tmp_path / "pkg", "observations")
           if o["observationType"] == "animal"]
    assert got == kept


@pytest.mark.parametrize("info,flag,who", [
    ({"detector": "MDV5A", "classifier": "clf_v2"}, None, "MDV5A + clf_v2"),
    ({"detector": "MDV5A"}, None, "MDV5A"),
    ({"classifier": "clf_v2"}, None, "clf_v2"),
    # a whole-image run: no detector ran
    ({"detector": "none (whole image)", "classifier": "clf_v2"}, None, "clf_v2"),
    ({}, None, "unknown model"),
    ({"detector": "MDV5A", "classifier": "clf_v2"}, "bundle v3 sha256:0abc",
     "bundle v3 sha256:0abc"),
])
def test_classified_by_names_the_models(tmp_path: Path, info, flag, who) -> None:
    md = {"info": info, "detection_categories": {"1": "animal"}, "images": [
        {"file": "s/IMG_1.JPG", "datetime": "2024-06-01 10:00:00",
         "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2])]}]}
    package(tmp_path, md, classified_by=flag)
    assert rows(tmp_path / "pkg", "observations")[0]["classifiedBy"] == who
    desc = json.loads((tmp_path / "pkg" / "datapackage.json").read_text())
    assert desc["contributors"] == [{"title": who, "role": "contributor"}]


@pytest.mark.parametrize("times,when", [
    ({"classification_completion_time": "2024-07-02 13:14:15",
      "detection_completion_time": "2024-07-01 09:00:00"}, "2024-07-02T13:14:15Z"),
    ({"detection_completion_time": "2024-07-01 09:00:00"}, "2024-07-01T09:00:00Z"),
    ({"classification_completion_time": "soon",
      "detection_completion_time": "2024-07-01 09:00:00"}, "2024-07-01T09:00:00Z"),
    ({"classification_completion_time": "2024-07-02 13:14:15.918273"}, "2024-07-02T13:14:15Z"),
    ({}, ""),
])
def test_classification_timestamp_is_when_the_run_finished(tmp_path: Path, times, when) -> None:
    md = {"info": times, "detection_categories": {"1": "animal"}, "images": [
        {"file": "s/IMG_1.JPG", "datetime": "2024-06-01 10:00:00",
         "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2])]}]}
    package(tmp_path, md)
    assert rows(tmp_path / "pkg", "observations")[0]["classificationTimestamp"] == when


@pytest.fixture
def utc_plus_3(monkeypatch):
    """This machine's clock three hours ahead of UTC (a POSIX TZ string: no tzdata needed)."""
    monkeypatch.setenv("TZ", "XYZ-3")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_capture_times_from_record_exif_and_mtime(tmp_path: Path, utc_plus_3) -> None:
    """The record's datetime first, else the image's EXIF DateTimeOriginal, else its
    DateTime, else its mtime as this machine shows it (``ls -l``: a card's FAT times are the
    camera's local clock); each with the --utc_offset zone."""
    card = tmp_path / "card"
    jpeg(card / "s1" / "exif.jpg", 161, 97, 1,
         {"original": "2023:11:05 17:45:12", "datetime": "2023:11:06 08:00:00"})
    jpeg(card / "s1" / "dt_only.jpg", 143, 101, 2, {"datetime": "2023:11:07 09:10:11"})
    plain = card / "s2" / "plain.png"
    plain.parent.mkdir()
    Image.fromarray(texture(127, 93, 3)).save(plain)
    os.utime(plain, (1700000000.75, 1700000000.75))  # 2023-11-14T22:13:20.75Z, 01:13 at +3
    broken = card / "s2" / "cut.jpg"
    broken.write_bytes(jpeg(tmp_path / "whole.jpg", 150, 90, 4).read_bytes()[:200])
    os.utime(broken, (1600000000, 1600000000))  # 2020-09-13T12:26:40Z, 15:26:40 at +3
    record = jpeg(card / "s1" / "record.jpg", 99, 77, 5, {"original": "2023:11:05 17:45:12"})
    os.utime(record, (1600000000, 1600000000))
    for k, suffix in enumerate((".png", ".webp", ".tif")):  # EXIF in other formats
        jpeg(card / "s3" / f"x{suffix}", 111 + k, 71 + k, 6 + k,
             {"original": f"2021:03:0{k + 4} 05:06:07"})
    md = {**HEADER, "images": [
        {"file": "s1/exif.jpg", "detections": []},
        {"file": "s1/dt_only.jpg", "datetime": "not a time", "detections": []},
        {"file": "s2/plain.png", "detections": []},
        {"file": "s2/cut.jpg", "detections": []},
        {"file": "s1/record.jpg", "datetime": "2022-02-02 02:02:02", "detections": []},
        *({"file": f"s3/x{x}", "detections": []} for x in (".png", ".webp", ".tif"))]}
    summary, _ = package(tmp_path, md, image_dir=card, utc_offset="-0500")
    got = {m["filePath"]: m["timestamp"] for m in rows(tmp_path / "pkg", "media")}
    assert got == {"s1/exif.jpg": "2023-11-05T17:45:12-05:00",
                   "s1/dt_only.jpg": "2023-11-07T09:10:11-05:00",
                   "s2/plain.png": "2023-11-15T01:13:20-05:00",
                   "s2/cut.jpg": "2020-09-13T15:26:40-05:00",
                   "s1/record.jpg": "2022-02-02T02:02:02-05:00",
                   "s3/x.png": "2021-03-04T05:06:07-05:00",
                   "s3/x.webp": "2021-03-05T05:06:07-05:00",
                   "s3/x.tif": "2021-03-06T05:06:07-05:00"}
    deps = {d["deploymentID"]: d for d in rows(tmp_path / "pkg", "deployments")}
    assert (deps["s2"]["deploymentStart"], deps["s2"]["deploymentEnd"]) == (
        "2020-09-13T15:26:40-05:00", "2023-11-15T01:13:20-05:00")
    assert (deps["s1"]["deploymentStart"], deps["s1"]["deploymentEnd"]) == (
        "2022-02-02T02:02:02-05:00", "2023-11-07T09:10:11-05:00")
    assert summary["media"] == 8


def test_an_image_with_no_time_and_no_file_is_a_one_line_error(tmp_path: Path) -> None:
    md = {**HEADER, "images": [{"file": "s1/gone.jpg", "detections": []}]}
    with pytest.raises(EdgeError) as e:
        package(tmp_path, md)
    assert str(e.value) == (
        f"malformed results entry images[0] ('s1/gone.jpg'): cannot find image "
        f"{tmp_path / 'card' / 's1' / 'gone.jpg'} for its capture time (pass --image_dir, the "
        "folder the results' file paths are relative to)")
    assert not (tmp_path / "pkg").exists()  # the folder this run made is gone again


@pytest.mark.parametrize("text,minutes", [
    ("Z", 0), (" +05:30 ", 330), ("-0500", -300), ("+14:00", 840), ("-12:00", -720),
    ("+13:59", 839), ("-11:59", -719), ("+00:59", 59), ("-00:30", -30)])
def test_utc_offsets_a_clock_can_have(text: str, minutes: int) -> None:
    assert parse_offset(text) == timezone(timedelta(minutes=minutes))


@pytest.mark.parametrize("text,why", [
    ("+14:01", "out of range"), ("-12:01", "out of range"), ("+05:60", "minutes must be"),
    ("+0530Z", "must be Z or"), ("z", "must be Z or"), ("+5:30", "must be Z or"),
    ("UTC", "must be Z or")])
def test_utc_offsets_no_clock_has_are_refused(text: str, why: str) -> None:
    with pytest.raises(EdgeError, match=re.escape(why)) as e:
        parse_offset(text)
    assert str(e.value).startswith("--utc_offset") and repr(text) in str(e.value)


@pytest.mark.parametrize("text,value", [("90,180", (90.0, 180.0)), ("-90,-180", (-90.0, -180.0)),
                                        (" 51.05 , 3.72", (51.05, 3.72))])
def test_locations_on_earth(text: str, value) -> None:
    assert parse_location(text) == value


@pytest.mark.parametrize("text,why", [("90.5,0", "out of range"), ("0,180.5", "out of range"),
                                      ("-90.5,0", "out of range"), ("0,-181", "out of range"),
                                      ("51.05", "must be LAT,LON"), ("1,2,3", "must be LAT,LON"),
                                      ("north,east", "must be LAT,LON")])
def test_locations_off_earth_are_refused(text: str, why: str) -> None:
    with pytest.raises(EdgeError, match=re.escape(why)) as e:
        parse_location(text)
    assert str(e.value).startswith("--location") and repr(text) in str(e.value)


@pytest.mark.parametrize("name", ["", ".", "..", "  ", " .. "])
def test_a_deployment_naming_nothing_is_refused(name: str) -> None:
    with pytest.raises(EdgeError, match=r"^--deployment must name the deployment"):
        check_deployment(name)
    assert check_deployment("CAM07") == "CAM07"


# -- where the files are ----------------------------------------------------------------------

FILE_PATH = re.compile(json.loads((STANDARD / "media-table-schema.json").read_text())["fields"][
    4]["constraints"]["pattern"]) if (STANDARD / "media-table-schema.json").is_file() else None


@needs_standard
def test_file_paths_relative_to_the_package_and_the_standards_pattern(tmp_path: Path) -> None:
    """Package above the images: paths below it. Names the standard's pattern forbids ('..'
    inside, a leading '.' or '~') are percent-encoded; fileName keeps the exact name."""
    names = ["site_a/IMG_1.JPG", "site_a/a..b.jpg", ".hidden/IMG_2.JPG", "~tmp/IMG_3.JPG",
             "site_a/...jpg"]
    md = {**HEADER, "images": [{"file": n, "datetime": f"2024-06-0{k + 1} 10:00:00",
                                "detections": []} for k, n in enumerate(names)]}
    card = tmp_path / "card"
    _, warned = package(tmp_path, md, "card", image_dir=card, deployment="CAM07")
    media = rows(card, "media")
    assert [(m["filePath"], m["fileName"]) for m in media] == [
        ("site_a/IMG_1.JPG", "IMG_1.JPG"), ("site_a/a%2E.b.jpg", "a..b.jpg"),
        ("%2Ehidden/IMG_2.JPG", "IMG_2.JPG"), ("%7Etmp/IMG_3.JPG", "IMG_3.JPG"),
        ("site_a/%2E%2E.jpg", "...jpg")]
    assert all(FILE_PATH.match(m["filePath"]) for m in media)
    assert {m["deploymentID"] for m in media} == {"CAM07"}
    assert "outside" not in warned
    # the package a level above: the image folder's name is part of the path
    package(tmp_path, md, ".", image_dir=card, deployment="CAM07")
    media = rows(tmp_path, "media")
    assert [m["filePath"] for m in media] == [  # a '.' or '~' inside the path is allowed
        "card/site_a/IMG_1.JPG", "card/site_a/a%2E.b.jpg", "card/.hidden/IMG_2.JPG",
        "card/~tmp/IMG_3.JPG", "card/site_a/%2E%2E.jpg"]
    assert all(FILE_PATH.match(m["filePath"]) for m in media)


def test_images_outside_the_package_keep_their_results_path_and_are_warned(
        tmp_path: Path) -> None:
    names = ["../elsewhere/IMG_1.JPG", "/mnt/card/IMG_2.JPG", "site_a/IMG_3.txt", "~",
             "rec/clip.wav"]
    md = {**HEADER, "images": [{"file": n, "datetime": f"2024-06-0{k + 1} 10:00:00",
                                "detections": []} for k, n in enumerate(names)]}
    summary, warned = package(tmp_path, md, image_dir=tmp_path / "card")
    media = rows(tmp_path / "pkg", "media")
    assert [(m["filePath"], m["fileMediatype"]) for m in media] == [
        ("elsewhere/IMG_1.JPG", "image/jpeg"), ("mnt/card/IMG_2.JPG", "image/jpeg"),
        ("site_a/IMG_3.txt", "image/jpeg"), ("unnamed", "image/jpeg"),
        ("rec/clip.wav", media[-1]["fileMediatype"])]
    assert media[-1]["fileMediatype"].startswith("audio/")  # a sound recording stays one
    assert all(FILE_PATH is None or FILE_PATH.match(m["filePath"])
               for m in rows(tmp_path / "pkg", "media"))
    line = next(s for s in warned.splitlines() if "outside" in s)
    assert line == (f"kerascls-edge: warning: 5 image(s) lie outside {tmp_path / 'pkg'}; "
                    f"their media.filePath is relative to {tmp_path / 'card'} (Camtrap DP wants "
                    "paths relative to the package: write the package at or above the image "
                    "folder)")


def test_no_location_leaves_coordinates_empty_and_says_so(tmp_path: Path) -> None:
    md = {**HEADER, "images": [
        {"file": "a/IMG_1.JPG", "datetime": "2024-06-01 10:00:00", "detections": []},
        {"file": "b/IMG_1.JPG", "failure": "Failure image access", "detections": None},
        {"file": "b/IMG_2.JPG", "failure": "Failure image access", "detections": None}]}
    summary, warned = package(tmp_path, md, "card", location=None)
    deps = rows(tmp_path / "card", "deployments")
    assert [(d["deploymentID"], d["latitude"], d["longitude"], d["deploymentComments"])
            for d in deps] == [("a", "", "", "location unknown: fill in latitude/longitude")]
    assert summary["left_out_failures"] == 2 and summary["media"] == 1
    assert warned.splitlines() == [
        "kerascls-edge: warning: no --location: deployments.csv has empty latitude/longitude "
        "for new deployments, which Camtrap DP requires; fill them in before publishing (a "
        "rerun keeps what you fill in)",
        "kerascls-edge: warning: 2 failure entries for files that no longer exist left out of "
        "media.csv (no capture time to give)"]
    desc = json.loads((tmp_path / "card" / "datapackage.json").read_text())
    assert desc["spatial"] == {"type": "Point", "coordinates": [0.0, 0.0]}
    assert "kept_edits" not in summary


def test_an_empty_results_file_gives_an_empty_package(tmp_path: Path) -> None:
    summary, _ = package(tmp_path, {**HEADER, "images": []})
    assert summary == {"deployments": 0, "media": 0, "observations": 0,
                       "output": str(tmp_path / "pkg")}
    desc = json.loads((tmp_path / "pkg" / "datapackage.json").read_text())
    today = desc["created"][:10]
    assert desc["temporal"] == {"start": today, "end": today} and desc["taxonomic"] == []


# -- malformed entries: one line naming the entry ----------------------------------------------


@pytest.mark.parametrize("entry,message", [
    (["s/IMG_1.JPG"], "malformed results entry images[1]: expected an object, got list"),
    ({"file": 7, "detections": []}, "malformed results entry images[1]: file 7 is not a path"),
    ({"file": "./", "detections": []}, "malformed results entry images[1] ('./'): file './' "
                                       "is not a path"),
    ({"file": "s/IMG_1.JPG", "detections": {"a": 1}},
     "malformed results entry images[1] ('s/IMG_1.JPG'): detections is not a list of objects"),
    ({"file": "s/IMG_1.JPG", "detections": [3]},
     "malformed results entry images[1] ('s/IMG_1.JPG'): detections is not a list of objects"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", True, [0.1, 0.1, 0.2, 0.2])]},
     "confidence True is not a number from 0 to 1"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", -0.01, [0.1, 0.1, 0.2, 0.2])]},
     "confidence -0.01 is not a number from 0 to 1"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 0.9, [0.1, float("nan"), 0.2, 0.2])]},
     "bbox [0.1, nan, 0.2, 0.2] is not four finite numbers"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 0.9, [0.1, True, 0.2, 0.2])]},
     "bbox [0.1, True, 0.2, 0.2] is not four finite numbers"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 0.9, "0 0 1 1")]},
     "bbox '0 0 1 1' is not four finite numbers"),
    ({"file": "s/IMG_1.JPG", "detections": [
        {**_det("1", 0.9, [0.1, 0.1, 0.2, 0.2]), "classifications": {"0": 0.9}}]},
     "classifications {'0': 0.9} is not a list"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2], ("0",))]},
     "classification ['0'] is not [category_id, confidence]"),
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2], ("9", 0.5))]},
     "classification id '9' is not in classification_categories"),
    # out of range above as well as below
    ({"file": "s/IMG_1.JPG", "detections": [_det("1", 1.5, [0.1, 0.1, 0.2, 0.2])]},
     "confidence 1.5 is not a number from 0 to 1"),
])
def test_a_malformed_entry_is_one_line_naming_it(tmp_path: Path, entry, message: str) -> None:
    good = {"file": "s/IMG_0.JPG", "datetime": "2024-06-01 10:00:00", "detections": []}
    if isinstance(entry, dict):
        entry = {"datetime": "2024-06-01 10:00:01", **entry}
    md = {**HEADER, "images": [good, entry]}
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "notes.txt").write_text("mine")
    with pytest.raises(EdgeError) as e:
        package(tmp_path, md)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("malformed results entry images[1]")
    # the folder was there before: it stays, with only what it held
    assert digests(tmp_path / "pkg") == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


@pytest.mark.parametrize("second", ["s/IMG_1.JPG", "s//IMG_1.JPG", "s\\IMG_1.JPG"])
def test_one_image_listed_twice_is_refused(tmp_path: Path, second: str) -> None:
    """Two entries, the same image: the smallest results file that repeats one."""
    md = {**HEADER, "images": [
        {"file": "s/IMG_1.JPG", "datetime": "2024-06-01 10:00:00", "detections": []},
        {"file": second, "datetime": "2024-06-01 10:00:00", "detections": []}]}
    with pytest.raises(EdgeError) as e:
        package(tmp_path, md)
    assert str(e.value).startswith("the results list 's/IMG_1.JPG' more than once (mediaID ")
    assert str(e.value).endswith("): each image must be one entry; remove the duplicate "
                                 "entries")
    assert not (tmp_path / "pkg").exists()
    package(tmp_path, {**md, "images": md["images"][:1]})
    assert len(rows(tmp_path / "pkg", "media")) == 1


def test_a_file_where_the_package_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pkg").write_text("not a folder")
    with pytest.raises(EdgeError) as e:
        package(tmp_path, {**HEADER, "images": []})
    assert str(e.value) == (f"refusing to write a Camtrap DP package to {tmp_path / 'pkg'}: "
                            "not a folder")
    assert (tmp_path / "pkg").read_text() == "not a folder"


# -- reruns: the user's edits are kept ------------------------------------------------------


def _site_md(sites: dict[str, list[int]]) -> dict:
    """{site: [day, ...]}: one image a day at 10:00."""
    return {**HEADER, "images": [
        {"file": f"{s}/IMG_{d:02d}.JPG", "datetime": f"2024-06-{d:02d} 10:00:00",
         "detections": [_det("1", 0.9, [0.1, 0.2, 0.3, 0.4], ("0", 0.8))]}
        for s, days in sites.items() for d in days]}


def _edit_deployments(pkg: Path, edits: dict, add: list[dict] = ()) -> None:
    with open(pkg / "deployments.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, table = reader.fieldnames, list(reader)
    for row in table:
        row.update(edits.get(row["deploymentID"], {}))
    with open(pkg / "deployments.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows([*table, *({k: r.get(k, "") for k in fields} for r in add)])


def test_a_rerun_merges_deployments_row_by_row(tmp_path: Path) -> None:
    """Edited fields stay (cleared ones too), ours refresh; a row the user added stays; an
    edited row whose site has no images now stays; an untouched one goes; new sites join."""
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1, 2], "site_b": [3], "site_c": [4]}))
    _edit_deployments(pkg, {"site_a": {"setupBy": "Ana", "latitude": "",
                                       "deploymentStart": "2024-05-30T09:00:00Z"},
                            "site_c": {"habitat": "reed bed"}},
                      add=[{"deploymentID": "site_z", "latitude": "1", "longitude": "2",
                            "deploymentStart": "2024-01-01T00:00:00Z",
                            "deploymentEnd": "2024-01-02T00:00:00Z"}])
    summary, warned = package(tmp_path, _site_md({"site_a": [1, 2, 9], "site_d": [5]}))
    deps = rows(pkg, "deployments")
    assert [d["deploymentID"] for d in deps] == ["site_a", "site_c", "site_z", "site_d"]
    a = deps[0]
    assert (a["setupBy"], a["latitude"], a["longitude"], a["deploymentStart"],
            a["deploymentEnd"]) == ("Ana", "", "-0.125", "2024-05-30T09:00:00Z",
                                    "2024-06-09T10:00:00Z")
    assert (deps[1]["habitat"], deps[1]["deploymentEnd"]) == ("reed bed",
                                                              "2024-06-04T10:00:00Z")
    assert (deps[2]["latitude"], deps[2]["deploymentEnd"]) == ("1", "2024-01-02T00:00:00Z")
    assert (deps[3]["latitude"], deps[3]["setupBy"]) == ("51.5", "")
    kept = ["site_a.deploymentStart", "site_a.latitude", "site_a.setupBy"]
    assert sorted(summary["kept_edits"]) == kept
    assert warned.splitlines()[-1].startswith("kerascls-edge: kept your edits (3): ")
    assert sorted(warned.splitlines()[-1].split(": ", 2)[2].split(", ")) == kept
    # a third run, nothing edited since: the same edits are still the user's
    summary, _ = package(tmp_path, _site_md({"site_a": [1, 2, 9, 10], "site_d": [5]}))
    a = rows(pkg, "deployments")[0]
    assert (a["setupBy"], a["latitude"], a["deploymentEnd"]) == ("Ana", "",
                                                                 "2024-06-10T10:00:00Z")
    assert sorted(summary["kept_edits"]) == kept


def test_an_edit_equal_to_the_new_value_is_kept_quietly(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1, 2]}))
    # the user already wrote the end the next card gives
    _edit_deployments(pkg, {"site_a": {"deploymentEnd": "2024-06-05T10:00:00Z"}})
    summary, warned = package(tmp_path, _site_md({"site_a": [1, 2, 5]}))
    assert rows(pkg, "deployments")[0]["deploymentEnd"] == "2024-06-05T10:00:00Z"
    assert "kept_edits" not in summary and "kept your edits" not in warned


_REPEATS = "it repeats a deploymentID or has rows longer than its header"


@pytest.mark.parametrize("mangle,why", [
    (lambda t: t.replace("deploymentID,", "deploymentID,myNotes,", 1).replace(
        "\nsite_a,", "\nsite_a,x,", 1), "its columns are not Camtrap DP's (myNotes)"),
    (lambda t: t.replace("deploymentID,", "siteID,", 1),
     "its columns are not Camtrap DP's (siteID)"),
    (lambda t: t.replace("deploymentID,", "", 1).replace("\nsite_a,", "\n", 1),
     "its columns are not Camtrap DP's (no deploymentID)"),
    (lambda t: t + t.splitlines()[1] + "\n", _REPEATS),
    (lambda t: t.rstrip("\n") + ",spilled\n", _REPEATS),
    (lambda t: t.replace("site_a", "site_\udcff"), "it cannot be read"),
], ids=["extra column", "renamed id column", "no id column", "repeated id", "long row",
        "not utf-8"])
def test_a_deployments_table_that_cannot_be_merged_is_refused(tmp_path: Path, mangle,
                                                              why: str) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1]}))
    text = (pkg / "deployments.csv").read_text()
    (pkg / "deployments.csv").write_bytes(mangle(text).encode("utf-8", "surrogateescape"))
    before = digests(pkg)
    with pytest.raises(EdgeError) as e:
        package(tmp_path, _site_md({"site_a": [1, 2]}))
    assert str(e.value).startswith(f"refusing to replace {pkg / 'deployments.csv'}: you "
                                   f"edited it and {why}")
    assert str(e.value).endswith("so your edits cannot be merged; fix it or pass --overwrite "
                                 "to replace it") and "\n" not in str(e.value)
    assert digests(pkg) == before
    package(tmp_path, _site_md({"site_a": [1, 2]}), overwrite=True)
    assert [(d["deploymentID"], d["deploymentEnd"]) for d in rows(pkg, "deployments")] == [
        ("site_a", "2024-06-02T10:00:00Z")]


def test_datapackage_keys_the_user_changed_are_kept(tmp_path: Path) -> None:
    """Changed or added keys stay; keys the data decides refresh. Reformatting the file or
    reordering keys inside a value is no edit."""
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1, 2]}))
    desc = json.loads((pkg / "datapackage.json").read_text())
    desc["title"] = "Mara river survey"
    desc["licenses"] = [{"name": "CC-BY-4.0", "scope": "data"}]
    desc["project"] = {**desc["project"], "title": "Mara"}
    desc["spatial"] = dict(reversed(list(desc["spatial"].items())))  # same value, reordered
    desc["contributors"] = [{"role": "contributor",
                             "title": "MDV5A + speciesnet_v4.0.1a"}]  # same, reordered
    (pkg / "datapackage.json").write_text(json.dumps(desc, indent=4, sort_keys=True))
    summary, warned = package(tmp_path, _site_md({"site_a": [1, 2, 8]}),
                              title="Camera traps 2024")
    new = json.loads((pkg / "datapackage.json").read_text())
    assert (new["title"], new["licenses"], new["project"]["title"]) == (
        "Mara river survey", [{"name": "CC-BY-4.0", "scope": "data"}], "Mara")
    assert new["temporal"] == {"start": "2024-06-01", "end": "2024-06-08"}
    assert sorted(summary["kept_edits"]) == ["datapackage.json licenses",
                                             "datapackage.json project",
                                             "datapackage.json title"]
    assert "datapackage.json spatial" not in warned
    # a key the user changed to exactly what this run writes: kept, nothing to report
    desc = json.loads((pkg / "datapackage.json").read_text())
    desc["spatial"]["coordinates"] = [3.72, 51.05]
    (pkg / "datapackage.json").write_text(json.dumps(desc))
    summary, _ = package(tmp_path, _site_md({"site_a": [1, 2, 8]}), location=(51.05, 3.72))
    assert "datapackage.json spatial" not in summary["kept_edits"]
    assert json.loads((pkg / "datapackage.json").read_text())["spatial"]["coordinates"] == \
        [3.72, 51.05]
    # the record is this run's, never the old one copied
    record = json.loads((pkg / "datapackage.json").read_text())["kerascls"]
    assert record["files"]["media.csv"] == hashlib.sha256(
        (pkg / "media.csv").read_bytes()).hexdigest()
    assert set(record["files"]) == {"deployments.csv", "media.csv", "observations.csv"}


@pytest.mark.parametrize("n", [8, 9])
def test_kept_edits_are_listed_eight_at_most(tmp_path: Path, n: int) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1]}))
    fields = ["setupBy", "cameraID", "cameraModel", "cameraDelay", "cameraHeight", "habitat",
              "featureType", "baitUse", "deploymentTags"][:n]
    _edit_deployments(pkg, {"site_a": {f: "x" for f in fields}})
    summary, warned = package(tmp_path, _site_md({"site_a": [1]}))
    assert sorted(summary["kept_edits"]) == sorted(f"site_a.{f}" for f in fields)
    line = warned.splitlines()[-1]
    assert line.startswith(f"kerascls-edge: kept your edits ({n}): site_a.")
    assert line.count("site_a.") == 8 and line.endswith(" ...") == (n > 8)


UNREADABLE = ("datapackage.json is not readable JSON (", "); pass --overwrite to replace them")
SOMEONE_ELSES = ("they are not from kerascls-edge (its datapackage.json is someone else's)",
                 "; pass --overwrite to replace them")


@pytest.mark.parametrize("descriptor,why", [
    (None, ("they are not from kerascls-edge (no datapackage.json of ours records them)",
            "; pass --overwrite to replace them")),
    ('{"name": "theirs"', UNREADABLE),
    ('[1, 2]', SOMEONE_ELSES),
    ('{"kerascls": {"generator": "other-tool", "files": {}}}', SOMEONE_ELSES),
    ('{"kerascls": {"generator": "kerascls-edge", "files": []}}', SOMEONE_ELSES),
    ('{"sources": [{"title": "kerascls-edge"}]}',
     ("an older kerascls-edge wrote them without recording them, so your edits cannot be told "
      "from ours (keep a copy of deployments.csv)", "; pass --overwrite to replace them")),
    ("[" * 100_000 + "]" * 100_000, UNREADABLE),
], ids=["none", "broken", "a list", "other tool", "files not a dict", "older", "deep"])
def test_package_files_that_are_not_ours_are_refused(tmp_path: Path, descriptor, why) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    if descriptor is not None:
        (pkg / "datapackage.json").write_text(descriptor)
    (pkg / "media.csv").write_text("mediaID\nm1\n")
    before = digests(pkg)
    with pytest.raises(EdgeError) as e:
        package(tmp_path, _site_md({"site_a": [1]}))
    msg = str(e.value)
    present = "media.csv" if descriptor is None else "media.csv, datapackage.json"
    assert msg.startswith(f"refusing to replace {present} in {pkg}: {why[0]}")
    assert msg.endswith(why[1]) and "\n" not in msg
    assert digests(pkg) == before
    package(tmp_path, _site_md({"site_a": [1]}), overwrite=True)
    assert [m["filePath"] for m in rows(pkg, "media")] == ["site_a/IMG_01.JPG"]


@pytest.mark.parametrize("edited", [["media.csv"], ["observations.csv"],
                                    ["media.csv", "observations.csv"]])
def test_edited_machine_tables_are_refused_and_deleted_ones_rewritten(tmp_path: Path,
                                                                      edited: list) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1]}))
    for name in edited:
        with open(pkg / name, "a", encoding="utf-8") as f:
            f.write("\n")
    before = digests(pkg)
    with pytest.raises(EdgeError) as e:
        package(tmp_path, _site_md({"site_a": [1, 2]}))
    assert str(e.value) == (f"refusing to replace {' and '.join(edited)} in {pkg}: changed "
                            "since kerascls-edge wrote them; pass --overwrite to replace them")
    assert digests(pkg) == before
    for name in edited:  # deleted rather than edited: nothing of the user's to lose
        (pkg / name).unlink()
    package(tmp_path, _site_md({"site_a": [1, 2]}))
    assert len(rows(pkg, "media")) == 2


def test_a_deleted_deployments_table_starts_afresh(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1]}))
    _edit_deployments(pkg, {"site_a": {"setupBy": "Ana"}})
    (pkg / "deployments.csv").unlink()
    summary, _ = package(tmp_path, _site_md({"site_a": [1]}))
    assert rows(pkg, "deployments")[0]["setupBy"] == "" and "kept_edits" not in summary


# -- the swap: the old package or the new one, never a mix ---------------------------------


def _tables(folder: Path, tag: str, names=packagedir.PACKAGE_FILES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text(f"{tag} {n}\n")


def test_a_swap_that_fails_half_way_puts_the_old_files_back(tmp_path: Path) -> None:
    """The staged folder lacks observations.csv (a write that never finished): the first two
    files were already swapped in; the old ones come back, the new one the old package did
    not have goes, and no folder of ours is left."""
    pkg = tmp_path / "pkg"
    _tables(pkg, "old", ("deployments.csv", "datapackage.json"))
    (pkg / "notes.txt").write_text("mine")
    staged = pkg / ".camtrapdp-new-x"
    _tables(staged, "new", ("deployments.csv", "media.csv", "datapackage.json"))
    before = digests(pkg)
    with pytest.raises(FileNotFoundError):
        packagedir.swap_in(pkg, staged, packagedir.PACKAGE_FILES)
    assert {k: v for k, v in digests(pkg).items() if not k.startswith(".camtrapdp-new")} == \
        {k: v for k, v in before.items() if not k.startswith(".camtrapdp-new")}
    assert not [p for p in pkg.iterdir() if p.name.startswith(".camtrapdp-old")]
    _tables(staged, "new", ("deployments.csv", "media.csv"))
    packagedir.swap_in(pkg, staged, ("deployments.csv", "media.csv"))
    assert [(pkg / n).read_text() for n in ("deployments.csv", "media.csv",
                                            "datapackage.json")] == [
        "new deployments.csv\n", "new media.csv\n", "old datapackage.json\n"]
    assert sorted(p.name for p in pkg.iterdir()) == [
        ".camtrapdp-new-x", "datapackage.json", "deployments.csv", "media.csv", "notes.txt"]


def test_recover_rolls_back_an_interrupted_swap(tmp_path: Path) -> None:
    """What a kill mid-swap leaves: some new files in, the old ones aside with the list of
    files the swap created. The next run restores the old package exactly."""
    pkg = tmp_path / "pkg"
    _tables(pkg, "new", ("deployments.csv", "media.csv", "observations.csv"))
    (pkg / "notes.txt").write_text("mine")
    old = pkg / ".camtrapdp-old-k1"
    _tables(old, "old", ("deployments.csv", "media.csv"))
    (old / "swap.json").write_text(json.dumps({"created": ["observations.csv",
                                                            "datapackage.json"]}))
    _tables(pkg / ".camtrapdp-new-k2", "staged")
    (pkg / ".camtrapdp-new-note.txt").write_text("a user's file named like ours")
    elsewhere = tmp_path / "elsewhere"
    _tables(elsewhere, "theirs")
    (pkg / ".camtrapdp-old-link").symlink_to(elsewhere)
    packagedir.recover(pkg)
    assert sorted(p.name for p in pkg.iterdir()) == [
        ".camtrapdp-new-note.txt", ".camtrapdp-old-link", "deployments.csv", "media.csv",
        "notes.txt"]
    assert [(pkg / n).read_text() for n in ("deployments.csv", "media.csv")] == [
        "old deployments.csv\n", "old media.csv\n"]
    assert digests(elsewhere) == {n: hashlib.sha256(f"theirs {n}\n".encode()).hexdigest()
                                  for n in packagedir.PACKAGE_FILES}
    packagedir.recover(tmp_path / "absent")  # nothing there: nothing to do


@pytest.mark.parametrize("record", [None, "{trunc", "[1]"])
def test_recover_without_a_swap_record_keeps_the_new_files(tmp_path: Path, record) -> None:
    """A kill before the swap list was written: only the files moved aside are known."""
    pkg = tmp_path / "pkg"
    _tables(pkg, "new", ("deployments.csv", "media.csv"))
    _tables(pkg / ".camtrapdp-old-k1", "old", ("deployments.csv",))
    if record is not None:
        (pkg / ".camtrapdp-old-k1" / "swap.json").write_text(record)
    packagedir.recover(pkg)
    assert sorted(p.name for p in pkg.iterdir()) == ["deployments.csv", "media.csv"]
    assert (pkg / "deployments.csv").read_text() == "old deployments.csv\n"


def test_a_rerun_over_an_interrupted_swap_writes_a_whole_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    package(tmp_path, _site_md({"site_a": [1]}))
    (pkg / ".camtrapdp-new-dead").mkdir()
    (pkg / ".camtrapdp-new-dead" / "media.csv").write_text("half")
    summary, _ = package(tmp_path, _site_md({"site_a": [1, 2]}))
    assert summary["media"] == 2
    assert sorted(p.name for p in pkg.iterdir()) == [
        "datapackage.json", "deployments.csv", "media.csv",
        "observations.csv"]


def test_staging_is_removed_unless_committed(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    with packagedir.Staging(pkg) as staging:
        staging.path("media.csv").write_text("m\n")
        assert staging.dir.parent == pkg and staging.dir.name.startswith(".camtrapdp-new-")
        assert staging.sha256("media.csv") == hashlib.sha256(b"m\n").hexdigest()
    assert list(pkg.iterdir()) == []
    with packagedir.Staging(pkg) as staging:
        staging.path("media.csv").write_text("m\n")
        staging.commit(["media.csv"])
    assert [p.name for p in pkg.iterdir()] == ["media.csv"]


def test_a_package_path_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path in (tmp_path / "file", tmp_path / "dangling"):
        with pytest.raises(EdgeError, match=f"^refusing to write a Camtrap DP package to "
                                            f"{re.escape(str(path))}: not a folder$"):
            packagedir.inspect(path, True)
    assert packagedir.inspect(tmp_path / "nowhere", False).record is None


def test_images_are_found_through_the_files_image_base(tmp_path: Path, monkeypatch) -> None:
    """No --image_dir: the results' own image_base, else the working folder, is where the
    images (for their EXIF time) and the top-level deployment's name come from."""
    card = tmp_path / "CAM07"
    jpeg(card / "IMG_1.jpg", 131, 89, 9, {"original": "2022:08:09 10:11:12"})
    jpeg(card / "north" / "IMG_2.jpg", 117, 83, 10, {"original": "2022:08:10 10:11:12"})
    images = [{"file": "IMG_1.jpg", "detections": []},
              {"file": "north/IMG_2.jpg", "detections": []}]
    want = [("IMG_1.jpg", "CAM07", "2022-08-09T10:11:12Z"),
            ("IMG_2.jpg", "north", "2022-08-10T10:11:12Z")]
    md = {"info": {"image_base": str(card)}, "images": images}
    package(tmp_path, md, "a", image_dir=None)
    assert [(m["fileName"], m["deploymentID"], m["timestamp"])
            for m in rows(tmp_path / "a", "media")] == want
    monkeypatch.chdir(card)
    package(tmp_path, {"info": {"image_base": 3}, "images": images}, "b", image_dir=None)
    assert [(m["fileName"], m["deploymentID"], m["timestamp"])
            for m in rows(tmp_path / "b", "media")] == want


def test_confidences_of_exactly_0_and_1_are_valid(tmp_path: Path) -> None:
    """MegaDetector rounds to 3 decimals (0.9996 -> 1.0) and lists boxes of conf 0.0: both
    ends of [0, 1] are confidences, not malformed entries. A package folder whose parents do
    not exist yet is made with them."""
    md = {**HEADER, "images": [{"file": "s/IMG_1.JPG", "datetime": "2024-06-01 10:00:00",
                                "detections": [_det("1", 1.0, [0.1, 0.1, 0.2, 0.2], ("0", 1.0)),
                                               _det("1", 0.0, [0.5, 0.5, 0.2, 0.2], ("1", 0.0)),
                                               # right of the image: x = 1, no width left
                                               _det("1", 0.5, [1.25, 0.5, 0.1, 0.1])]}]}
    package(tmp_path, md, "new/deeper/pkg")
    obs = rows(tmp_path / "new" / "deeper" / "pkg", "observations")
    assert [(o["classificationProbability"], o["bboxX"], o["bboxWidth"]) for o in obs] == [
        ("1.0000", "0.1000", "0.2000"), ("0.5000", "1.0000", "0.0001")]


def test_a_video_is_one_observation_of_the_whole_clip(tmp_path: Path) -> None:
    """A video's observation is its per-video label for the whole clip: no box (the standard's
    bbox fields describe one frame), count = the most boxes on one frame."""
    video = {"rule": "mean", "frames_used": 2, "classifications": [["0", 0.75]],
             "frames": [{"frame_number": 0, "time": 0.0, "boxes": 2},
                        {"frame_number": 10, "time": 1.0, "boxes": 1}]}
    md = {**HEADER, "images": [{"file": "s/CLIP_1.MP4", "datetime": "2024-06-01 10:00:00",
                                "detections": [], "video": video}]}
    package(tmp_path, md)
    o, = rows(tmp_path / "pkg", "observations")
    assert (o["observationType"], o["count"], o["classificationProbability"],
            o["eventEnd"]) == ("animal", "2", "0.7500", "2024-06-01T10:00:01Z")
    assert [o[k] for k in BOX] == ["", "", "", ""]
