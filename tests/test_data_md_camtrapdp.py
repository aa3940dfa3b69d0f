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

from kerascls.data.camtrap_sources import CropRule, DetectionOptions
from kerascls.data.pipeline import PipelineOptions, file_dataset
from kerascls.data.sources import load_source
from kerascls_edge import runner
from kerascls_edge.classifier import Classifier
from tests.bundle_scripts import MAKE_BUNDLE
from tests.pictures import render

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

    f4's tiny box and big box want different DCT scales: the device decodes once per scale
    (``runner._scale_groups``) so each crop has the pixels training plans for it alone.
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
            {"category": "1", "conf": 0.8, "bbox": [0.7, 0.1, 0.01, 0.02]},
            {"category": "1", "conf": 0.8, "bbox": [0.1, 0.1, 0.8, 0.8]}]},
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
                     ("f2.jpg", "fox", "c"), ("f4.jpg", "deer", "e"), ("f4.jpg", "deer", "e")]
    x, y, w, h = src.records[0].bbox  # pixels of the 640×480 frame
    assert (x, y, w, h) == pytest.approx((192, 120, 128, 192))
    assert src.class_names == ["deer", "fox"]


def test_md_empty_class_min_px_padding_and_square(scene):
    opts = DetectionOptions(crop=CropRule(0.1, True, 10), empty_class="empty")
    src = load_source(f"md:{scene / 'md.json'}", detection=opts)
    names = [(Path(r.path).name, r.labels[0]) for r in src.records]
    assert ("f3.jpg", "empty") in names and len(names) == 6  # f4's 8×9 px box dropped
    assert next(r for r in src.records if r.labels == ("empty",)).bbox is None
    x, y, w, h = src.records[0].bbox  # 128×192 box + 10 % a side, squared: 230.4 px
    assert (w, h) == pytest.approx((230.4, 230.4)) and x == pytest.approx(192 - 12.8 - 38.4)
    x, y, w, h = next(r.bbox for r in src.records if r.labels == ("deer",))
    assert x + w == pytest.approx(480) and y == pytest.approx(1.6)  # clipped at the right


def test_md_crop_pixels_match_the_device_default_rule(scene, tmp_path):
    assert assert_parity(f"md:{scene / 'md.json'}", scene, CropRule(), tmp_path) == 6


def test_md_crop_pixels_match_the_device_padded_square(scene, tmp_path):
    assert assert_parity(f"md:{scene / 'md.json'}", scene, CropRule(0.15, True), tmp_path) == 6


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


# -- Camtrap DP ---------------------------------------------------------------------------------

EXAMPLE = ENA24.parents[1] / "camtrapdp" / "example" / "datapackage.json"
MEDIA_COLS = ["mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic",
              "fileName", "fileMediatype"]
OBS_COLS = ["observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
            "observationLevel", "observationType", "scientificName", "count", "bboxX", "bboxY",
            "bboxWidth", "bboxHeight", "classificationMethod"]


def _csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)


def build_package(d: Path, per_class: int = 12) -> Path:
    """A package shaped like the standard's example: 4 deployments (2 at one location),
    events of 2 frames; foxes and deer labelled per event, blanks per media file, some
    deer with boxes per media file (media-level wins over its event's label)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "media").mkdir(exist_ok=True)
    deps = [("dep1", "locA"), ("dep2", "locB"), ("dep3", "locC"), ("dep4", "locA")]
    _csv(d / "deployments.csv", ["deploymentID", "locationID", "latitude", "longitude",
                                 "deploymentStart", "deploymentEnd"],
         [{"deploymentID": dep, "locationID": loc, "latitude": 51.5, "longitude": 4.7,
           "deploymentStart": "2020-05-01T00:00:00+02:00",
           "deploymentEnd": "2020-07-01T00:00:00+02:00"} for dep, loc in deps])
    media, obs, n = [], [], 0
    for k, label in enumerate(["Vulpes vulpes", "Capreolus capreolus", "blank"]):
        for e in range(per_class // 2):
            dep = deps[(e + k) % 4][0]
            event = f"ev{k}{e}"
            start = f"2020-06-{1 + e:02d}T{10 + k:02d}:00:00+02:00"
            end = f"2020-06-{1 + e:02d}T{10 + k:02d}:00:05+02:00"
            for j in range(2):
                mid = f"m{n}"
                n += 1
                name = render(d / "media", f"{mid}.jpg", 160, 120, seed=17 * k + n, quality=90)
                media.append({"mediaID": mid, "deploymentID": dep,
                              "captureMethod": "activityDetection",
                              "timestamp": f"2020-06-{1 + e:02d}T{10 + k:02d}:00:0{2 * j}+02:00",
                              "filePath": f"media/{Path(name).name}", "filePublic": "false",
                              "fileName": Path(name).name, "fileMediatype": "image/jpeg"})
                if label == "blank":
                    obs.append({"observationID": f"o{mid}", "deploymentID": dep, "mediaID": mid,
                                "eventID": event, "eventStart": start, "eventEnd": end,
                                "observationLevel": "media", "observationType": "blank",
                                "classificationMethod": "human"})
                elif label == "Capreolus capreolus" and j == 0:
                    obs.append({"observationID": f"o{mid}", "deploymentID": dep, "mediaID": mid,
                                "eventID": event, "eventStart": start, "eventEnd": end,
                                "observationLevel": "media", "observationType": "animal",
                                "scientificName": label, "count": 1, "bboxX": 0.25,
                                "bboxY": 0.2, "bboxWidth": 0.5, "bboxHeight": 0.6,
                                "classificationMethod": "machine"})
            if label != "blank":
                obs.append({"observationID": f"o{event}", "deploymentID": dep, "eventID": event,
                            "eventStart": start, "eventEnd": end, "observationLevel": "event",
                            "observationType": "animal", "scientificName": label, "count": 1,
                            "classificationMethod": "human"})
    _csv(d / "media.csv", MEDIA_COLS, media)
    _csv(d / "observations.csv", OBS_COLS, obs)
    (d / "datapackage.json").write_text(json.dumps({
        "profile": "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/"
                   "camtrap-dp-profile.json", "name": "rendered", "created": "2026-01-01T00:00:00Z",
        "resources": [{"name": n, "path": f"{n}.csv", "profile": "tabular-data-resource",
                       "format": "csv", "mediatype": "text/csv", "encoding": "UTF-8"}
                      for n in ("deployments", "media", "observations")]}))
    return d / "datapackage.json"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("ctdp") / "pkg")


def test_camtrapdp_labels_locations_events_and_boxes(package):
    src = load_source(f"camtrapdp:{package}", crop_boxes=True)
    assert src.class_names == ["Capreolus capreolus", "Vulpes vulpes", "blank"]
    by_name = {Path(r.path).name: r for r in src.records}
    assert len(src.records) == 36 and len(by_name) == 36
    fox = by_name["m0.jpg"]
    assert fox.labels == ("Vulpes vulpes",) and fox.seq_id == "ev00" and fox.location == "locA"
    deer_boxed, deer_event = by_name["m12.jpg"], by_name["m13.jpg"]
    assert deer_boxed.bbox == pytest.approx((40, 24, 80, 72))  # 160×120 frame
    assert deer_event.bbox is None and deer_event.labels == ("Capreolus capreolus",)
    assert by_name["m24.jpg"].labels == ("blank",)
    # a location's deployments stay together in one split
    parts = src.splits(0.2, 0.2, 0)
    where = {r.location: s for s, recs in parts.items() for r in recs}
    assert all(where[r.location] == s for s, recs in parts.items() for r in recs)


def _edit(package: Path, table: str, line: int, column: str, value: str) -> None:
    path = package.parent / f"{table}.csv"
    rows = list(csv.reader(open(path, newline="")))
    if line == 1:
        rows[0][rows[0].index(column)] = value
    else:
        rows[line - 1][rows[0].index(column)] = value
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("table, line, column, value, needle", [
    ("media", 3, "timestamp", "2020-06-31T10:00", r"media.csv: line 3: timestamp"),
    ("media", 4, "timestamp", "2020-06-01T10:00:00", "no time zone"),
    ("observations", 1, "count", "counted", r"observations.csv: line 1: unknown column"),
    ("observations", 2, "mediaID", "nope", r"observations.csv: line 2: mediaID 'nope'"),
    ("observations", 5, "eventEnd", "yesterday", r"observations.csv: line 5: eventEnd"),
])
def test_camtrapdp_bad_rows_name_file_and_line(tmp_path, table, line, column, value, needle):
    pkg = build_package(tmp_path / "pkg", per_class=2)
    if column == "mediaID":  # line 2 is a media-level observation only for blanks; force one
        _edit(pkg, table, line, "observationLevel", "media")
    _edit(pkg, table, line, column, value)
    with pytest.raises(ValueError, match=needle):
        load_source(f"camtrapdp:{pkg}", check=False)


@pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared/data/camtrapdp/example absent")
def test_camtrapdp_standard_example_says_its_media_are_remote(tmp_path):
    with pytest.raises(ValueError, match=r"413 of its 423 image media files are remote URLs"):
        load_source(f"camtrapdp:{EXAMPLE}")
    src = load_source(f"camtrapdp:{EXAMPLE}:{tmp_path}", check=False)  # parses every row
    assert len(src.records) >= 400 and "Anas platyrhynchos" in src.class_names


def test_camtrapdp_package_trains_and_evaluates(package, tmp_path, cli):
    run = tmp_path / "run"
    cli("train", f"--data=camtrapdp:{package}", "--crop_boxes", "--image_size=32",
        "--epochs=1", "--batch_size=8", "--val_fraction=0.2", "--test_fraction=0.2",
        f"--output_dir={run}", timeout=600)
    test_files = (run / "splits" / "test.csv").read_text().splitlines()[1:]
    assert test_files
    out = cli("evaluate", f"--model={run}").stdout
    assert f"images: {len(test_files)}" in out


def test_md_run_exports_its_crop_rule_and_the_device_applies_it(tmp_path, cli):
    """train on md: crops → export → model.json ``crop`` → kerascls-edge --detections."""
    from kerascls_edge.cli import main
    d = tmp_path / "imgs"
    d.mkdir()
    images, rows = [], []
    for i in range(16):
        render(d, f"{i}.jpg", 320, 240, seed=i, quality=90)
        images.append({"file": f"{i}.jpg", "detections": [
            {"category": "1", "conf": 0.9, "bbox": [0.1 + 0.02 * i, 0.2, 0.3, 0.4]}]})
        rows.append((f"{i}.jpg", "fox" if i % 2 else "deer", f"site{i}"))
    write_md(d / "md.json", images)
    write_labels(d / "labels.csv", rows)
    run = tmp_path / "run"
    cli("train", f"--data=md:{d / 'md.json'}:{d / 'labels.csv'}", "--crop_padding=0.1",
        "--square_crops", "--image_size=32", "--epochs=1", "--batch_size=8",
        "--val_fraction=0.25", "--test_fraction=0.25", f"--output_dir={run}", timeout=600)
    config = json.loads((run / "config.json").read_text())
    assert config["crop_padding"] == 0.1 and config["square_crops"] is True
    cli("export", f"--model={run}", "--calibration_samples=4", "--parity_samples=4",
        timeout=600)
    meta = json.loads((run / "bundle" / "model.json").read_text())
    assert meta["crop"] == {"padding": 0.1, "square": True, "min_px": 0}
    out = tmp_path / "out.json"
    assert main(["predict", str(run / "bundle"), str(d), "--detections", str(d / "md.json"),
                 "-o", str(out), "--threads", "1"]) == 0
    got = json.loads(out.read_text())["images"]
    assert all(im["detections"][0]["classifications"] for im in got)
    assert Classifier(run / "bundle").spec.crop_square is True


TINTED_BUNDLE = MAKE_BUNDLE.replace(
    'm = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))',
    'dense = keras.layers.Dense(2, activation="softmax")\n'
    'm = keras.Model(inp, dense(x))\n'
    'dense.set_weights([np.array([[-40, 40], [0, 0], [40, -40]], "float32"), '
    'np.zeros(2, "float32")])')  # blue-tinted → "empty", red-tinted → "animal"


@pytest.mark.slow  # the default run's time budget (issue 26): CI's slow step runs it
def test_camtrapdp_round_trip_from_kerascls_edge_predict(tmp_path, cli):
    """kerascls-edge predict --format camtrapdp → --data camtrapdp: → train."""
    from PIL import Image

    from kerascls_edge.cli import main
    media = tmp_path / "media"
    media.mkdir()
    for i in range(12):
        path = render(media, f"{i}.jpg", 96, 72, seed=i, quality=90)
        arr = np.asarray(Image.open(path), np.float32)
        arr[..., 0 if i % 2 else 2] *= 0.4  # odd frames bluish, even ones reddish
        Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
    bundle = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-c", TINTED_BUNDLE, str(bundle)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pkg = tmp_path / "pkg"
    assert main(["predict", str(bundle), str(media), "--format", "camtrapdp", "-o", str(pkg),
                 "--threads", "1"]) == 0
    src = load_source(f"camtrapdp:{pkg / 'datapackage.json'}:{media}")
    labels = {Path(r.path).name: r.labels for r in src.records}
    assert len(labels) == 12 and labels["0.jpg"] == ("animal",) and labels["1.jpg"] == ("blank",)
    run = tmp_path / "run"
    cli("train", f"--data=camtrapdp:{pkg / 'datapackage.json'}:{media}", "--image_size=32",
        "--epochs=1", "--batch_size=4", "--val_fraction=0", "--test_fraction=0",
        f"--output_dir={run}", timeout=600)
    assert json.loads((run / "config.json").read_text())["class_names"] == ["animal", "blank"]


@pytest.mark.slow  # the default run's time budget (issue 26): CI's slow step runs it
@pytest.mark.skipif(not (ENA24 / "md_annotations.json").exists(),
                    reason="../shared/data/camtrap/ena24_small absent")
def test_ena24_md_run_trains_exports_and_the_device_classifies_its_boxes(tmp_path, cli):
    """The issue's acceptance line on the real MegaDetector 1.4 file."""
    from kerascls_edge.cli import main
    run = tmp_path / "run"
    cli("train", f"--data=md:{ENA24 / 'md_annotations.json'}:{ENA24 / 'labels.csv'}",
        "--crop_padding=0.1", "--square_crops", "--image_size=64", "--epochs=1",
        "--batch_size=8", "--val_fraction=0.2", "--test_fraction=0.2", f"--output_dir={run}",
        timeout=600)
    crops = sum(len((run / "splits" / f"{s}.csv").read_text().splitlines()) - 1
                for s in ("train", "val", "test"))
    cli("export", f"--model={run}", "--calibration_samples=4", "--parity_samples=4",
        timeout=600)
    out = tmp_path / "out.json"
    assert main(["predict", str(run / "bundle"), str(ENA24), "--detections",
                 str(ENA24 / "md_annotations.json"), "-o", str(out), "--threads", "1"]) == 0
    boxes = [d for im in json.loads(out.read_text())["images"] for d in im["detections"]
             if d.get("classifications")]
    assert len(boxes) == crops == 21
