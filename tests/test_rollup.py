"""Taxonomy roll-up and allow-lists on the device, with hand-made taxonomies.

The expected sums are written out by hand (unit tests) or computed here from the model's raw
probabilities (the Coral run), never by the code under test.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import Classifier  # noqa: E402
from kerascls_edge.cli import main  # noqa: E402
from kerascls_edge.taxonomy import Rollup, read_allow, read_taxonomy, restrict  # noqa: E402
from tests.camtrapdp_check import rows, validate  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, ENA24, coral_labels  # noqa: E402

needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(),
                                 reason=f"Coral model not found under {CORAL} (../shared/data)")

HEADER = "label,kingdom,phylum,class,order,family,genus,species,scientificName,commonName\n"
CARNIVORA = "Animalia,Chordata,Mammalia,Carnivora"
SMALL = HEADER + (
    f"ocelot,{CARNIVORA},Felidae,Leopardus,pardalis,,Ocelot\n"
    f"margay,{CARNIVORA},Felidae,Leopardus,wiedii,,Margay\n"
    f"bobcat,{CARNIVORA},Felidae,Lynx,rufus,,Bobcat\n"
    f"grey_fox,{CARNIVORA},Canidae,Urocyon,cinereoargenteus,,Grey fox\n"
    "empty,,,,,,,,,\n")
LABELS = ["ocelot", "margay", "bobcat", "grey_fox", "empty"]
PROBS = np.array([0.40, 0.30, 0.10, 0.15, 0.05])


def validate_md(path: Path) -> list[str]:
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    return v.validate_batch_results(str(path))["validation_results"]["errors"]


@pytest.fixture
def small(tmp_path: Path):
    (tmp_path / "taxonomy.csv").write_text(SMALL)
    return read_taxonomy(tmp_path / "taxonomy.csv", LABELS)


def _name(r: Rollup, hit) -> tuple[str, float]:
    return r.categories()[str(hit[0])], round(hit[1], 6)


@pytest.mark.parametrize("threshold,expected", [
    (0.60, ("Leopardus", 0.70)),     # 0.40 + 0.30: the genus, not the family
    (0.75, ("Felidae", 0.80)),       # + bobcat 0.10
    (0.90, ("Carnivora", 0.95)),     # + grey fox 0.15
    (0.97, None),                    # nothing reaches it (the empty class is in no taxon)
    (0.35, None),                    # the top label itself reaches it: no roll-up
])
def test_deepest_taxon_reaching_the_threshold(small, threshold, expected) -> None:
    r = Rollup(small, threshold)
    hit = r.deepest(PROBS)
    assert (None if hit is None else _name(r, hit)) == \
        (None if expected is None else (expected[0], pytest.approx(expected[1])))


def test_rolled_up_ranking_keeps_the_raw_top_label_second(small) -> None:
    r = Rollup(small, 0.6)
    raw = [["0", 0.4], ["1", 0.3]]
    out = r.apply(raw, PROBS)
    assert out[1:] == raw and r.categories()[out[0][0]] == "Leopardus" and out[0][1] == 0.7
    assert int(out[0][0]) >= len(LABELS)  # taxon ids follow the labels
    # taxa holding one label only never appear (they cannot beat the top label)
    assert "Lynx" not in r.taxa and "Urocyon" not in r.taxa and "Felidae" in r.taxa


def test_scientific_names_from_genus_and_epithet(small) -> None:
    assert small.scientific_name("ocelot") == "Leopardus pardalis"
    assert small.scientific_name("empty") == "empty"
    assert small.scientific_name("not a label") == "not a label"


def test_allow_list_zeroes_and_renormalizes(small, tmp_path: Path) -> None:
    f = tmp_path / "allow.txt"
    f.write_text("# felids only\nFelidae\n")
    keep = read_allow(f).mask(small, LABELS, {4}, "any")
    out = restrict(PROBS, keep)
    expected = np.array([0.40, 0.30, 0.10, 0.0, 0.05]) / 0.85  # empty is always allowed
    np.testing.assert_allclose(out, expected)
    assert out.sum() == pytest.approx(1.0)


def test_allow_list_per_deployment(small, tmp_path: Path) -> None:
    f = tmp_path / "allow.csv"
    f.write_text("taxon,deployment\nMargay,site_a\nUrocyon cinereoargenteus,site_b\nLynx,\n")
    allow = read_allow(f)
    a = restrict(PROBS, allow.mask(small, LABELS, {4}, "site_a"))  # common name matches
    np.testing.assert_allclose(a, np.array([0, 0.30, 0.10, 0, 0.05]) / 0.45)
    b = restrict(PROBS, allow.mask(small, LABELS, {4}, "site_b"))  # species binomial matches
    np.testing.assert_allclose(b, np.array([0, 0, 0.10, 0.15, 0.05]) / 0.30)
    c = restrict(PROBS, allow.mask(small, LABELS, {4}, "elsewhere"))  # rows for all sites only
    np.testing.assert_allclose(c, np.array([0, 0, 0.10, 0, 0.05]) / 0.15)


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("name,genus\nx,y\n")
    from kerascls_edge.bundle import EdgeError
    with pytest.raises(EdgeError, match="no 'label' column"):
        read_taxonomy(bad, ["x"])
    empty = tmp_path / "a.csv"
    empty.write_text("taxon,deployment\n")
    with pytest.raises(EdgeError, match="names nothing"):
        read_allow(empty)


# -- end to end on the Coral model: cats roll up to Felis catus ---------------------------------

CATS = ["tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"]


@pytest.fixture(scope="module")
def cat_bundle(tmp_path_factory) -> Path:
    if not CORAL_MODEL.is_file():
        pytest.skip("Coral model absent (../shared/data)")
    b = tmp_path_factory.mktemp("bundle")
    shutil.copy(CORAL_MODEL, b / "model.tflite")
    coral_labels(b / "labels.txt")
    with open(b / "taxonomy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER.strip().split(","))
        for label in CATS:
            w.writerow([label, *CARNIVORA.split(","), "Felidae", "Felis", "catus", "",
                        "domestic cat"])
        w.writerow(["cougar, puma, catamount, mountain lion, painter, panther, Felis concolor",
                    *CARNIVORA.split(","), "Felidae", "Puma", "concolor", "", "puma"])
        w.writerow(["macaw", "Animalia", "Chordata", "Aves", "Psittaciformes", "Psittacidae",
                    "Ara", "", "Ara", "macaw"])
    return b


@pytest.fixture(scope="module")
def raw_probs(cat_bundle: Path) -> dict:
    clf = Classifier(cat_bundle / "model.tflite", threads=2)
    out = {}
    for name in ("cat.bmp", "parrot.jpg"):
        out[name] = clf.predict_array(clf.decode(CORAL / name).arrays[0])[0]
    return {"labels": clf.labels, **out}


def _images(tmp_path: Path) -> Path:
    for site, name in (("site_a", "cat.bmp"), ("site_b", "parrot.jpg"), ("site_a", "parrot.jpg")):
        (tmp_path / "img" / site).mkdir(parents=True, exist_ok=True)
        shutil.copy(CORAL / name, tmp_path / "img" / site / name)
    return tmp_path / "img"


@needs_coral
def test_rollup_in_megadetector_json_csv_and_camtrapdp(tmp_path: Path, cat_bundle: Path,
                                                       raw_probs: dict, schema_server,  # noqa: F811
                                                       capsys) -> None:
    labels = raw_probs["labels"]
    p = raw_probs["cat.bmp"]
    cats = [labels.index(c) for c in CATS]
    felis_catus = float(sum(p[i] for i in cats))
    top = int(np.argmax(p))
    assert labels[top] in CATS and p[top] < 0.9 <= felis_catus  # the case rolls up
    images = _images(tmp_path)
    common = [str(cat_bundle), str(images), "--recursive", "--rollup_threshold", "0.9",
              "--threads", "2", "--progress_every", "-1", "--top_k", "3"]
    out = tmp_path / "r.json"
    assert main(["predict", *common, "-o", str(out)]) == 0, capsys.readouterr().err
    assert validate_md(out) == []
    md = json.loads(out.read_text())
    by_file = {im["file"]: im for im in md["images"]}
    ranking = by_file["site_a/cat.bmp"]["detections"][0]["classifications"]
    assert md["classification_categories"][ranking[0][0]] == "Felis catus"
    assert ranking[0][1] == pytest.approx(felis_catus, abs=1e-4)
    assert ranking[1] == [str(top), pytest.approx(float(p[top]), abs=1e-4)]  # raw top kept
    macaw = by_file["site_b/parrot.jpg"]["detections"][0]["classifications"]
    assert md["classification_categories"][macaw[0][0]] == "macaw"  # confident: not rolled up
    assert md["info"]["classifier_metadata"]["taxonomy_rollup"] == {
        "threshold": 0.9, "first_taxon_id": len(labels)}

    csv_out = tmp_path / "r.csv"
    assert main(["predict", *common, "-o", str(csv_out)]) == 0
    got = {r["file"]: r for r in csv.DictReader(csv_out.open())}
    assert got["site_a/cat.bmp"]["label"] == "Felis catus"
    assert got["site_a/cat.bmp"]["top_k"].split(";")[1].startswith(labels[top] + ":")

    pkg = tmp_path / "pkg"
    assert main(["predict", *common, "--format", "camtrapdp", "-o", str(pkg),
                 "--location", "0.5,10"]) == 0
    assert validate(pkg, schema_server) == []
    media = {m["mediaID"]: m["filePath"] for m in rows(pkg, "media")}
    obs = {media[o["mediaID"]]: o for o in rows(pkg, "observations")}
    cat = obs["img/site_a/cat.bmp"] if "img/site_a/cat.bmp" in obs else obs["site_a/cat.bmp"]
    assert cat["scientificName"] == "Felis catus"
    assert f"rolledUpFrom:{labels[top]}" in cat["observationTags"]
    assert float(cat["classificationProbability"]) == pytest.approx(felis_catus, abs=1e-4)


@needs_coral
def test_allow_list_per_deployment_in_a_run(tmp_path: Path, cat_bundle: Path,
                                            raw_probs: dict, capsys) -> None:
    """At site_a only cats are allowed: the parrot there becomes the likeliest cat."""
    labels, p = raw_probs["labels"], raw_probs["parrot.jpg"]
    allowed = [labels.index(c) for c in CATS]
    images = _images(tmp_path)
    allow = tmp_path / "allow.csv"
    allow.write_text("taxon,deployment\nFelis catus,site_a\nmacaw,site_b\nAra,site_b\n")
    out = tmp_path / "r.json"
    assert main(["predict", str(cat_bundle), str(images), "--recursive", "--allow", str(allow),
                 "--threads", "2", "--progress_every", "-1", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert validate_md(out) == []
    md = json.loads(out.read_text())
    by_file = {im["file"]: im for im in md["images"]}
    at_a = by_file["site_a/parrot.jpg"]["detections"][0]["classifications"]
    best = max(allowed, key=lambda i: p[i])
    sub = np.array([p[i] for i in allowed], dtype=np.float64)
    assert at_a[0][0] == str(best)
    if sub.sum() > 0:
        assert at_a[0][1] == pytest.approx(p[best] / sub.sum(), abs=1e-4)
    assert all(labels[int(c)] in CATS for c, _ in at_a)
    at_b = by_file["site_b/parrot.jpg"]["detections"][0]["classifications"]
    assert at_b == [[str(labels.index("macaw")), 1.0]]
    assert "warning" not in capsys.readouterr().err  # every name is known
    allow.write_text("Felis catus\nFelis catsu\n")  # a typo is pointed out
    assert main(["predict", str(cat_bundle), str(images), "--recursive", "--allow", str(allow),
                 "--threads", "2", "--progress_every", "-1", "-o", str(out)]) == 0
    assert "no label or taxon of the model answers to: felis catsu" in capsys.readouterr().err




@needs_coral
@pytest.mark.skipif(not (ENA24 / "md_annotations.json").is_file(), reason="ENA24 absent")
def test_rollup_and_allow_on_detector_boxes_stay_valid(tmp_path: Path, cat_bundle: Path,
                                                      schema_server, capsys) -> None:  # noqa: F811
    allow = tmp_path / "allow.txt"
    allow.write_text("Felidae\nAra\n")
    common = [str(cat_bundle), str(ENA24), "--detections", str(ENA24 / "md_annotations.json"),
              "--rollup_threshold", "0.9", "--allow", str(allow), "--threads", "2",
              "--progress_every", "-1", "--detection_threshold", "0.3"]
    out = tmp_path / "r.json"
    assert main(["predict", *common, "-o", str(out)]) == 0, capsys.readouterr().err
    assert validate_md(out) == []
    md = json.loads(out.read_text())
    cats = md["classification_categories"]
    allowed = {*CATS, "cougar, puma, catamount, mountain lion, painter, panther, Felis concolor",
               "macaw", "Felis catus", "Felis", "Felidae", "Carnivora", "Mammalia", "Chordata",
               "Animalia"}
    tops = [cats[d["classifications"][0][0]] for im in md["images"] for d in im["detections"]
            if d.get("classifications")]
    assert len(tops) >= 15 and set(tops) <= allowed
    pkg = tmp_path / "pkg"
    assert main(["predict", *common, "--format", "camtrapdp", "-o", str(pkg),
                 "--location", "35,-80"]) == 0
    assert validate(pkg, schema_server) == []


# -- training side: kerascls train --taxonomy keeps it in the run and the bundle ----------------


def _textured(root: Path) -> Path:
    """Three classes of rendered textures (gradients + noise + a blob), 8 images each."""
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    for c, name in enumerate(["ocelot", "margay", "empty"]):
        (root / name).mkdir(parents=True)
        for j in range(8):
            base = (xx * (1 + c) + yy * (2 - c % 2)) % 256
            img = np.stack([base, np.roll(base, 7 * c, 1), 255 - base], -1).astype(np.float32)
            img += rng.normal(0, 18, img.shape)
            cy, cx = rng.integers(10, 38), rng.integers(10, 54)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 60] *= 0.4 + 0.3 * c
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{j}.jpg")
    return root


def test_train_refuses_a_taxonomy_without_label_column(cli, tmp_path: Path) -> None:
    bad = tmp_path / "tax.csv"
    bad.write_text("name,genus\nocelot,Leopardus\n")
    proc = cli("train", f"--taxonomy={bad}", f"--output_dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "'label' column" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before any training


@pytest.mark.slow  # a (tiny) training and int8 export: about a minute on 2 busy cores
def test_train_taxonomy_reaches_the_bundle_and_the_device(cli, tmp_path: Path,
                                                         capsys) -> None:
    data = _textured(tmp_path / "imgs")
    tax = tmp_path / "tax.csv"
    tax.write_text(SMALL)
    run = tmp_path / "run"
    cli("train", f"--data=folder:{data}", "--image_size=32", "--epochs=1", "--batch_size=4",
        "--val_fraction=0.2", "--test_fraction=0.2", f"--taxonomy={tax}",
        f"--output_dir={run}")
    assert (run / "taxonomy.csv").read_text() == SMALL
    cli("export", f"--model={run}", "--calibration_samples=8", "--parity_samples=8")
    assert (run / "bundle" / "taxonomy.csv").read_text() == SMALL
    out = tmp_path / "r.json"
    assert main(["predict", str(run / "bundle"), str(data), "--recursive", "-o", str(out),
                 "--rollup_threshold", "0.99", "--threads", "1", "--progress_every", "-1"]) == 0
    md = json.loads(out.read_text())
    assert validate_md(out) == []
    cats = md["classification_categories"]
    assert {"Leopardus", "Felidae", "Carnivora"} <= set(cats.values())
    assert md["info"]["classifier_metadata"]["taxonomy_rollup"]["first_taxon_id"] == 3
