"""The camera-trap workflow on the device, at the values where a plausible bug shows (issue 26).

Roll-up thresholds equal to sums a uint8 model really produces (multiples of 1/256, exact in
binary), two taxa competing at one rank, nested site/camera/image folders, boxes with x ≠ y
and touching the right/bottom edge, several detections per image with the best not first,
blank frames whose boxes are all under the threshold, bursts longer than the gap. Every
expected value is worked out by hand here (or read from the standard's and MegaDetector's own
validators), never computed by the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.camtrapdp import PackageOptions, write_package  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from kerascls_edge.sequences import annotate_folder, smooth, split_sequences  # noqa: E402
from kerascls_edge.sortinto import labels_from_csv, labels_from_json, sort_into  # noqa: E402
from kerascls_edge.taxonomy import (  # noqa: E402
    Post,
    Rollup,
    deployment_of,
    read_allow,
    read_taxonomy,
)
from tests.camtrapdp_check import STANDARD, rows, validate  # noqa: E402
from tests.pictures import render  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, SPECIESNET  # noqa: E402

Q = 1 / 256  # a uint8 model's probabilities are multiples of this (exact binary fractions)


def q(*counts: int) -> np.ndarray:
    """Probabilities as a uint8 model dequantizes them: counts / 256, float32."""
    assert sum(counts) == 256, sum(counts)
    return (np.array(counts, np.float32) * np.float32(Q)).astype(np.float32)


def validate_md(path: Path) -> list:
    """MegaDetector's own validator (megadetector-utils)."""
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    return v.validate_batch_results(str(path))["validation_results"]["errors"]


# -- taxonomy: roll-up ----------------------------------------------------------------------------

HEADER = "label,kingdom,phylum,class,order,family,genus,species,scientificName,commonName\n"
CARNIVORA = "Animalia,Chordata,Mammalia,Carnivora"
TAXONOMY = HEADER + (
    f"ocelot,{CARNIVORA},Felidae,Leopardus,pardalis,,Ocelot\n"
    f"margay,{CARNIVORA},Felidae,Leopardus,wiedii,,Margay\n"
    f"bobcat,{CARNIVORA},Felidae,Lynx,rufus,,Bobcat\n"
    f"coyote,{CARNIVORA},Canidae,Canis,latrans,,Coyote\n"
    f"wolf,{CARNIVORA},Canidae,Canis,lupus,,Grey wolf\n"
    f"grey_fox,{CARNIVORA},Canidae,Urocyon,cinereoargenteus,,Grey fox\n"
    "empty,,,,,,,,,\n")
LABELS = ["ocelot", "margay", "bobcat", "coyote", "wolf", "grey_fox", "empty"]
# taxa holding 2+ labels, in the order the lineages first name them; ids follow the 7 labels
TAXA = ["Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Leopardus", "Canidae",
        "Canis"]
# felids ahead: ocelot .375, margay .3125, bobcat .125, coyote .0625, wolf .03125,
# grey fox .0625, empty .03125 -> Leopardus .6875, Felidae .8125, Carnivora .96875
FELIDS = q(96, 80, 32, 16, 8, 16, 8)
# two taxa at each rank: Leopardus .28125 vs Canis .40625; Felidae .375 vs Canidae .5625
CANIDS = q(40, 32, 24, 56, 48, 40, 16)


@pytest.fixture
def tax(tmp_path: Path):
    (tmp_path / "taxonomy.csv").write_text(TAXONOMY)
    return read_taxonomy(tmp_path / "taxonomy.csv", LABELS)


@pytest.mark.parametrize("probs,threshold,expected", [  # (taxon, sum, sum as written: 4 places)
    (FELIDS, 176 * Q, ("Leopardus", 0.6875, 0.6875)),  # the genus sum equals the threshold
    (FELIDS, 177 * Q, ("Felidae", 0.8125, 0.8125)),    # one step above: the family
    (FELIDS, 208 * Q, ("Felidae", 0.8125, 0.8125)),    # the family sum equals it
    (FELIDS, 248 * Q, ("Carnivora", 0.96875, 0.9688)),  # the order sum equals it
    (FELIDS, 249 * Q, None),                           # the empty class is in no taxon
    (FELIDS, 96 * Q, None),                            # the top label equals it: no roll-up
    (FELIDS, 97 * Q, ("Leopardus", 0.6875, 0.6875)),
    (CANIDS, 104 * Q, ("Canis", 0.40625, 0.4062)),     # Canis beats Leopardus, named first
    (CANIDS, 105 * Q, ("Canidae", 0.5625, 0.5625)),    # Canidae beats Felidae at family rank
    (CANIDS, 56 * Q, None),                            # coyote, the top label, reaches it
    (CANIDS, 57 * Q, ("Canis", 0.40625, 0.4062)),
])
def test_rollup_at_sums_a_uint8_model_reaches(tax, probs, threshold, expected) -> None:
    r = Rollup(tax, threshold)
    assert r.taxa == TAXA
    assert r.categories() == {str(7 + i): name for i, name in enumerate(TAXA)}
    hit = r.deepest(probs)
    if expected is None:
        assert hit is None
        assert r.apply([["3", 0.2188]], probs) == [["3", 0.2188]]
        return
    taxon_id, total = hit
    assert (TAXA[taxon_id - 7], total) == (expected[0], pytest.approx(expected[1], abs=1e-6))
    raw = [["0", 0.375], ["1", 0.3125]]
    out = r.apply(raw, probs)
    assert out == [[str(taxon_id), expected[2]], *raw]  # rounded as every confidence is


def test_two_labels_of_one_species_roll_up_to_the_species_first(tmp_path: Path) -> None:
    """Labels for life stages of one species (wolf, wolf pup): the species is the deepest
    taxon, ahead of the genus."""
    (tmp_path / "taxonomy.csv").write_text(TAXONOMY + (
        f"wolf_pup,{CARNIVORA},Canidae,Canis,lupus,,Grey wolf\n"))
    labels = [*LABELS, "wolf_pup"]
    tax = read_taxonomy(tmp_path / "taxonomy.csv", labels)
    r = Rollup(tax, 0.5)
    probs = q(16, 16, 16, 48, 72, 16, 8, 64)  # wolf .28125 + pup .25 = .53125; Canis .71875
    taxon_id, total = r.deepest(probs)
    assert r.categories()[str(taxon_id)] == "Canis lupus" and total == pytest.approx(0.53125)
    taxon_id, total = Rollup(tax, 0.6).deepest(probs)
    assert r.categories()[str(taxon_id)] == "Canis" and total == pytest.approx(0.71875)


def test_rollup_in_the_whole_image_record_and_metadata(tax) -> None:
    """Post.whole puts the taxon first in the detection and its top-k; metadata says so."""
    post = Post(LABELS, {6}, tax, Rollup(tax, 104 * Q))
    k_list = [["3", 0.2188], ["4", 0.1875]]
    rec = {"file": "a.jpg", "detections": [{"classifications": k_list}], "_k": k_list}
    out = post.whole(rec, CANIDS)
    assert out["detections"][0]["classifications"][0] == [str(7 + TAXA.index("Canis")),
                                                          pytest.approx(0.40625, abs=1e-4)]
    assert out["_k"] == out["detections"][0]["classifications"]
    assert out["_k"][1:] == [["3", 0.2188], ["4", 0.1875]]
    assert post.out_labels() == LABELS + TAXA
    assert post.metadata() == {"taxonomy_rollup": {"threshold": 104 * Q, "first_taxon_id": 7}}
    blank = {"file": "b.jpg", "detections": [], "_k": [["6", 0.9]]}
    assert post.whole(dict(blank), CANIDS) == blank  # no detection: nothing to roll up


# -- taxonomy: deployments and allow-lists on nested folders --------------------------------------


@pytest.mark.parametrize("rel,fixed,base,expected", [
    ("site_a/cam1/IMG_0001.JPG", None, "card", "site_a"),   # site / camera / image
    ("site_a/cam1/2024/IMG_0001.JPG", None, "card", "site_a"),
    ("site_b\\cam2\\IMG_0001.JPG", None, "card", "site_b"),  # a Windows path
    ("/site_c/IMG_0001.JPG", None, "card", "site_c"),
    ("IMG_0001.JPG", None, "card", "card"),                  # loose in the input folder
    ("IMG_0001.JPG", None, "", "deployment"),
    ("site_a/cam1/IMG_0001.JPG", "fixed_dep", "card", "fixed_dep"),
])
def test_deployment_is_the_top_level_folder(rel, fixed, base, expected) -> None:
    assert deployment_of(rel, fixed, base) == expected


def test_allow_list_per_site_reaches_images_in_camera_subfolders(tax, tmp_path: Path) -> None:
    allow = tmp_path / "allow.csv"
    allow.write_text("taxon,deployment\nCanis,site_a\nLeopardus,site_b\nbobcat,\n")
    post = Post(LABELS, {6}, tax, None, read_allow(allow), None, "card")
    # site_a/cam2: Canis + bobcat (everywhere) + empty: 24 + 56 + 48 + 16 = 144
    got = post.probs(CANIDS, "site_a/cam2/IMG_0001.JPG")
    np.testing.assert_allclose(got, np.array([0, 0, 24, 56, 48, 0, 16]) / 144, atol=1e-7)
    # site_b/cam1/deeper: Leopardus + bobcat + empty: 40 + 32 + 24 + 16 = 112
    got = post.probs(CANIDS, "site_b/cam1/x/IMG_0001.JPG")
    np.testing.assert_allclose(got, np.array([40, 32, 24, 0, 0, 0, 16]) / 112, atol=1e-7)
    # a loose file belongs to the input folder "card": only the rows for every site
    got = post.probs(CANIDS, "IMG_0001.JPG")
    np.testing.assert_allclose(got, np.array([0, 0, 24, 0, 0, 0, 16]) / 40, atol=1e-7)


@pytest.mark.parametrize("text,site_a,elsewhere", [
    # a CSV with a taxon column and no deployment column: its rows apply everywhere
    ("taxon,notes\nCanis,dogs\nbobcat,one cat\n", [0, 0, 24, 56, 48, 0, 16], None),
    ("label,notes\ncoyote,x\n", [0, 0, 0, 56, 0, 0, 16], None),
    # a row with no taxon is skipped, the rows after it still count
    ("taxon,deployment\nCanis,site_a\n,site_a\nbobcat,site_a\nLeopardus,\n",
     [40, 32, 24, 56, 48, 0, 16], [40, 32, 0, 0, 0, 0, 16]),
    # one name a line (no header), comments and blank lines ignored, case ignored
    ("# site list\n\nFELIDAE\n  grey fox  \n", [40, 32, 24, 0, 0, 40, 16], None),
    # comments and blank lines before a CSV header; a site without rows: no rule there
    ("# per site\n\ntaxon,deployment\nCanis,site_a\n", [0, 0, 0, 56, 48, 0, 16],
     [40, 32, 24, 56, 48, 40, 16]),
])
def test_allow_list_file_shapes(tax, tmp_path: Path, text: str, site_a, elsewhere) -> None:
    allow = tmp_path / "allow.csv"
    allow.write_text(text)
    post = Post(LABELS, {6}, tax, None, read_allow(allow), None, "card")
    for rel, kept in (("site_a/cam1/x.jpg", site_a), ("site_z/x.jpg", elsewhere or site_a)):
        want = np.array(kept, np.float64) / sum(kept)
        np.testing.assert_allclose(post.probs(CANIDS, rel), want, atol=1e-7, err_msg=rel)
    assert post.metadata() == {"allow_list": True}  # the results say a list was applied


def test_allowed_labels_all_at_zero_share_the_probability(tax, tmp_path: Path) -> None:
    """The model gave every allowed label 0: they share it evenly (one allowed label: 1)."""
    allow = tmp_path / "allow.txt"
    allow.write_text("Canis\n")
    cats_only = q(128, 128, 0, 0, 0, 0, 0)
    post = Post(LABELS, {6}, tax, None, read_allow(allow))
    np.testing.assert_allclose(post.probs(cats_only, "x.jpg"), [0, 0, 0, 1 / 3, 1 / 3, 0, 1 / 3])
    allow.write_text("coyote\n")
    post = Post(LABELS, set(), tax, None, read_allow(allow))
    np.testing.assert_allclose(post.probs(cats_only, "x.jpg"), [0, 0, 0, 1, 0, 0, 0])


def test_names_without_common_names(tmp_path: Path) -> None:
    """A taxonomy built without common names answers to its other names."""
    from kerascls_edge.taxonomy import Taxonomy
    t = Taxonomy(["wolf"], [[("genus", "Canis"), ("species", "Canis lupus")]], ["Canis lupus"])
    assert t.names_of(0) == {"wolf", "canis", "canis lupus"}


# -- Camtrap DP: boxes, blanks, thresholds, nested deployments ------------------------------------

CAMTRAP_MD = {
    "info": {"format_version": "1.4", "detector": "md_v5a.0.0",
             "detection_completion_time": "2024-05-01 12:00:00",
             "detector_metadata": {"megadetector_version": "v5a.0.0",
                                   "typical_detection_threshold": 0.25,
                                   "conservative_detection_threshold": 0.125}},
    "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
    "classification_categories": {"0": "red_fox", "1": "badger"},
    "images": [
        {"file": "site_a/cam1/IMG_0001.JPG", "datetime": "2024-04-03 10:00:00",
         "detections": [
             # x != y and w != h: a swapped pair of fields cannot go unseen
             {"category": "1", "conf": 0.875, "bbox": [0.125, 0.5, 0.25, 0.375],
              "classifications": [["0", 0.75], ["1", 0.25]]},
             # touches the right and the bottom edge exactly
             {"category": "1", "conf": 0.625, "bbox": [0.75, 0.625, 0.25, 0.375],
              "classifications": [["1", 0.5]]},
             # past the right and bottom edges: clipped into the image
             {"category": "2", "conf": 0.5, "bbox": [0.8125, 0.6875, 0.375, 0.5]}]},
        {"file": "site_a/cam2/IMG_0001.JPG", "datetime": "2024-04-01 08:30:00",
         # every box under the threshold: blank, P = 1 - the best box's conf = 0.8125
         "detections": [{"category": "1", "conf": 0.0625, "bbox": [0.1, 0.2, 0.3, 0.4]},
                        {"category": "1", "conf": 0.1875, "bbox": [0.5, 0.1, 0.2, 0.3]},
                        {"category": "2", "conf": 0.125, "bbox": [0.0, 0.0, 0.5, 0.25]}]},
        {"file": "site_b/IMG_0002.JPG", "datetime": "2024-04-02 23:59:59",
         # exactly at the threshold: an observation; the vehicle is a vehicle
         "detections": [{"category": "1", "conf": 0.25, "bbox": [0.0, 0.0625, 0.5, 0.3125],
                         "classifications": [["1", 0.625]]},
                        {"category": "3", "conf": 0.9375, "bbox": [0.25, 0.0, 0.125, 0.75]}]},
        {"file": "site_b/IMG_0003.JPG", "datetime": "2024-04-05 06:00:00", "detections": []},
        {"file": "site_b/IMG_0004.JPG", "failure": "Failure image access", "detections": None},
        # a whole-image classifier's call: never thresholded, counts no individuals, no box
        {"file": "site_b/cam3/IMG_0005.JPG", "datetime": "2024-04-04 12:00:00",
         "detections": [{"category": "1", "conf": 0.125, "bbox": [0.0, 0.0, 1.0, 1.0],
                         "classifications": [["0", 0.5625], ["1", 0.4375]]}]},
    ]}


def _render_cards(root: Path, files) -> None:
    for i, rel in enumerate(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        render((root / rel).parent, Path(rel).name, 160 + 32 * i, 120 + 8 * i, seed=i,
               quality=90)


def _camtrap_card(tmp_path: Path) -> tuple[Path, Path]:
    card = tmp_path / "card"
    _render_cards(card, [im["file"] for im in CAMTRAP_MD["images"]
                         if not im.get("failure")])
    broken = card / "site_b" / "IMG_0004.JPG"  # MegaDetector could not read it: corrupt
    broken.write_bytes((card / "site_b" / "IMG_0003.JPG").read_bytes()[:300])
    os.utime(broken, (1712188800, 1712188800))  # its mtime, 2024-04-04T00:00:00Z, is its time
    md = card / "md.json"
    md.write_text(json.dumps(CAMTRAP_MD))
    return card, md


@pytest.mark.skipif(not (STANDARD / "camtrap-dp-profile.json").is_file(),
                    reason="Camtrap DP schemas absent (../shared/data)")
def test_camtrapdp_boxes_blanks_and_nested_deployments(tmp_path: Path, schema_server) -> None:
    card, md_file = _camtrap_card(tmp_path)
    assert validate_md(md_file) == []
    taxa = {"red_fox": "Vulpes vulpes", "badger": "Meles meles"}
    opts = PackageOptions(image_dir=card, location=(51.5, -0.125),
                          taxon_of=lambda label: taxa.get(label, label))
    counts = write_package(json.loads(md_file.read_text()), card, opts, warn=sys.stderr)
    assert counts["deployments"] == 2 and counts["media"] == 6
    assert validate(card, schema_server) == []
    media = {m["filePath"]: m for m in rows(card, "media")}
    assert {p: m["deploymentID"] for p, m in media.items()} == {
        "site_a/cam1/IMG_0001.JPG": "site_a", "site_a/cam2/IMG_0001.JPG": "site_a",
        "site_b/IMG_0002.JPG": "site_b", "site_b/IMG_0003.JPG": "site_b",
        "site_b/IMG_0004.JPG": "site_b", "site_b/cam3/IMG_0005.JPG": "site_b"}
    # one file name at two cameras: two media, two ids
    assert media["site_a/cam1/IMG_0001.JPG"]["mediaID"] != \
        media["site_a/cam2/IMG_0001.JPG"]["mediaID"]
    deps = {d["deploymentID"]: d for d in rows(card, "deployments")}
    assert (deps["site_a"]["deploymentStart"], deps["site_a"]["deploymentEnd"]) == \
        ("2024-04-01T08:30:00Z", "2024-04-03T10:00:00Z")
    assert (deps["site_b"]["deploymentStart"], deps["site_b"]["deploymentEnd"]) == \
        ("2024-04-02T23:59:59Z", "2024-04-05T06:00:00Z")
    by_media: dict = {}
    for o in rows(card, "observations"):
        path = next(p for p, m in media.items() if m["mediaID"] == o["mediaID"])
        by_media.setdefault(path, []).append(o)
    box = ("bboxX", "bboxY", "bboxWidth", "bboxHeight")
    keys = ("observationType", "scientificName", "count", "classificationProbability", *box)
    got = {p: [tuple(o[k] for k in keys) for o in obs] for p, obs in by_media.items()}
    assert got == {
        "site_a/cam1/IMG_0001.JPG": [
            ("animal", "Vulpes vulpes", "1", "0.7500", "0.1250", "0.5000", "0.2500", "0.3750"),
            ("animal", "Meles meles", "1", "0.5000", "0.7500", "0.6250", "0.2500", "0.3750"),
            ("human", "", "1", "0.5000", "0.8125", "0.6875", "0.1875", "0.3125")],
        "site_a/cam2/IMG_0001.JPG": [("blank", "", "", "0.8125", "", "", "", "")],
        "site_b/IMG_0002.JPG": [
            ("animal", "Meles meles", "1", "0.6250", "0.0000", "0.0625", "0.5000", "0.3125"),
            ("vehicle", "", "1", "0.9375", "0.2500", "0.0000", "0.1250", "0.7500")],
        "site_b/IMG_0003.JPG": [("blank", "", "", "", "", "", "", "")],
        "site_b/IMG_0004.JPG": [("unclassified", "", "", "", "", "", "", "")],
        "site_b/cam3/IMG_0005.JPG": [("animal", "Vulpes vulpes", "", "0.5625", "", "", "", "")]}
    fox = by_media["site_a/cam1/IMG_0001.JPG"][0]
    assert fox["observationTags"] == "label:red_fox" and fox["deploymentID"] == "site_a"
    assert fox["classifiedBy"] == "md_v5a.0.0" and fox["classificationMethod"] == "machine"
    assert fox["classificationTimestamp"] == "2024-05-01T12:00:00Z"
    assert fox["eventStart"] == fox["eventEnd"] == "2024-04-03T10:00:00Z"
    assert by_media["site_b/IMG_0004.JPG"][0]["observationComments"] == "Failure image access"
    desc = json.loads((card / "datapackage.json").read_text())
    assert desc["taxonomic"] == [{"scientificName": "Meles meles"},
                                 {"scientificName": "Vulpes vulpes"}]
    assert desc["temporal"] == {"start": "2024-04-01", "end": "2024-04-05"}
    assert desc["spatial"] == {"type": "Point", "coordinates": [-0.125, 51.5]}


def test_camtrapdp_threshold_flag_and_blank_probability(tmp_path: Path) -> None:
    """A lower --detection_threshold turns the blank frame's boxes into observations; a higher
    one blanks the frame at its boundary box (0.25 < 0.3125), P(blank) = 1 - 0.9375."""
    card, md_file = _camtrap_card(tmp_path)
    md = json.loads(md_file.read_text())
    low = tmp_path / "low"
    write_package(md, low, PackageOptions(image_dir=card, detection_threshold=0.125,
                                          location=(1.0, 2.0)), warn=sys.stderr)
    obs = [o for o in rows(low, "observations")
           if o["mediaID"] == next(m["mediaID"] for m in rows(low, "media")
                                   if m["filePath"].endswith("cam2/IMG_0001.JPG"))]
    # 0.1875 and the person's 0.125 (equal to the threshold) are kept; 0.0625 is not
    assert [(o["observationType"], o["classificationProbability"], o["bboxX"]) for o in obs] \
        == [("animal", "0.1875", "0.5000"), ("human", "0.1250", "0.0000")]
    high = tmp_path / "high"
    write_package(md, high, PackageOptions(image_dir=card, detection_threshold=0.3125,
                                           location=(1.0, 2.0)), warn=sys.stderr)
    media = {m["mediaID"]: m["filePath"] for m in rows(high, "media")}
    got = {media[o["mediaID"]]: (o["observationType"], o["classificationProbability"])
           for o in rows(high, "observations") if "IMG_0002" in media[o["mediaID"]]}
    assert got == {"site_b/IMG_0002.JPG": ("vehicle", "0.9375")}
    only_low = dict(md, images=[dict(md["images"][2], detections=[md["images"][2][
        "detections"][0]])])
    write_package(only_low, high, PackageOptions(image_dir=card, detection_threshold=0.3125,
                                                 location=(1.0, 2.0), overwrite=True),
                  warn=sys.stderr)
    assert [(o["observationType"], o["classificationProbability"])
            for o in rows(high, "observations")] == [("blank", "0.7500")]


# -- sort_into: the most confident detection decides, the threshold is inclusive -----------------

SORT_MD = {
    "info": {"format_version": "1.4", "detector": "md_v5a.0.0", "classifier": "hand"},
    "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
    "classification_categories": {"0": "red_fox", "1": "badger", "2": "blank"},
    "images": [
        # the second box is the most confident classification (0.875 > 0.5, whatever the
        # detector's own confs say)
        {"file": "site_a/cam1/IMG_0001.JPG", "detections": [
            {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4],
             "classifications": [["0", 0.5], ["1", 0.5]]},
            {"category": "1", "conf": 0.6, "bbox": [0.5, 0.5, 0.25, 0.125],
             "classifications": [["1", 0.875], ["0", 0.125]]}]},
        # 128/256 = 0.5 exactly, against a 0.5 threshold: certain enough
        {"file": "site_a/cam2/IMG_0001.JPG", "detections": [
            {"category": "1", "conf": 0.7, "bbox": [0.0, 0.0, 1.0, 1.0],
             "classifications": [["0", 0.5], ["1", 0.4961]]}]},
        # 127/256 as our JSON writes it (0.4961): below
        {"file": "site_b/IMG_0002.JPG", "detections": [
            {"category": "1", "conf": 0.3, "bbox": [0.0, 0.0, 1.0, 1.0],
             "classifications": [["1", 0.4961], ["0", 0.4922]]}]},
        # unclassified boxes: the most confident box's category (the person, not first)
        {"file": "site_b/IMG_0003.JPG", "detections": [
            {"category": "1", "conf": 0.55, "bbox": [0.1, 0.1, 0.2, 0.2]},
            {"category": "2", "conf": 0.8125, "bbox": [0.4, 0.1, 0.2, 0.6]}]},
        {"file": "site_b/IMG_0004.JPG", "detections": []},
        {"file": "site_b/IMG_0005.JPG", "failure": "Failure image access", "detections": None},
    ]}
SORTED = {"site_a/cam1/IMG_0001.JPG": "badger", "site_a/cam2/IMG_0001.JPG": "red_fox",
          "site_b/IMG_0002.JPG": "_uncertain", "site_b/IMG_0003.JPG": "person",
          "site_b/IMG_0004.JPG": "blank", "site_b/IMG_0005.JPG": "_failed"}


def _placed(target: Path) -> dict:
    """{image path: the folder it was sorted into} (files at the top level are bookkeeping)."""
    out = {}
    for p in sorted(target.rglob("*")):
        parts = p.relative_to(target).parts
        if (p.is_file() or p.is_symlink()) and len(parts) > 1 and not p.name.startswith("."):
            out["/".join(parts[1:])] = parts[0]
    return out


def test_sort_into_picks_the_most_confident_box_and_keeps_the_boundary(tmp_path: Path) -> None:
    card = tmp_path / "card"
    _render_cards(card, list(SORTED))
    md_file = tmp_path / "results.json"
    md_file.write_text(json.dumps(SORT_MD))
    assert validate_md(md_file) == []
    labels = dict(labels_from_json(md_file, "blank"))  # a dict or a stream of pairs
    assert labels == {"site_a/cam1/IMG_0001.JPG": ("badger", 0.875),
                      "site_a/cam2/IMG_0001.JPG": ("red_fox", 0.5),
                      "site_b/IMG_0002.JPG": ("badger", 0.4961),
                      "site_b/IMG_0003.JPG": ("person", 0.8125),
                      "site_b/IMG_0004.JPG": ("blank", 1.0),
                      "site_b/IMG_0005.JPG": (None, 0.0)}
    target = tmp_path / "sorted"
    counts = sort_into(labels, card, target, 0.5)
    assert _placed(target) == SORTED
    assert {k: counts[k] for k in ("sorted", "uncertain", "failed", "already")} == \
        {"sorted": 4, "uncertain": 1, "failed": 1, "already": 0}
    for rel, folder in SORTED.items():
        link = target / folder / rel
        assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(card / rel)
    # the same labels from our CSV (one row per classified box, the best not first)
    csv_file = tmp_path / "results.csv"
    csv_file.write_text(
        "file,label,confidence,failure\n"
        "site_a/cam1/IMG_0001.JPG,red_fox,0.5000,\n"
        "site_a/cam1/IMG_0001.JPG,badger,0.8750,\n"
        "site_a/cam1/IMG_0001.JPG,red_fox,0.6250,\n"
        "site_a/cam2/IMG_0001.JPG,red_fox,0.5000,\n"
        "site_b/IMG_0002.JPG,badger,0.4961,\n"
        "site_b/IMG_0004.JPG,,,\n"
        "site_b/IMG_0005.JPG,,,Failure image access\n")
    assert dict(labels_from_csv(csv_file, "blank")) == {
        "site_a/cam1/IMG_0001.JPG": ("badger", 0.875), "site_a/cam2/IMG_0001.JPG": ("red_fox", 0.5),
        "site_b/IMG_0002.JPG": ("badger", 0.4961), "site_b/IMG_0004.JPG": ("blank", 1.0),
        "site_b/IMG_0005.JPG": (None, 0.0)}
    copies = tmp_path / "copies"
    counts = sort_into(dict(labels_from_csv(csv_file, "blank")), card, copies, 0.4961,
                       copy=True)
    assert _placed(copies) == {**{k: v for k, v in SORTED.items() if "IMG_0003" not in k},
                               "site_b/IMG_0002.JPG": "badger"}  # 0.4961 >= 0.4961
    assert counts["uncertain"] == 0 and not any(p.is_symlink() for p in copies.rglob("*"))


CORAL_BOXES = {  # SpeciesNet frames, three boxes each (x != y, one reaching the right edge)
    "ocelot.jpg": [[0.25, 0.375, 0.5, 0.5], [0.0, 0.0, 0.25, 0.5], [0.75, 0.5, 0.25, 0.5]],
    "african_elephants.jpg": [[0.125, 0.25, 0.625, 0.5], [0.0, 0.5, 0.25, 0.5],
                              [0.5, 0.0, 0.5, 0.25]],
    "human.jpg": [[0.3125, 0.125, 0.375, 0.75], [0.0, 0.0, 0.125, 0.125],
                  [0.75, 0.75, 0.25, 0.25]],
}


def _coral_md(path: Path, boxes: dict) -> Path:
    path.write_text(json.dumps({
        "info": {"format_version": "1.4", "detector": "hand-made boxes"},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": [{"file": f, "detections": [{"category": "1", "conf": 0.9 - 0.1 * j,
                                                "bbox": b} for j, b in enumerate(bs)]}
                   for f, bs in boxes.items()]}))
    return path


def _coral_bundle(d: Path) -> Path:
    """The Coral model with its ImageNet labels, each name once (the shared file names two
    classes "crane", which kerascls-edge refuses: the later one gets a suffix)."""
    d.mkdir()
    (d / "model.tflite").symlink_to(CORAL_MODEL)
    names: list[str] = []
    for name in (CORAL / "imagenet_labels.txt").read_text().splitlines():
        names.append(name if name not in names else f"{name} ({len(names)})")
    (d / "labels.txt").write_text("\n".join(names) + "\n")
    return d


@pytest.mark.skipif(not (CORAL_MODEL.is_file() and SPECIESNET.is_dir()),
                    reason="../shared/data (Coral model, SpeciesNet frames) absent")
def test_sort_into_detections_run_on_a_uint8_model(tmp_path: Path, capsys) -> None:
    """`--detections` + `--sort_into` on the real uint8 model: the boxes reordered so the most
    confident comes last, and --sort_threshold set to one image's best confidence exactly."""
    img = tmp_path / "card"
    img.mkdir()
    for name in CORAL_BOXES:
        shutil.copy(SPECIESNET / name, img / name)
    common = [str(_coral_bundle(tmp_path / "bundle")), str(img), "--threads", "2",
              "--progress_every", "-1", "--top_k", "2", "--detection_threshold", "0.5"]
    first = tmp_path / "first.json"
    assert main(["predict", *common, "--detections", str(_coral_md(tmp_path / "a.json",
                                                                   CORAL_BOXES)),
                 "-o", str(first)]) == 0, capsys.readouterr().err
    top = {im["file"]: [d["classifications"][0][1] for d in im["detections"]]
           for im in json.loads(first.read_text())["images"]}
    # ascending: each image's most confident box last (the detector's conf stays >= 0.5)
    reordered = {f: [CORAL_BOXES[f][j] for j in np.argsort(top[f], kind="stable")]
                 for f in CORAL_BOXES}
    assert all(min(top[f]) < max(top[f]) for f in top)  # the best box is now never first
    threshold = max(top["ocelot.jpg"])
    second, target = tmp_path / "second.json", tmp_path / "sorted"
    capsys.readouterr()
    assert main(["predict", *common, "--detections", str(_coral_md(tmp_path / "b.json",
                                                                   reordered)),
                 "-o", str(second), "--sort_into", str(target),
                 "--sort_threshold", repr(threshold)]) == 0, capsys.readouterr().err
    md = json.loads(second.read_text())
    assert validate_md(second) == []
    cats = md["classification_categories"]
    expected = {}
    for im in md["images"]:
        ranks = [d["classifications"][0] for d in im["detections"]]
        best = max(ranks, key=lambda r: r[1])
        assert best == ranks[-1] and best[1] == max(top[im["file"]])  # as arranged
        expected[im["file"]] = cats[best[0]].replace("/", "_") if best[1] >= threshold \
            else "_uncertain"
    assert expected["ocelot.jpg"] != "_uncertain"  # the boundary value is certain enough
    assert _placed(target) == expected
    summary = json.loads(capsys.readouterr().out)["sort_into"]
    assert summary["sorted"] + summary["uncertain"] == 3


@pytest.mark.skipif(not (CORAL_MODEL.is_file() and SPECIESNET.is_dir()),
                    reason="../shared/data (Coral model, SpeciesNet frames) absent")
def test_allow_without_a_taxonomy_and_rollup_that_needs_one(tmp_path: Path, capsys) -> None:
    """A bundle with no taxonomy.csv: --allow matches label names; --rollup_threshold is a
    one-line error before anything is written."""
    bundle = _coral_bundle(tmp_path / "bundle")
    img = tmp_path / "card" / "site_a"
    img.mkdir(parents=True)
    shutil.copy(SPECIESNET / "ocelot.jpg", img / "ocelot.jpg")
    allow = tmp_path / "allow.txt"
    allow.write_text("Egyptian cat\ntiger cat\n")
    out = tmp_path / "r.json"
    common = [str(bundle), str(tmp_path / "card"), "--recursive", "--threads", "2",
              "--progress_every", "-1", "-o", str(out)]
    assert main(["predict", *common, "--allow", str(allow)]) == 0, capsys.readouterr().err
    md = json.loads(out.read_text())
    ranking = md["images"][0]["detections"][0]["classifications"]
    names = {md["classification_categories"][c] for c, _ in ranking}
    assert names <= {"Egyptian cat", "tiger cat"} and sum(p for _, p in ranking) == \
        pytest.approx(1.0, abs=1e-3)
    capsys.readouterr()
    five = "aa1, aa2, aa3, aa4, aa5"
    for typos, listed in ((5, five + "\n"), (6, five + " (+1 more)"), (7, five + " (+2 more)")):
        allow.write_text("tiger cat\n" + "".join(f"aa{i}\n" for i in range(typos, 0, -1)))
        assert main(["predict", *common, "--allow", str(allow), "--overwrite"]) == 0
        err = capsys.readouterr().err
        assert f"--allow names {typos} that no label or taxon of the model answers to: " \
               f"{listed}" in err, err
    out.unlink()
    assert main(["predict", *common, "--rollup_threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--rollup_threshold needs a taxonomy" in err and err.count("\n") == 1
    assert not out.exists()


# -- sequences: bursts longer than the gap --------------------------------------------------------


def _frames(times: dict, folder: str = "site_a/cam1") -> list[dict]:
    return [{"file": f"{folder}/{name}", "_t": t,
             "_p": {"0": 0.75, "1": 0.25} if name < "f" else {"1": 0.625, "2": 0.375}}
            for name, t in times.items()]


def test_a_burst_longer_than_the_gap_stays_one_sequence() -> None:
    # given out of order; 0-8-16-24 chains (24 s > the 10 s gap), 34 is exactly the gap away,
    # 44.5 is more; "b" and "c" share a time (ordered by name); "x" has no time
    times = {"e": 16.0, "a": 0.0, "g": 34.0, "d": 8.0, "h": 44.5, "f": 24.0, "c": 8.0,
             "x": None}
    recs = _frames(times)
    groups = split_sequences(recs, 10.0)
    names = [[recs[i]["file"].rsplit("/", 1)[1] for i in g] for g in groups]
    assert names == [["a", "c", "d", "e", "f", "g"], ["h"], ["x"]]
    assert [[recs[i]["file"][-1] for i in g] for g in split_sequences(recs, 7.99)] == \
        [["a"], ["c", "d"], ["e"], ["f"], ["g"], ["h"], ["x"]]


def test_sequence_means_ids_and_failed_frames() -> None:
    recs = _frames({"a": 100.0, "b": 109.0, "f": 118.0, "g": 140.0})
    recs.append({"file": "site_a/cam1/z_failed.jpg", "_t": 112.0, "_p": None})
    annotate_folder(recs, 10.0, 3, 2)
    first = recs[0]["sequence"]
    # a, b: 0.75/0.25/0; f: 0/0.625/0.375 -> means 0.5, 0.375, 0.125 (top 2 kept); the failed
    # frame counts as a frame of the burst, not in the mean
    assert first == {"id": "site_a/cam1#00000", "frames": 4,
                     "classifications": [["0", 0.5], ["1", 0.375]]}
    assert all(recs[i]["sequence"] is first for i in (1, 2, 4))
    assert recs[3]["sequence"] == {"id": "site_a/cam1#00001", "frames": 1,
                                   "classifications": [["1", 0.625], ["2", 0.375]]}
    alone = [{"file": "x.jpg", "_t": 5.0, "_p": None}]
    annotate_folder(alone, 10.0, 3, 2)
    assert alone[0]["sequence"] == {"id": ".#00000", "frames": 1}


def test_smooth_groups_per_folder_as_records_arrive() -> None:
    a = _frames({"a": 0.0, "b": 5.0}, "site_a/cam1")
    b = _frames({"a": 6.0}, "site_a/cam2")  # another camera, close in time: its own burst
    again = _frames({"c": 9.0}, "site_a/cam1")  # the first folder again, later in the stream
    out = list(smooth([*a, *b, *again], 10.0, 3, 2))
    assert [r["file"] for r in out] == [r["file"] for r in (*a, *b, *again)]
    assert [(r["sequence"]["id"], r["sequence"]["frames"]) for r in out] == [
        ("site_a/cam1#00000", 2), ("site_a/cam1#00000", 2), ("site_a/cam2#00000", 1),
        ("site_a/cam1#00000", 1)]
    assert out[0]["sequence"]["classifications"] == [["0", 0.75], ["1", 0.25]]


def test_smooth_splits_the_last_folder_by_the_gap_too() -> None:
    # the stream's last folder is annotated after the loop: its bursts obey the same gap
    first = _frames({"a": 0.0}, "site_a/cam1")
    last = _frames({"a": 0.0, "b": 4.0, "c": 30.0}, "site_b/cam1")
    out = list(smooth([*first, *last], 10.0, 3, 2))
    assert [(r["sequence"]["id"], r["sequence"]["frames"]) for r in out] == [
        ("site_a/cam1#00000", 1), ("site_b/cam1#00000", 2), ("site_b/cam1#00000", 2),
        ("site_b/cam1#00001", 1)]


@pytest.mark.parametrize("times, seconds", [
    ([0.0, 0.25, 0.5], 0.5),  # a clip under a second long: its frames' times all below 1
    ([0.0, float("inf"), 2.0], 2.0),  # a damaged timestamp is not the end of the event
    ([float("nan"), -3.0], 0.0),  # none usable: the event is the capture instant
    ([0.0], 0.0)])
def test_a_video_event_ends_at_its_last_usable_frame_time(times, seconds) -> None:
    from datetime import datetime, timedelta

    from kerascls_edge.camtrapdp import _video_end

    start = datetime(2026, 5, 1, 6, 30)
    rec = {"video": {"frames": [{"number": i, "time": t} for i, t in enumerate(times)]}}
    assert _video_end(rec, start) == start + timedelta(seconds=seconds)
