"""The contracts a user relies on, each pinned by a value an independent path computed.

Expected values come from a hand-worked example, a reference library (scikit-learn's metrics),
or the other side of the contract (a LiteRT interpreter, NumPy arithmetic on a model whose
weights are set by hand) — never from the code under test. Where the docs state the contract,
the test names the place: ``export/README.md`` (MegaDetector ``conf``), README "Design"
(int8 input pinned to raw pixels), ``kerascls/data/splits.py`` (whole groups per split).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerascls.data.records import Record
from kerascls.data.splits import split_records
from kerascls.evaluation import metrics as M

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import mdformat

skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the [test] extra")


def _texture(h: int, w: int, seed: int, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    """A photo-like RGB texture (smooth blobs + grain) stretched to [lo, hi], uint8."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
    img = smooth + rng.normal(0, 12, (h, w, 3))
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(lo + img * (hi - lo)).astype(np.uint8)


# -- MegaDetector `conf` (export/README.md "Output formats") ---------------------------------


def test_megadetector_conf_is_one_minus_p_empty_by_hand():
    labels = ["deer", "empty", "fox", "blank"]
    probs = np.array([0.45, 0.2, 0.25, 0.1])
    rec = mdformat.image_record("a.jpg", probs, labels, {1, 3}, 3, None, None, [])
    det, = rec["detections"]
    assert det["conf"] == 0.7  # 1 − (0.2 + 0.1); the top probability would be 0.45
    assert det["category"] == "1" and det["bbox"] == [0, 0, 1, 1]
    assert det["classifications"] == [["0", 0.45], ["2", 0.25], ["1", 0.2]]
    # no empty class: conf is the top probability
    rec = mdformat.image_record("a.jpg", probs, labels, set(), 2, None, None, [])
    assert rec["detections"][0]["conf"] == 0.45
    # an empty top class: no detection at all
    rec = mdformat.image_record("b.jpg", np.array([0.1, 0.6, 0.2, 0.1]), labels, {1, 3}, 3,
                                None, None, [])
    assert rec["detections"] == []
    assert mdformat.detection_category("Person") == "2"
    assert mdformat.detection_category("truck") == "3"


def test_megadetector_record_fields_by_hand():
    labels = ["deer", "empty", "Human", "car"]
    probs = np.array([0.00004, 0.0002, 0.99, 0.00976])
    rec = mdformat.image_record("cam/1.jpg", probs, labels, {1}, 3, 1700000000.5,
                                "2024:01:02 03:04:05", ["truncated"])
    assert rec["file"] == "cam/1.jpg" and rec["datetime"] == "2024:01:02 03:04:05"
    assert rec["warnings"] == ["truncated"] and rec["_t"] == 1700000000.5
    det, = rec["detections"]
    assert det["category"] == "2"  # a person class is MegaDetector's "person"
    assert det["conf"] == 0.9998  # 1 − 0.0002, rounded to 4 places
    # top 3, rounded; "deer" (0.00004 → 0.0) is left out, the rest highest first
    assert det["classifications"] == [["2", 0.99], ["3", 0.0098], ["1", 0.0002]]
    assert rec["_k"] == det["classifications"]
    assert rec["_p"] == {"2": 0.99, "3": 0.0098}  # kept for smoothing: ≥ 0.001 only
    edge = mdformat.image_record("e.jpg", np.array([0.001, 0.876544, 0.122456]),
                                 ["a", "empty", "b"], {1}, 3, None, None, [])
    assert edge["detections"] == []  # an empty top class
    assert edge["_p"] == {"1": 0.8765, "2": 0.1225, "0": 0.001}  # 0.001 itself is kept
    odd = mdformat.image_record("o.jpg", np.array([0.123456, 0.876544, 0.0]),
                                ["deer", "fox", "blank"], {2}, 1, None, None, [])
    assert odd["detections"][0]["conf"] == 1.0  # 1 − 0, and never above 1
    near = mdformat.image_record("n.jpg", np.array([0.123456, 0.2, 0.676544]),
                                 ["empty", "fox", "deer"], {0}, 1, None, None, [])
    assert near["detections"][0]["conf"] == 0.8765  # 1 − 0.123456, 4 places
    # outputs that are not probabilities (a mislabelled head) still give a conf in [0, 1]
    over = mdformat.image_record("v.jpg", np.array([1.2, 0.0]), ["deer", "fox"], set(),
                                 1, None, None, [])
    assert over["detections"][0]["conf"] == 1.0
    under = mdformat.image_record("u.jpg", np.array([1.5, 0.6, 0.6]), ["deer", "empty", "blank"],
                                  {1, 2}, 1, None, None, [])
    assert under["detections"][0]["conf"] == 0.0
    assert mdformat.public(rec) == {k: rec[k] for k in ("file", "detections", "datetime",
                                                        "warnings")}
    bare = mdformat.image_record("2.jpg", np.array([0.3, 0.7]), ["a", "b"], set(), 5, None,
                                 None, [])
    assert "datetime" not in bare and "warnings" not in bare
    assert bare["detections"][0]["classifications"] == [["1", 0.7], ["0", 0.3]]
    assert mdformat.ranked(np.array([0.0, 0.00001, 1.0]), 3) == [["2", 1.0]]
    assert mdformat.ranked(np.array([0.00001, 0.0]), 2) == [["0", 0.0]]  # the top one stays
    many = np.full(40, 0.025)
    assert len(mdformat.sparse(many)) == 32 and mdformat.sparse(np.array([1.0, 0.0])) == {
        "0": 1.0}
    assert mdformat.classification_categories(["a", "b"]) == {"0": "a", "1": "b"}
    people = (" People ", "homo sapiens", "Homo_Sapiens", "human", "PERSON")
    vehicles = ("Vehicle", "car", "truck", "motorcycle", "bicycle")
    assert [mdformat.detection_category(n) for n in people] == ["2"] * 5
    assert [mdformat.detection_category(n) for n in vehicles] == ["3"] * 5
    assert [mdformat.detection_category(n) for n in ("fox", "cart", "human_hand")] == ["1"] * 3


@pytest.mark.parametrize("name, cell", [
    ("deer.jpg", "deer.jpg"),
    ("caf\udce9.jpg", "caf\\xe9.jpg"),  # byte 0xE9 that was not UTF-8 (PEP 383): as ls -b
    ("\udc80\udcff", "\\x80\\xff"),  # the two ends of PEP 383's range
    ("\udc7f.jpg", "\\udc7f.jpg"),  # just below it: a real lone surrogate
    ("\udd00", "\\udd00"), ("\ud800", "\\ud800"), ("\udfff", "\\udfff"),
    ("\udce9\ud800", "\\udce9\\ud800"),  # mixed: nothing is taken for a byte
    ("\udce9\ue000", "\\xe9\ue000"),  # U+E000 is a character, not a surrogate
    ("\ud7ff\ue000", "\ud7ff\ue000")])
def test_csv_rows_file_names_that_are_not_utf8(name, cell):
    assert mdformat.csv_text(name) == cell
    cell.encode("utf-8")  # the cell is valid UTF-8
    assert mdformat.csv_text(7) == 7 and mdformat.csv_text(None) is None


def test_csv_rows_non_utf8_name_in_the_csv_file(tmp_path):
    import csv
    rec = mdformat.image_record("x/caf\udce9.jpg", np.array([0.2, 0.8]), ["empty", "deer"],
                                {0}, 2, None, None, ["a", "b"])
    out = tmp_path / "r.csv"
    mdformat.write_csv(out, [rec], ["empty", "deer"])
    with open(out, newline="", encoding="utf-8") as f:  # strict UTF-8
        row, = csv.DictReader(f)
    assert row["file"] == "x/caf\\xe9.jpg" and row["warnings"] == "a;b"


def test_megadetector_failure_record_and_info_block():
    rec = mdformat.failure_record("x.jpg", OSError("cannot identify image file\nmore"))
    assert rec == {"file": "x.jpg", "failure": "OSError: cannot identify image file",
                   "detections": None}
    assert mdformat.failure_record("y.jpg", ValueError())["failure"] == "ValueError: ValueError"
    assert len(mdformat.failure_record("z", ValueError("v" * 999))["failure"]) == 300
    info = mdformat.info_block("tiny", {"default": 0.6, "deer": 0.8}, "m.tflite", {"top_k": 3},
                               base={"image_base": "/data", "classifier": "old"})
    assert info["format_version"] == "1.6" and info["classifier"] == "tiny"
    assert info["image_base"] == "/data"
    import datetime as dt
    import time
    tz = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kathmandu"  # UTC+5:45: a local clock would show
    time.tzset()
    try:
        stamp = mdformat.info_block("t", {}, "m")["classification_completion_time"]
    finally:
        os.environ.pop("TZ") if tz is None else os.environ.__setitem__("TZ", tz)
        time.tzset()
    for s in (info["classification_completion_time"], stamp):
        when = dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        assert abs((now - when).total_seconds()) < 120  # UTC, now
    meta = info["classifier_metadata"]
    assert meta["typical_classification_threshold"] == 0.6 and meta["top_k"] == 3
    assert meta["thresholds"] == {"default": 0.6, "deer": 0.8} and meta["model"] == "m.tflite"
    assert meta["runtime"].startswith("kerascls-edge ")
    assert mdformat.info_block("t", {}, "m")["classifier_metadata"][
        "typical_classification_threshold"] == 0.5


def _md_records(labels):
    recs = [mdformat.image_record("a.jpg", np.array([0.1, 0.7, 0.2]), labels, {0}, 2, None,
                                  "2024:05:06 07:08:09", []),
            mdformat.image_record("b.jpg", np.array([0.8, 0.1, 0.1]), labels, {0}, 2, None,
                                  None, ["truncated"]),
            mdformat.failure_record("c.jpg", OSError("broken"))]
    recs[0]["sequence"] = {"id": "s1", "frames": 2, "classifications": [["2", 0.55]]}
    return recs


def test_megadetector_file_passes_the_official_validator(tmp_path):
    labels = ["empty", "deer", "fox"]
    header = {"info": mdformat.info_block("tiny", {"default": 0.5}, "m.tflite"),
              "detection_categories": dict(mdformat.DETECTION_CATEGORIES),
              "classification_categories": mdformat.classification_categories(labels)}
    out = tmp_path / "md.json"

    def records():
        for rec in _md_records(labels):
            # written under the temporary name the CLI knows to skip (.NAME.tmp), not yet
            # at the final path
            assert (tmp_path / ".md.json.tmp").exists() and not out.exists()
            yield rec
    assert mdformat.write_json(out, header, records()) == 3
    d = json.loads(out.read_text())
    assert list(d)[-1] == "images" and d["detection_categories"] == {
        "1": "animal", "2": "person", "3": "vehicle"}
    assert [im["file"] for im in d["images"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert not any(k.startswith("_") for im in d["images"] for k in im)
    assert d["images"][0]["detections"][0]["conf"] == 0.9
    assert d["images"][1]["detections"] == [] and d["images"][2]["detections"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["md.json"]  # no temporary left
    v = pytest.importorskip("megadetector.postprocessing.validate_batch_results")
    res = v.validate_batch_results(str(out))["validation_results"]
    assert res["errors"] == [] and res["warnings"] == []
    empty = tmp_path / "none.json"
    assert mdformat.write_json(empty, header, iter([])) == 0
    assert json.loads(empty.read_text())["images"] == []


def test_megadetector_writers_leave_nothing_when_interrupted(tmp_path):
    def broken():
        yield _md_records(["empty", "deer", "fox"])[0]
        raise KeyboardInterrupt
    for write in (lambda p: mdformat.write_json(p, {}, broken()),
                  lambda p: mdformat.write_csv(p, broken(), ["empty", "deer", "fox"])):
        out = tmp_path / "x.out"
        out.write_text("previous")
        with pytest.raises(KeyboardInterrupt):
            write(out)
        assert out.read_text() == "previous"  # the old file stays whole
        assert [p.name for p in tmp_path.iterdir()] == ["x.out"]


def test_csv_rows_by_hand(tmp_path):
    import csv
    labels = ["empty", "deer", "fox"]
    out = tmp_path / "r.csv"
    assert mdformat.write_csv(out, iter(_md_records(labels)), labels) == 3
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "confidence", "top_k", "detection", "bbox",
                             "datetime", "sequence_id", "sequence_label",
                             "sequence_confidence", "failure", "warnings",
                             "row", "frames_used", "frame_number", "frame_time"]  # videos' columns
    a, b, c = rows
    assert all(r["row"] == r["frames_used"] == r["frame_number"] == "" for r in rows)  # photos
    assert (a["label"], a["confidence"], a["top_k"]) == ("deer", "0.7000",
                                                         "deer:0.7000;fox:0.2000")
    assert (a["datetime"], a["sequence_id"], a["sequence_label"],
            a["sequence_confidence"]) == ("2024:05:06 07:08:09", "s1", "fox", "0.5500")
    assert a["detection"] == "" and a["bbox"] == "" and a["failure"] == ""
    assert (b["label"], b["warnings"], b["top_k"]) == ("empty", "truncated",
                                                       "empty:0.8000;deer:0.1000")
    assert (b["datetime"], b["failure"], b["sequence_id"]) == ("", "", "")
    assert c["failure"] == "OSError: broken" and c["label"] == "" and c["top_k"] == ""
    # detections mode (an input MegaDetector file): one row per classified box
    md_rec = {"file": "d.jpg", "detections": [
        {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4],
         "classifications": [["2", 0.6], ["1", 0.3]]},
        {"category": "2", "conf": 0.8, "bbox": [0.5, 0.5, 0.1, 0.1]},  # a person, unclassified
        {"category": "1", "conf": 0.7, "bbox": [0, 0, 1, 1], "classifications": [["1", 0.9]]}]}
    rows = list(mdformat.csv_rows(md_rec, labels))
    assert [(r["detection"], r["label"], r["confidence"], r["bbox"]) for r in rows] == [
        (0, "fox", "0.6000", "0.1000 0.2000 0.3000 0.4000"),
        (2, "deer", "0.9000", "0.0000 0.0000 1.0000 1.0000")]
    assert rows[0]["top_k"] == "fox:0.6000;deer:0.3000" and rows[0]["file"] == "d.jpg"
    assert (rows[0]["datetime"], rows[0]["failure"], rows[0]["warnings"]) == ("", "", "")
    assert list(mdformat.csv_rows({"file": "e.jpg", "detections": []}, labels)) == []


def test_csv_rows_of_a_video_by_hand():
    """A video's row and its frame rows; an empty ranking (a frame no class was kept for,
    a file from another tool) leaves that row's label empty instead of failing the CSV."""
    labels = ["empty", "deer", "fox"]
    rec = {"file": "v.mp4", "frames_processed": [0, 30, 60], "video": {
        "classifications": [["1", 0.75], ["2", 0.2]], "frames_used": 3, "frames": [
            {"frame_number": 0, "time": 0.0, "classifications": [["2", 0.5]]},
            {"frame_number": 30, "time": 1.001, "classifications": []},
            {"frame_number": 60, "time": 2.002, "classifications": [["1", 0.9], ["0", 0.1]]}]}}
    video, *frames = mdformat.csv_rows(rec, labels)
    assert (video["row"], video["frames_used"], video["label"], video["confidence"],
            video["top_k"]) == ("video", 3, "deer", "0.7500", "deer:0.7500;fox:0.2000")
    assert [(f["row"], f["frame_number"], f["frame_time"], f.get("label"), f.get("top_k"))
            for f in frames] == [("frame", 0, "0.000", "fox", "fox:0.5000"),
                                 ("frame", 30, "1.001", None, None),
                                 ("frame", 60, "2.002", "deer", "deer:0.9000;empty:0.1000")]
    rec["video"]["classifications"] = []
    video = next(mdformat.csv_rows(rec, labels))
    assert video["row"] == "video" and "label" not in video and "top_k" not in video


def _float_bundle(folder: Path, weights: np.ndarray, bias: np.ndarray, labels: list[str],
                  empty: list[str]) -> Path:
    """A float32 bundle: mean colour / 255 → Dense(softmax), weights set by hand."""
    import keras
    import tensorflow as tf
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inp))
    dense = keras.layers.Dense(len(labels), activation="softmax")
    model = keras.Model(inp, dense(x))
    dense.set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    folder.mkdir()
    (folder / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    meta = {"format": "kerascls-bundle", "format_version": 1, "kerascls_version": "0.1.0",
            "architecture": "hand_set", "task": "multiclass", "class_names": labels,
            "input": {"height": 16, "width": 16, "channels": 3, "channel_order": "RGB",
                      "dtype": "float32", "value_range": [0, 255], "resize": "stretch",
                      "interpolation": "bilinear"},
            "output": {"activation": "softmax"}, "quantization": "none",
            "thresholds": {"default": 0.5}, "empty_classes": empty}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_edge_output_conf_matches_numpy_softmax(tmp_path):
    """The device's `conf` against P computed in NumPy from the hand-set weights."""
    from PIL import Image

    from kerascls_edge.cli import main
    labels = ["deer", "empty", "fox", "blank"]
    w = np.array([[2.0, -1.0, 0.5, -2.0], [0.5, 1.0, -1.0, 0.0], [-1.5, 0.5, 2.0, 1.0]])
    b = np.array([0.3, 0.1, -0.2, 0.0])
    colours = {"warm.png": (200, 120, 40), "cool.png": (40, 90, 210)}
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, c in colours.items():
        Image.new("RGB", (40, 30), c).save(imgs / name)
    for empty in (["empty", "blank"], []):
        bundle = _float_bundle(tmp_path / f"b{len(empty)}", w, b, labels, empty)
        out = tmp_path / f"out{len(empty)}.json"
        assert main(["predict", str(bundle), str(imgs), "-o", str(out), "--threads", "1",
                     "--top_k", "4"]) == 0
        got = {im["file"]: im for im in json.loads(out.read_text())["images"]}
        for name, c in colours.items():
            z = np.array(c) / 255.0 @ w + b
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            det, = got[name]["detections"]  # deer or fox is on top for both colours
            expect = 1 - p[1] - p[3] if empty else p.max()
            assert det["conf"] == pytest.approx(expect, abs=1.5e-4), (name, empty)
            assert [c for c, _ in det["classifications"]] == [str(i) for i in np.argsort(-p)]


# -- int8 input quantization (README "Design": int8 input pinned to raw pixels) -------------


def test_int8_input_is_raw_pixels_even_when_calibration_is_narrow():
    """Calibrated on pixels in [60, 180] only, the uint8 input still gets scale 1, zero 0."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerascls.layers.preprocessing import ImagePreprocessing
    from kerascls.tflite.convert import convert
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = ImagePreprocessing()(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    calib = [_texture(16, 16, s, lo=60, hi=180) for s in range(16)]
    assert min(c.min() for c in calib) == 60 and max(c.max() for c in calib) == 180

    def input_quant(tflite: bytes) -> tuple[float, int]:
        it = Interpreter(model_content=tflite)
        d = it.get_input_details()[0]
        assert d["dtype"] == np.uint8
        return d["quantization"]

    ours = convert(model, "int8", calib)
    assert input_quant(ours) == (1.0, 0)  # a device feeds raw 0–255 pixels unchanged
    # The same calibration through a bare converter: the input scale follows the data
    # (about 180/255), which is what the 0/255 checkerboard in the calibration prevents.
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c[None].astype(np.float32)] for c in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    scale, zero = input_quant(conv.convert())
    assert scale == pytest.approx(180 / 255, rel=0.02) and zero == 0
    # and raw pixels fed to our int8 model give the Keras model's probabilities (on images
    # like the calibration ones: the layers after the input are calibrated for those)
    it = Interpreter(model_content=ours)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    for s in range(100, 104):
        img = _texture(16, 16, s, lo=70, hi=170)
        it.set_tensor(i["index"], img[None])
        it.invoke()
        q_scale, q_zero = o["quantization"]
        got = (it.get_tensor(o["index"]).astype(np.float32) - q_zero) * q_scale
        want = np.asarray(model(img[None].astype(np.float32)))
        np.testing.assert_allclose(got, want, atol=0.03)


# -- splits: whole locations / sequences per split, hand-worked ------------------------------


def _recs(groups: dict[str, tuple[int, str]], key: str) -> list[Record]:
    """``{group: (n, class)}`` → n records of that group (as location or seq_id)."""
    return [Record(f"/{g}_{i}.jpg", (c,), **{key: g}) for g, (n, c) in groups.items()
            for i in range(n)]


@pytest.mark.parametrize("key", ["location", "seq_id"])
def test_split_by_hand_the_last_group_goes_to_test(key):
    """Targets 0.6/0.2/0.2 of 12 images → quotas 7.2/2.4/2.4 (one class).

    Need of a split for a group = Σ_class n·(quota − have)/quota. Largest group first:
    A (7) needs 7 everywhere, a tie → train (the largest target); B (3): train needs
    3·0.2/7.2 = 0.08, val and test 3 → val; C (2), the last group: train 0.06,
    val 2·(2.4−3)/2.4 = −0.5, test 2 → test. Group sizes differ, so the seed (which only
    orders equal sizes) changes nothing.
    """
    recs = _recs({"A": (7, "deer"), "B": (3, "deer"), "C": (2, "deer")}, key)
    for seed in range(5):
        parts = split_records(recs, 0.2, 0.2, seed=seed)
        got = {s: sorted({getattr(r, key) for r in v}) for s, v in parts.items()}
        assert got == {"train": ["A"], "val": ["B"], "test": ["C"]}, seed
        assert sorted(r.path for v in parts.values() for r in v) == sorted(r.path for r in recs)


def test_split_by_hand_two_classes():
    """deer (5) and fox (9); targets 0.5/0.25/0.25 → quotas deer 2.5/1.25/1.25, fox 4.5/2.25/2.25.

    Need = Σ_class n·(1 − have/quota). Largest first:
    L2 (deer 3, fox 2): 5 everywhere, a tie → train (the largest target).
    L1 (deer 1, fox 3): train 1·(1 − 3/2.5) + 3·(1 − 2/4.5) = 1.47, val 4, test 4 → val.
    L3 (fox 3): train 3·(1 − 2/4.5) = 1.67, val 3·(1 − 3/2.25) = −1, test 3 → test.
    L4 (deer 1, fox 1), the last: train −0.2 + 0.56 = 0.36, val 0.2 − 0.33 = −0.13,
    test 1 + (1 − 3/2.25) = 0.67 → test.
    (Weighing the shortfall by the quota instead of dividing by it, or dividing by
    target/total, sends L1 or L3 elsewhere.)
    """
    groups = {"L1": [("deer", 1), ("fox", 3)], "L2": [("deer", 3), ("fox", 2)],
              "L3": [("fox", 3)], "L4": [("deer", 1), ("fox", 1)]}
    recs = [Record(f"/{g}_{c}_{i}.jpg", (c,), location=g, seq_id=f"{g}{i}")
            for g, cs in groups.items() for c, n in cs for i in range(n)]
    for seed in range(5):
        parts = split_records(recs, 0.25, 0.25, seed=seed)
        got = {s: sorted({r.location for r in v}) for s, v in parts.items()}
        assert got == {"train": ["L2"], "val": ["L1"], "test": ["L3", "L4"]}, seed
        assert sum(map(len, parts.values())) == len(recs)


def test_split_seed_orders_equal_groups_and_defaults_to_zero():
    recs = _recs({f"site{i}": (2, "deer") for i in range(12)}, "location")
    by_seed = [split_records(recs, 0.25, 0.25, seed=s) for s in range(4)]
    assert len({tuple(r.path for r in p["test"]) for p in by_seed}) > 1  # the seed matters
    assert split_records(recs, 0.25, 0.25) == by_seed[0]  # and the default is seed 0


@pytest.mark.parametrize("val, test", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (-0.1, 0.2),
                                       (0.2, -0.1), (0.6, 0.6), (1.5, 0.0), (0.0, 1.5)])
def test_split_fractions_out_of_range_are_one_clear_error(val, test):
    recs = _recs({"A": (3, "deer")}, "location")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\) and sum below 1, got "
                                         rf"{val}, {test}$"):
        split_records(recs, val, test)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4), st.sampled_from("abc"),
                          st.booleans()), min_size=1, max_size=40),
       st.sampled_from([(0.2, 0.2), (0.1, 0.3), (0.0, 0.25), (0.3, 0.0)]), st.integers(0, 3))
def test_splits_partition_records_and_never_share_a_group(rows, fractions, seed):
    recs = [Record(f"/{i}.jpg", (c,), location=f"L{loc}" if has_loc else "", seq_id=f"S{seq}")
            for i, (loc, seq, c, has_loc) in enumerate(rows)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy division-by-zero noise for an empty split
        parts = split_records(recs, *fractions, seed=seed)
    paths = [r.path for v in parts.values() for r in v]
    assert sorted(paths) == sorted(r.path for r in recs)  # every record exactly once
    owner: dict[str, str] = {}
    for split, v in parts.items():
        for r in v:
            # the unit that must not straddle splits: the site, else the burst
            unit = f"loc {r.location}" if r.location else f"seq {r.seq_id}"
            assert owner.setdefault(unit, split) == split, unit
    val_fraction, test_fraction = fractions
    if val_fraction == 0:
        assert parts["val"] == []
    if test_fraction == 0:
        assert parts["test"] == []


# -- metrics against scikit-learn and by hand -----------------------------------------------


def _probs(n: int, c: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1.5, (n, c))
    logits[np.arange(n), y] += rng.normal(signal, 1.0, n)  # better than chance, not perfect
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), y


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_top5_nll_against_sklearn(seed):
    probs, y = _probs(300, 7, seed)
    rep = M.classification_report(probs, y, list("abcdefg"))
    assert rep["class_names"] == list("abcdefg")
    rows = _ece_reference(probs, y, 15)[1]
    assert len(rep["reliability"]) == len(rows)
    for b, (count, acc, conf) in zip(rep["reliability"], rows):  # field by field: pytest 9.2
        assert b["count"] == count  # refuses approx() of nested sequences
        assert b["accuracy"] == pytest.approx(acc, rel=1e-9, abs=1e-12)
        assert b["confidence"] == pytest.approx(conf, rel=1e-9, abs=1e-12)
    assert json.dumps(rep["confusion_matrix"]).replace(".", "") == json.dumps(
        rep["confusion_matrix"])  # counts are written as integers
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert rep["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs, k=5, labels=range(7)))
    assert rep["nll"] == pytest.approx(skm.log_loss(y, probs, labels=range(7)), rel=1e-9)
    assert rep["loss"] == rep["nll"]
    assert rep["log_likelihood"] == pytest.approx(-300 * skm.log_loss(y, probs), rel=1e-9)
    assert rep["likelihood"] == pytest.approx(np.exp(-300 * skm.log_loss(y, probs)), rel=1e-6)
    assert rep["confusion_matrix"] == skm.confusion_matrix(y, probs.argmax(1),
                                                           labels=range(7)).tolist()
    for k in (1, 2, 3):
        assert M.topk_accuracy(probs, y, k) == pytest.approx(
            skm.top_k_accuracy_score(y, probs, k=k, labels=range(7)))


def test_topk_with_many_classes_against_sklearn():
    probs, y = _probs(300, 1000, 4, signal=4.0)
    for k in (1, 2, 5):
        assert M.topk_accuracy(probs, y, k) == pytest.approx(
            skm.top_k_accuracy_score(y, probs, k=k, labels=range(1000)))
    assert M.topk_accuracy(probs, y) == M.topk_accuracy(probs, y, 1)  # the default is top-1


def test_float32_model_outputs_are_scored_in_float64():
    """What a model or an int8 bundle returns is float32; the metrics must equal the same
    numbers computed in float64 (10,000 logs summed in float32 drift in the 7th digit)."""
    probs, y = _probs(2000, 5, 6)
    p32 = probs.astype(np.float32)
    p64 = p32.astype(np.float64)
    rep = M.classification_report(p32, y, list("abcde"))
    assert rep["log_likelihood"] == pytest.approx(
        np.sum(np.log(p64[np.arange(2000), y])), rel=1e-13)
    assert rep["ece"] == pytest.approx(_ece_reference(p64, y, 15)[0], rel=1e-12)
    observed = p32[np.arange(2000), y]
    assert M.log_likelihood(observed) == pytest.approx(np.sum(np.log(p64[np.arange(2000), y])),
                                                       rel=1e-13)
    p1, y1 = p32[:, 0], (y == 0).astype(int)
    want = np.sum(np.log(np.where(y1 == 1, p1.astype(np.float64), 1 - p1.astype(np.float64))))
    assert M.binary_likelihood(y1, p1)["log_likelihood"] == pytest.approx(want, rel=1e-13)
    # a binary head's output is a column (N, 1), its labels too
    assert M.binary_likelihood(y1[:, None], p1[:, None])["log_likelihood"] == pytest.approx(
        want, rel=1e-13)
    np.testing.assert_array_equal(M.two_class(p1[:, None]),
                                  np.stack([1 - p1.astype(np.float64), p1], 1))
    truth = (probs[:, :3] > 0.3).astype(int)
    ml = M.multilabel_report(p32[:, :3], truth, list("abc"))
    q = p64[:, :3]
    assert ml["log_likelihood"] == pytest.approx(
        np.sum(np.log(np.where(truth > 0, q, 1 - q))), rel=1e-13)


def test_per_class_against_sklearn_with_a_class_never_predicted():
    probs, y = _probs(200, 5, 3)
    probs[:, 4] *= 0.01  # class 4 is never the argmax; its precision is 0 by convention
    probs /= probs.sum(1, keepdims=True)
    assert 4 not in probs.argmax(1) and 4 in y
    rep = M.classification_report(probs, y, list("abcde"))
    p, r, f, s = skm.precision_recall_fscore_support(y, probs.argmax(1), labels=range(5),
                                                     zero_division=0)
    got = rep["per_class"]
    np.testing.assert_allclose([g["precision"] for g in got], p)
    np.testing.assert_allclose([g["recall"] for g in got], r)
    np.testing.assert_allclose([g["f1"] for g in got], f)
    assert [g["support"] for g in got] == s.tolist()


def test_multilabel_report_against_sklearn():
    rng = np.random.default_rng(5)
    truth = (rng.uniform(size=(120, 4)) < [0.5, 0.3, 0.1, 0.6]).astype(int)
    probs = np.clip(0.5 * truth + rng.uniform(0, 0.6, truth.shape), 0.01, 0.99)
    rep = M.multilabel_report(probs, truth, list("abcd"))
    pred = (probs >= 0.5).astype(int)
    assert rep["micro_f1"] == pytest.approx(skm.f1_score(truth, pred, average="micro"))
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(truth, pred, average="macro",
                                                         zero_division=0))
    assert rep["exact_match"] == pytest.approx(skm.accuracy_score(truth, pred))
    ap = [skm.average_precision_score(truth[:, c], probs[:, c]) for c in range(4)]
    np.testing.assert_allclose([row["ap"] for row in rep["per_class"]], ap)
    assert rep["mAP"] == pytest.approx(np.mean(ap))
    assert rep["loss"] == pytest.approx(skm.log_loss(truth.ravel(), probs.ravel()))
    assert rep["log_likelihood"] == pytest.approx(-truth.size * rep["loss"])
    assert rep["count"] == 120 and rep["threshold"] == 0.5 and rep["task"] == "multilabel"
    # ECE over the (image, class) yes/no decisions: confidence max(p, 1 − p)
    p = probs.ravel()
    ece, rows = _ece_reference_from(np.maximum(p, 1 - p), (p > 0.5) == (truth.ravel() > 0), 15)
    assert rep["ece"] == pytest.approx(ece, rel=1e-9)
    assert [b["count"] for b in rep["reliability"]] == [n for n, _, _ in rows]
    stricter = M.multilabel_report(probs, truth, list("abcd"), threshold=0.9)
    assert stricter["threshold"] == 0.9 and stricter["exact_match"] == pytest.approx(
        skm.accuracy_score(truth, (probs >= 0.9).astype(int)))
    assert rep["class_names"] == list("abcd")
    p, r, f, support = skm.precision_recall_fscore_support(truth, pred, zero_division=0)
    got = rep["per_class"]
    np.testing.assert_allclose([[g["precision"], g["recall"], g["f1"]] for g in got],
                               np.stack([p, r, f], 1))
    assert [g["support"] for g in got] == support.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN-mean or 0/0 warnings on the way
        none = M.multilabel_report(probs[:, :1], np.zeros((120, 1)), ["a"])
    assert np.isnan(none["mAP"]) and np.isnan(none["per_class"][0]["ap"])


def test_multilabel_report_by_hand():
    """Three images, three classes, threshold 0.5 (p ≥ 0.5 is a yes):

    a: truth 1,1,0; p .5 (yes, exactly at the threshold), .4 (no), .6 (yes) → tp 1, fp 1,
       fn 1: precision .5, recall .5, F1 .5 (p + r = 1).
    b: truth 0,0,0; p .1 .2 .3 (never yes) → 0/0 everywhere: 0, 0, 0, AP NaN.
    c: truth 1,0,1; p .9 .2 .45 → tp 1, fn 1: precision 1, recall .5, F1 2/3.
    micro: tp 2, fp 1, fn 2 → P 2/3, R 1/2, F1 4/7. Exact match: image 2 only (1/3).
    """
    truth = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]])
    probs = np.array([[0.5, 0.1, 0.9], [0.4, 0.2, 0.2], [0.6, 0.3, 0.45]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = M.multilabel_report(probs, truth, ["a", "b", "c"])
    rows = {r["class"]: r for r in rep["per_class"]}
    assert (rows["a"]["precision"], rows["a"]["recall"], rows["a"]["f1"]) == (0.5, 0.5, 0.5)
    assert (rows["b"]["precision"], rows["b"]["recall"], rows["b"]["f1"]) == (0, 0, 0)
    assert np.isnan(rows["b"]["ap"]) and rows["b"]["support"] == 0
    assert rows["c"]["precision"] == 1 and rows["c"]["recall"] == 0.5
    assert rows["c"]["f1"] == pytest.approx(2 / 3)
    assert rep["micro_f1"] == pytest.approx(4 / 7)
    assert rep["macro_f1"] == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    assert rep["exact_match"] == pytest.approx(1 / 3)
    assert [r["support"] for r in rep["per_class"]] == [2, 0, 2]


def test_metrics_edge_cases_by_hand(tmp_path):
    # labels as a float column, fewer classes than 5: top-5 is every class
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    rep = M.classification_report(probs, np.array([[0.0], [1.0], [2.0]]), ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(1 / 3) and rep["top5_accuracy"] == 1.0
    assert M.topk_accuracy(probs, [0, 1, 2], 2) == pytest.approx(2 / 3)
    assert rep["count"] == 3 and rep["class_names"] == ["a", "b", "c"]
    assert rep["confusion_matrix"] == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert "empty_class" not in rep and "empty_filter" not in rep
    # a probability of 0 for the true class: finite, log(1e-12); slightly above 1 counts as 1
    lik = M.likelihood_report([0.0, 1.0000001])
    assert lik["log_likelihood"] == pytest.approx(np.log(1e-12))
    assert M.likelihood_report([1.0000001, 1.5])["log_likelihood"] == 0.0  # clipped to 1
    assert lik["nll"] == pytest.approx(-np.log(1e-12) / 2) and lik["likelihood"] == pytest.approx(
        1e-12)
    assert M.likelihood_report(np.array([[0.5], [0.25]]))["nll"] == pytest.approx(
        -np.log(0.125) / 2)
    assert M.likelihood_report([0.5])["nll"] == pytest.approx(np.log(2))
    one = M.calibration(np.array([[0.7, 0.3]]), [0], bins=4)
    assert one["ece"] == pytest.approx(0.3) and [b["count"] for b in one["bins"]] == [0, 0, 1, 0]
    # class names that mean "no animal"
    assert [M.find_empty_class(n) for n in (["deer", " Empty "], ["none"], ["Nothing", "x"],
                                            ["blank_frame"], [])] == [1, 0, 0, None, None]
    # default thresholds of the empty filter: 0.05, 0.10 … 0.95
    rows = M.empty_filter_table(np.array([[0.3, 0.7]]), [0], 0)
    assert [r["threshold"] for r in rows] == [round(0.05 * i, 2) for i in range(1, 20)]
    assert [r["discarded"] for r in rows] == [1] * 6 + [0] * 13  # p(empty) 0.3 ≥ t up to 0.3
    # per-class CSV as written: header from the first row, values as given
    out = tmp_path / "p.csv"
    M.write_csv([{"class": "a", "f1": 0.5}, {"class": "b", "f1": 1.0}], out)
    assert out.read_text().splitlines() == ["class,f1", "a,0.5", "b,1.0"]
    M.write_csv([{"threshold": 0.5}], out)
    assert out.read_text().splitlines() == ["threshold", "0.5"]
    # a binary head's p(class 1) becomes two columns; two columns stay as they are
    two = np.array([[0.3, 0.7], [0.9, 0.1]])
    np.testing.assert_array_equal(M.two_class(two), two)


def test_per_class_against_sklearn_with_a_class_absent_from_the_labels():
    probs, y = _probs(120, 4, 9)
    y[y == 2] = 1  # class 2 never true, still predicted sometimes
    assert 2 in probs.argmax(1) and 2 not in y
    got = M.per_class(M.confusion_matrix(y, probs.argmax(1), 4), list("abcd"))
    p, r, f, s = skm.precision_recall_fscore_support(y, probs.argmax(1), labels=range(4),
                                                     zero_division=0)
    np.testing.assert_allclose([[g["precision"], g["recall"], g["f1"]] for g in got],
                               np.stack([p, r, f], 1))
    assert [g["support"] for g in got] == s.tolist() and got[2]["support"] == 0


def test_average_precision_against_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(5):
        pos = rng.uniform(size=50) < 0.3
        scores = rng.uniform(size=50) + 0.3 * pos
        assert M.average_precision(scores, pos) == pytest.approx(
            skm.average_precision_score(pos, scores))


def test_average_precision_with_tied_scores():
    """Quantized outputs tie: equal scores are one threshold, whatever their order.

    100 images all at 0.5, the first 10 positive: one threshold, precision 0.1 → AP 0.1
    (ranking the positives first because they come first would claim 1.0).
    """
    pos = np.arange(100) < 10
    assert M.average_precision(np.full(100, 0.5), pos) == pytest.approx(0.1)
    rng = np.random.default_rng(3)
    for _ in range(20):
        pos = rng.uniform(size=60) < 0.3
        scores = np.round(rng.uniform(size=60) + 0.3 * pos, 1)  # a few distinct levels
        ap = M.average_precision(scores, pos)
        assert ap == pytest.approx(skm.average_precision_score(pos, scores), rel=1e-12)
        shuffle = rng.permutation(60)
        assert M.average_precision(scores[shuffle], pos[shuffle]) == pytest.approx(ap,
                                                                                   rel=1e-12)


def test_ece_and_reliability_bins_by_hand():
    """Ten bins; no confidence sits on a bin midpoint, one sits on an edge (0.5 → (0.4, 0.5]).

    bin (0.4, 0.5]: conf 0.41 (right), 0.47 (wrong), 0.5 (right) → acc 2/3, conf 0.46
    bin (0.7, 0.8]: conf 0.72 (right), 0.78 (right), 0.74 (wrong) → acc 2/3, conf 0.74666…
    bin (0.9, 1.0]: conf 0.93 (right) → acc 1, conf 0.93
    ECE = (3·|2/3 − 0.46| + 3·|2/3 − 0.74666…| + 1·0.07) / 7
    """
    conf = np.array([0.41, 0.47, 0.5, 0.72, 0.78, 0.74, 0.93])
    right = np.array([1, 0, 1, 1, 1, 0, 1], bool)
    c = 3  # the rest of the probability goes to the other two classes equally
    probs = np.tile(((1 - conf) / (c - 1))[:, None], (1, c))
    probs[:, 0] = conf
    y = np.where(right, 0, 1)
    cal = M.calibration(probs, y, bins=10)
    rows = {i: b for i, b in enumerate(cal["bins"]) if b["count"]}
    assert sorted(rows) == [4, 7, 9]
    assert [rows[i]["count"] for i in (4, 7, 9)] == [3, 3, 1]
    assert rows[4]["lower"] == pytest.approx(0.4) and rows[4]["upper"] == pytest.approx(0.5)
    assert rows[4]["confidence"] == pytest.approx(0.46)
    assert rows[7]["confidence"] == pytest.approx(2.24 / 3)
    assert rows[9]["confidence"] == pytest.approx(0.93) and rows[9]["accuracy"] == 1.0
    assert rows[4]["accuracy"] == pytest.approx(2 / 3) == rows[7]["accuracy"]
    expect = (3 * abs(2 / 3 - 0.46) + 3 * abs(2 / 3 - 2.24 / 3) + 0.07) / 7
    assert cal["ece"] == pytest.approx(expect)
    assert len(cal["bins"]) == 10 and cal["bins"][0]["lower"] == 0.0
    assert cal["bins"][-1]["upper"] == 1.0
    # a confidence of exactly 1.0 lands in the last bin, 1/3 in the first of two
    edge = M.calibration(np.array([[1.0, 0, 0], [0.52, 0.48, 0], [0.34, 0.33, 0.33]]),
                         [0, 1, 0], bins=2)["bins"]
    assert [b["count"] for b in edge] == [1, 2]


def _ece_reference(probs: np.ndarray, y: np.ndarray, bins: int) -> tuple[float, list]:
    """ECE written another way: bin = ceil(conf·bins) − 1 (bins closed on the right)."""
    return _ece_reference_from(probs.max(1), probs.argmax(1) == y, bins)


def _ece_reference_from(conf: np.ndarray, right: np.ndarray, bins: int) -> tuple[float, list]:
    idx = np.maximum(np.ceil(conf * bins).astype(int) - 1, 0)
    total, rows = 0.0, []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += abs(right[sel].mean() - conf[sel].mean()) * sel.sum()
        rows.append((int(sel.sum()), float(right[sel].mean()) if sel.any() else 0.0,
                     float(conf[sel].mean()) if sel.any() else 0.0))
    return total / len(conf), rows


@pytest.mark.parametrize("seed, bins", [(0, 15), (1, 10), (2, 7)])
def test_ece_against_an_independent_implementation(seed, bins):
    probs, y = _probs(500, 4, seed)
    ece, rows = _ece_reference(probs, y, bins)
    cal = M.calibration(probs, y, bins=bins)
    assert cal["ece"] == pytest.approx(ece, rel=1e-9)
    got = [(b["count"], b["accuracy"], b["confidence"]) for b in cal["bins"]]
    np.testing.assert_allclose(got, rows, rtol=1e-9, atol=1e-12)
    if bins == 15:
        rep = M.classification_report(probs, y, list("abcd"))
        assert rep["ece"] == pytest.approx(ece, rel=1e-9)


def test_empty_filter_by_hand_with_a_threshold_hit_exactly():
    """Discard frames with p(empty) ≥ t. Frames (p_empty, truly empty):

    (0.9, yes) (0.5, yes) (0.5, no) (0.45, yes) (0.2, no) (0.05, no); 3 empty frames.
    t=0.5 drops the first three: precision 2/3, recall 2/3, 1 animal lost.
    t=0.45 drops four: precision 3/4, recall 1. t=0.95 drops none: precision 1 (nothing
    wrongly dropped), recall 0.
    """
    p_empty = np.array([0.9, 0.5, 0.5, 0.45, 0.2, 0.05])
    y = np.array([0, 0, 1, 0, 1, 2])  # class 0 is empty
    probs = np.stack([p_empty, (1 - p_empty) * 0.7, (1 - p_empty) * 0.3], 1)
    rows = {r["threshold"]: r for r in M.empty_filter_table(probs, y, 0, [0.45, 0.5, 0.95])}
    assert rows[0.5] == {"threshold": 0.5, "discarded": 3, "precision": pytest.approx(2 / 3),
                         "recall": pytest.approx(2 / 3), "animals_lost": 1}
    assert rows[0.45]["precision"] == 0.75 and rows[0.45]["recall"] == 1.0
    assert rows[0.95] == {"threshold": 0.95, "discarded": 0, "precision": 1.0, "recall": 0.0,
                          "animals_lost": 0}
    for t in (0.45, 0.5):
        drop, empty = p_empty >= t, y == 0
        assert rows[t]["precision"] == pytest.approx(skm.precision_score(empty, drop))
        assert rows[t]["recall"] == pytest.approx(skm.recall_score(empty, drop))
    # the report's default thresholds include 0.5 exactly
    table = M.classification_report(probs, y, ["empty", "deer", "fox"])["empty_filter"]
    assert {r["threshold"]: r["discarded"] for r in table}[0.5] == 3
    # no empty frame at all: recall has nothing to find
    none = M.empty_filter_table(probs, np.array([1, 1, 1, 2, 2, 2]), 0, [0.5])[0]
    assert none["recall"] == 0.0 and none["precision"] == 0.0 and none["animals_lost"] == 3


# -- augmentation changes images -------------------------------------------------------------


def _batch(n: int = 8, size: int = 32) -> np.ndarray:
    return np.stack([_texture(size, size, 40 + i) for i in range(n)]).astype(np.float32)


@pytest.mark.parametrize("name", ["flip", "randaugment", "erasing", "mixup", "cutmix"])
def test_every_augmentation_changes_the_batch(name):
    import tensorflow as tf

    from kerascls.data.transforms import batch_augmenter
    images = _batch()
    labels = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    x, t = batch_augmenter([name], seed=3)(tf.constant(images), tf.constant(labels))
    x, t = np.asarray(x), np.asarray(t)
    changed = np.abs(x - images).reshape(8, -1).max(1) > 1.0
    assert changed.sum() >= 2, f"{name}: only {changed.sum()} of 8 images changed"
    if name == "flip":  # each image is itself or its exact mirror
        mirrored = [np.allclose(a, b[:, ::-1]) for a, b in zip(x, images)]
        same = [np.allclose(a, b) for a, b in zip(x, images)]
        assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored)
    # still pictures on the 0–255 scale, not flattened or rescaled
    assert x.min() >= 0 and x.max() <= 255.001 and x.max() > 150
    assert x.std() > 0.5 * images.std()
    cls = labels.argmax(1)
    for i in np.flatnonzero(changed):
        if name == "mixup":  # x_i = λ·x_i + (1 − λ)·x_j, and the labels alike
            fits = []
            for j in set(range(8)) - {i}:
                d = images[i] - images[j]
                lam = float(((x[i] - images[j]) * d).sum() / (d * d).sum())
                fits.append((np.abs(lam * d + images[j] - x[i]).max(), j, lam))
            err, j, lam = min(fits)
            assert err < 0.01 and 0 <= lam <= 1, (i, err, lam)
            want = lam * labels[i] + (1 - lam) * labels[j]
            np.testing.assert_allclose(t[i], want, atol=1e-3)
        if name == "erasing":  # one rectangle replaced, the rest untouched
            box = np.abs(x[i] - images[i]).max(-1) > 1e-3
            rows, cols = np.nonzero(box)
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0.9
            assert box.mean() < 0.6
        if name == "cutmix":  # a box of another image x_j; its label weighs the box's area
            box = np.abs(x[i] - images[i]).max(-1) > 1e-3
            src = [j for j in range(8) if j != i and np.allclose(x[i][box], images[j][box],
                                                                   atol=1e-3)]
            assert src, i
            rows, cols = np.nonzero(box)
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0.9
            if cls[src[0]] != cls[i]:  # Keras weighs the box before clipping: ≈, not =
                assert t[i, cls[src[0]]] == pytest.approx(box.mean(), abs=0.07)
    if name in ("mixup", "cutmix"):  # labels mixed like the images
        assert (t.max(1) < 0.999).any()
        np.testing.assert_allclose(t.sum(1), 1, atol=1e-5)
    else:
        np.testing.assert_array_equal(t, labels)


def _coordinates(h: int, w: int) -> np.ndarray:
    """R = column, G = row (so a crop's geometry can be read back from its pixels), B texture."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([cols, rows, _texture(h, w, 7)[..., 2].astype(np.float32)], -1)


def _crop_box(out: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the window a stretched crop came from, read from R/G.

    Bilinear resizing keeps a linear ramp linear: fit it on the inner pixels.
    """
    oh, ow = out.shape[:2]
    cx, cy = np.arange(ow) + 0.5, np.arange(oh) + 0.5
    sx = np.polyfit(cx[2:ow - 2], out[oh // 2, 2:ow - 2, 0], 1)
    sy = np.polyfit(cy[2:oh - 2], out[2:oh - 2, ow // 2, 1], 1)
    # pixel value v sits at source coordinate v + 0.5; output centre u maps to left + u·slope
    return sx[1] + 0.5, sy[1] + 0.5, sx[0] * ow, sy[0] * oh


def test_random_resized_crop_takes_a_random_window():
    import tensorflow as tf

    from kerascls.data.transforms import random_resized_crop
    h = w = 200
    image = tf.constant(_coordinates(h, w))
    boxes = []
    for s in range(12):
        out = random_resized_crop(image, (48, 48), tf.constant([s, 7], tf.int64)).numpy()
        assert out.shape == (48, 48, 3)
        left, top, cw, ch = _crop_box(out)
        assert -1 <= left and left + cw <= w + 1 and -1 <= top and top + ch <= h + 1
        area = cw * ch / (h * w)
        assert 0.35 - 0.03 <= area <= 1.0 + 0.02, (s, area)
        assert 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05, (s, cw, ch)
        boxes.append((left, top, cw, ch))
    boxes = np.array(boxes)
    areas = boxes[:, 2] * boxes[:, 3] / (h * w)
    assert (areas < 0.8).sum() >= 4  # most crops are real crops, not the whole frame
    assert np.ptp(boxes[:, 0]) > 20 and np.ptp(boxes[:, 1]) > 20  # at different places
    aspect = boxes[:, 2] / boxes[:, 3]
    assert (aspect < 0.95).any() and (aspect > 1.05).any()  # both sides of 3/4 … 4/3 used


@pytest.mark.parametrize("w, h, size, box", [
    (200, 100, (50, 50), (50, 0, 100, 100)),     # wide image, square target: centre columns
    (100, 200, (50, 50), (0, 50, 100, 100)),     # tall image: centre rows
    (240, 60, (30, 60), (60, 0, 120, 60)),       # target 2:1 on a 4:1 image
    (100, 200, (50, 100), (0, 75, 100, 50)),     # target 2:1 on a 1:2 image
    (200, 100, (25, 50), (0, 0, 200, 100))])     # same aspect: the whole image
def test_resize_crop_mode_takes_the_centred_box_by_hand(w, h, size, box):
    """``crop``: the largest centred window of the target's aspect, read back from
    coordinate-coded pixels (R = column, G = row; images under 256 pixels, as pixels are
    uint8)."""
    import tensorflow as tf

    from kerascls.data.transforms import resize
    out = resize(tf.constant(_coordinates(h, w)), size, "crop").numpy()
    assert out.shape == (*size, 3)
    left, top, cw, ch = _crop_box(out)
    np.testing.assert_allclose([left, top, cw, ch], box, atol=1.0)


@pytest.mark.parametrize("w, h, cols, rows", [
    (100, 200, (12, 37), (0, 50)),   # tall: scale min(50/100, 50/200) = 1/4 → 25 wide, x 12
    (200, 100, (0, 50), (12, 37)),   # wide: 25 high at y 12
    (1, 200, (24, 25), (0, 50))])    # a 1-pixel column stays one pixel wide (never 0)
def test_resize_pad_mode_letterbox_by_hand(w, h, cols, rows):
    import tensorflow as tf

    from kerascls.data.transforms import resize
    img = np.full((h, w, 3), 200.0, np.float32)
    out = resize(tf.constant(img), (50, 50), "pad").numpy()
    filled = out.max(-1) > 0
    assert np.flatnonzero(filled.any(0)).tolist() == list(range(*cols))
    assert np.flatnonzero(filled.any(1)).tolist() == list(range(*rows))


@pytest.mark.parametrize("w, h, size, cols, rows", [
    (200, 1, (50, 50), (0, 50), (24, 25)),     # a 1-pixel row stays one pixel high (never 0)
    (100, 100, (40, 80), (20, 60), (0, 40)),   # (h, w) = (40, 80): scale 0.4, 40 x 40 at x 20
    (100, 100, (80, 40), (0, 40), (20, 60))])  # (80, 40): 40 x 40 at y 20
def test_resize_pad_mode_one_pixel_row_and_non_square_targets_by_hand(w, h, size, cols, rows):
    import tensorflow as tf

    from kerascls.data.transforms import resize
    out = resize(tf.constant(np.full((h, w, 3), 200.0, np.float32)), size, "pad").numpy()
    assert out.shape == (*size, 3)
    filled = out.max(-1) > 0
    assert np.flatnonzero(filled.any(0)).tolist() == list(range(*cols))
    assert np.flatnonzero(filled.any(1)).tolist() == list(range(*rows))


def test_resize_keeps_black_black():
    """Output columns 0–5 of a 64 → 16 shrink (4 px per column, triangle 4 px wide each
    side) only see the black left half: exactly 0, as Pillow gives."""
    import tensorflow as tf

    from kerascls.data.transforms import resize
    img = _texture(16, 64, 5)
    img[:, :32] = 0
    out = resize(tf.constant(img), (16, 16)).numpy()
    assert (out[:, :6] == 0).all() and out[:, 10:].min() > 0


def test_resize_and_random_resized_crop_keep_static_shapes_in_graphs():
    """In ``Dataset.map`` the image's size is unknown; the model still needs (h, w, c)."""
    import tensorflow as tf

    from kerascls.data.transforms import RESIZE_MODES, random_resized_crop, resize
    shapes = {}

    def probe(image):
        for mode in RESIZE_MODES:
            shapes[mode] = tuple(resize(image, (8, 12), mode).shape)
        shapes["rrc"] = tuple(random_resized_crop(image, (8, 12), tf.constant([1, 2])).shape)
        return image
    spec = tf.TensorSpec([None, None, 3], tf.uint8)
    tf.function(probe, input_signature=[spec]).get_concrete_function()
    assert shapes == {m: (8, 12, 3) for m in (*RESIZE_MODES, "rrc")}


@pytest.mark.parametrize("name", ["flip", "randaugment", "erasing", "mixup", "cutmix"])
def test_augmenter_with_a_seed_repeats_itself(name):
    """``--seed`` reaches every layer: two augmenters with one seed give the same batch."""
    import tensorflow as tf

    from kerascls.data.transforms import batch_augmenter
    images = tf.constant(_batch())
    labels = tf.constant(np.eye(4, dtype=np.float32)[np.arange(8) % 4])
    a = batch_augmenter([name], seed=5)(images, labels)
    b = batch_augmenter([name], seed=5)(images, labels)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_resize_mode_must_be_known():
    import tensorflow as tf

    from kerascls.data.transforms import resize
    with pytest.raises(ValueError, match=r"^resize must be one of \('stretch', 'crop', 'pad'\),"
                                         r" got 'zoom'$"):
        resize(tf.zeros((4, 4, 3)), (2, 2), "zoom")


def test_parse_augment_by_hand():
    from kerascls.data.transforms import parse_augment
    assert parse_augment(" Flip, rrc ,MIXUP") == ["flip", "rrc", "mixup"]
    for nothing in ("", None, "none", " NONE ", ",,"):
        assert parse_augment(nothing) == [], nothing
    with pytest.raises(ValueError, match=r"^unknown augmentation 'none'; choose from flip, rrc, "
                                         r"randaugment, erasing, mixup, cutmix$"):
        parse_augment("flip,none")


def test_training_pipeline_augments_only_the_training_split(tmp_path):
    from PIL import Image

    from kerascls.data.pipeline import PipelineOptions, file_dataset
    from kerascls.data.records import check_files
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(_texture(64, 80, 90 + i)).save(paths[-1])
    recs = check_files([Record(str(p), ("a",)) for p in paths]).records
    y = np.zeros(4, np.int32)

    def first_batch(**kw) -> np.ndarray:
        opts = PipelineOptions((32, 32), batch_size=4, deterministic=True, **kw)
        return next(iter(file_dataset(recs, y, opts)))[0].numpy()

    plain = first_batch(training=False)
    np.testing.assert_array_equal(first_batch(training=False, augment=("rrc", "flip")), plain)
    for augment in (("rrc",), ("randaugment",)):
        aug = first_batch(training=True, augment=augment)  # shuffled: match to the nearest
        diff = np.abs(aug[:, None] - plain[None]).reshape(4, 4, -1).mean(-1).min(1)
        assert (diff > 3).all(), (augment, diff)


# -- resume semantics (README "Design": the same command resumes) ---------------------------


def test_resume_restores_weights_and_epoch_and_keeps_one_history_row_per_epoch(tmp_path):
    """A crash after epoch 1 (the epoch-end checkpoint is Backup's own addition, as step
    checkpoints alone would lose the epoch); the rerun starts at epoch 2 from the saved
    weights and ends with each epoch once in history.csv."""
    import csv

    import keras

    from kerascls.training.callbacks import Backup, EpochHistory
    from kerascls.training.train import refuse_finished_run
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)

    def model() -> keras.Model:
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        return m

    class PowerCut(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("power cut")

    class Seen(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.start = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)
            self.start = self.start or [w.copy() for w in self.model.get_weights()]

    history, backup = tmp_path / "history.csv", tmp_path / "backup"

    def callbacks(*extra):
        return [EpochHistory(history), Backup(str(backup), save_freq=1000), *extra]
    first = model()
    with pytest.raises(RuntimeError, match="power cut"):
        first.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks(PowerCut()))
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    seen = Seen()
    model().fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks(seen))
    assert seen.epochs == [2, 3]  # resumed, not restarted
    for got, want in zip(seen.start, first.get_weights()):
        np.testing.assert_array_equal(got, want)  # from the checkpoint, not fresh weights
    with open(history, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert not backup.exists()  # a finished run leaves no resume state
    # a finished run is not trained over by accident; an interrupted one resumes
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        refuse_finished_run(tmp_path, overwrite=False)
    refuse_finished_run(tmp_path, overwrite=True)
    backup.mkdir()
    refuse_finished_run(tmp_path, overwrite=False)


def test_in_memory_training_split_is_augmented_seeded():
    """``--augment`` reaches in-memory data (Fashion-MNIST, tfds) as it reaches files: flip
    mirrors some images and keeps the rest, the same ones on a rerun; MixUp mixes one-hot
    labels. Validation batches (no ``augment``) stay as they are."""
    from kerascls.data.pipeline import array_dataset
    x = np.stack([_texture(28, 36, 300 + i) for i in range(16)])[..., :1]
    y = np.eye(4, dtype=np.float32)[np.arange(16) % 4]

    def batch(augment, seed=0):
        ds = array_dataset(x, y, 16, training=False, seed=seed, augment=augment)
        return [t.numpy() for t in next(iter(ds))]

    plain, _ = batch(())
    np.testing.assert_array_equal(plain, x.astype(np.float32))
    flipped, labels = batch(("flip",))
    mirrored = [bool(np.array_equal(f, p[:, ::-1])) for f, p in zip(flipped, plain)]
    kept = [bool(np.array_equal(f, p)) for f, p in zip(flipped, plain)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(batch(("flip",))[0], flipped)  # seeded
    mixed_x, mixed_y = batch(("mixup",))
    assert np.abs(mixed_x - plain).max() > 10
    np.testing.assert_allclose(mixed_y.sum(1), 1, atol=1e-5)
    assert ((mixed_y > 0.01) & (mixed_y < 0.99)).any()
    rrc, _ = batch(("rrc",))
    assert rrc.shape == plain.shape and np.abs(rrc - plain).mean() > 3
