"""Property tests (hypothesis) for issue 13: whatever a user or a damaged card hands the tools,
the answer is a result or one `error:` line with exit 2 — never a traceback — and no input file
changes.

Fuzzed: model.json, MegaDetector --detections files, checkpoint parts, file names (kerascls-edge,
in-process through its `main`), and the CSV / COCO inputs of `kerascls train --data` (through
`load_source`, which is what the command calls). Examples are limited so the module runs in
well under a minute; HYPOTHESIS_PROFILE=long runs 10× more.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis", reason="pip install -e '.[test]' adds hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.edge_cli import ERROR_LINE  # noqa: E402
from tests.shared_paths import coral_labels  # noqa: E402

CORAL = ROOT.parent / "shared" / "data" / "models" / "coral"
needs_coral = pytest.mark.skipif(not (CORAL / "mobilenet_v2_1.0_224_quant.tflite").is_file(),
                                 reason="the Coral model is in ../shared/data (absent here)")

settings.register_profile("kerascls", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=250, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kerascls"))

# JSON values of every kind, the raw material of wrong-typed fields.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)


def texture(path: Path, seed: int, size=(48, 36)) -> Path:
    """A photo-like rendered image (smooth blobs + grain)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    arr = np.asarray(img.resize(size, Image.Resampling.BICUBIC), np.int16)
    arr = arr + rng.integers(-10, 11, arr.shape)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the given files/folders (what must not change)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def edge(capsys, *args: str) -> int:
    """kerascls-edge predict in-process: returns the status after checking the one-line rule."""
    rc = main(["predict", *args, "--threads", "1", "--decode_threads", "0",
               "--progress_every", "-1"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    if rc == 2:
        assert len(errors) == 1 and ERROR_LINE.match(errors[0]), err
    else:
        assert rc in (0, 1) and not errors, err
    return rc


BASE_META = {"format": "kerascls-bundle", "format_version": 1, "architecture": "coral",
             "task": "multiclass",
             "input": {"height": 224, "width": 224, "channels": 3, "dtype": "uint8",
                       "value_range": [0, 255], "resize": "stretch", "interpolation": "bilinear"},
             "output": {"activation": "softmax"}, "thresholds": {"default": 0.5},
             "empty_classes": ["background"]}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A Coral bundle and a folder of three images, shared by the examples (read-only)."""
    if not (CORAL / "mobilenet_v2_1.0_224_quant.tflite").is_file():
        pytest.skip("the Coral model is in ../shared/data (absent here)")
    d = tmp_path_factory.mktemp("hostile")
    b = d / "bundle"
    b.mkdir()
    shutil.copy(CORAL / "mobilenet_v2_1.0_224_quant.tflite", b / "model.tflite")
    coral_labels(b / "labels.txt")
    (b / "model.json").write_text(json.dumps(BASE_META))
    (d / "imgs").mkdir()
    for i in range(3):
        texture(d / "imgs" / f"im{i}.jpg", i)
    return d


# -- model.json ----------------------------------------------------------------------------------

META_PATHS = [("empty_classes",), ("class_names",), ("task",), ("name",), ("thresholds",),
              ("thresholds", "default"), ("input",), ("input", "channels"),
              ("input", "height"), ("input", "width"), ("input", "dtype"),
              ("input", "value_range"), ("input", "resize"), ("input", "interpolation"),
              ("output",), ("output", "activation")]


@needs_coral
@given(changes=st.lists(st.tuples(st.sampled_from(META_PATHS), json_values), min_size=1,
                        max_size=3),
       top=st.booleans())
def test_model_json_any_values(work, capsys, changes, top):
    with tempfile.TemporaryDirectory() as t:
        b = Path(t) / "b"
        shutil.copytree(work / "bundle", b)
        meta = json.loads(json.dumps(BASE_META))
        for path, value in changes:
            node = meta
            for key in path[:-1]:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
            node[path[-1]] = value
        (b / "model.json").write_text(json.dumps(meta if top else [meta]))
        before = hashes(b, work / "imgs")
        rc = edge(capsys, str(b), str(work / "imgs"), "-o", str(Path(t) / "r.json"))
        assert hashes(b, work / "imgs") == before
        if rc == 0:
            assert len(json.loads((Path(t) / "r.json").read_text())["images"]) == 3


# -- MegaDetector detection files ------------------------------------------------------------

DET_KEYS = ["category", "conf", "bbox", "classifications"]
ENTRY_KEYS = ["file", "detections", "failure", "datetime"]


def _good_md() -> dict:
    return {"info": {"format_version": "1.4"},
            "detection_categories": {"1": "animal", "2": "person"},
            "images": [{"file": f"im{i}.jpg", "detections": [
                {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.5]},
                {"category": "2", "conf": 0.3, "bbox": [0.5, 0.5, 0.2, 0.2]}]}
                for i in range(3)]}


@needs_coral
@given(where=st.sampled_from(["det", "entry", "top", "raw"]), key=st.integers(0, 10),
       value=json_values, drop=st.booleans(), raw=st.binary(max_size=64))
def test_detection_files_any_values(work, capsys, where, key, value, drop, raw):
    md = _good_md()
    if where == "det":
        det = md["images"][key % 3]["detections"][0]
        name = DET_KEYS[key % len(DET_KEYS)]
        det.pop(name, None) if drop else det.__setitem__(name, value)
    elif where == "entry":
        entry = md["images"][key % 3]
        name = ENTRY_KEYS[key % len(ENTRY_KEYS)]
        entry.pop(name, None) if drop else entry.__setitem__(name, value)
    elif where == "top":
        md[["images", "detection_categories", "info"][key % 3]] = value
    with tempfile.TemporaryDirectory() as t:
        mdfile = Path(t) / "md.json"
        if where == "raw":
            mdfile.write_bytes(json.dumps(md).encode()[: key * 40] + raw)
        else:
            mdfile.write_text(json.dumps(md))
        before = hashes(mdfile, work / "imgs", work / "bundle")
        out = Path(t) / "out.json"
        rc = edge(capsys, str(work / "bundle"), str(work / "imgs"), "--detections", str(mdfile),
                  "-o", str(out))
        assert hashes(mdfile, work / "imgs", work / "bundle") == before
        assert (rc == 0) == out.exists()


# -- checkpoint parts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(work, tmp_path_factory) -> Path:
    """A finished run's kept checkpoint (one part per image) to damage in each example."""
    d = tmp_path_factory.mktemp("ckpt")
    out = d / "r.json"
    assert main(["predict", str(work / "bundle"), str(work / "imgs"), "-o", str(out),
                 "--threads", "1", "--checkpoint_every", "1", "--keep_checkpoint",
                 "--progress_every", "-1"]) == 0
    out.unlink()
    return d / "r.json.partial"


part_contents = st.one_of(
    st.binary(max_size=200),
    st.lists(json_values, max_size=3).map(lambda xs: "".join(json.dumps(x) + "\n" for x in xs)
                                          .encode()),
    st.builds(lambda f, v: (json.dumps({"file": f, "_k": v}) + "\n").encode(),
              st.sampled_from(["im0.jpg", "nope.jpg"]), json_values))


@needs_coral
@given(which=st.integers(0, 2), content=part_contents, cut=st.integers(0, 300))
def test_damaged_checkpoint_part_is_redone(work, checkpoint, capsys, which, content, cut):
    with tempfile.TemporaryDirectory() as t:
        partial = Path(t) / "r.json.partial"
        shutil.copytree(checkpoint, partial)
        part = sorted(partial.glob("part-*.jsonl"))[which]
        part.write_bytes(content if cut % 2 else part.read_bytes()[:cut] + content)
        rc = edge(capsys, str(work / "bundle"), str(work / "imgs"), "-o",
                  str(Path(t) / "r.json"), "--resume")
        assert rc == 0
        files = [im["file"] for im in json.loads((Path(t) / "r.json").read_text())["images"]]
        assert {"im0.jpg", "im1.jpg", "im2.jpg"} <= set(files)
        assert len(files) == len(set(files))


# -- file names ----------------------------------------------------------------------------------

name_bytes = st.binary(min_size=1, max_size=20).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@needs_coral
@given(names=st.lists(name_bytes, min_size=1, max_size=4, unique=True),
       fmt=st.sampled_from(["csv", "json"]))
def test_any_file_name_is_classified_and_written(work, capsys, names, fmt):
    with tempfile.TemporaryDirectory() as t:
        imgs = Path(t) / "imgs"
        imgs.mkdir()
        src = work / "imgs" / "im0.jpg"
        for n in names:
            shutil.copy(src, os.fsencode(imgs) + b"/" + n + b".jpg")
        out = Path(t) / f"r.{fmt}"
        before = hashes(imgs)
        assert edge(capsys, str(work / "bundle"), str(imgs), "-o", str(out),
                    "--keep_checkpoint") == 0
        assert edge(capsys, str(work / "bundle"), str(imgs), "-o", str(out), "--resume") == 0
        assert hashes(imgs) == before
        text = out.read_bytes().decode("utf-8")  # always valid UTF-8
        if fmt == "json":
            files = [im["file"] for im in json.loads(text)["images"]]
            assert sorted(os.fsencode(f) for f in files) == sorted(n + b".jpg" for n in names)
        else:
            assert len(text.strip().splitlines()) >= 1 + len(names)


# -- output paths --------------------------------------------------------------------------------

OUTPUT_KINDS = ["absent", "foreign", "input", "hardlink to input", "directory", "fifo",
                "symlink to input", "symlink to foreign", "dangling symlink", "image suffix"]


def _make_output(t: Path, kind: str, foreign: bytes, image: Path) -> Path:
    out = t / ("out.png" if kind == "image suffix" else "out.json")
    if kind == "foreign":
        out.write_bytes(foreign)
    elif kind == "input":
        return image
    elif kind == "hardlink to input":
        os.link(image, out)
    elif kind == "directory":
        out.mkdir()
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink to input":
        out.symlink_to(image)
    elif kind == "symlink to foreign":
        (t / "notes.txt").write_bytes(foreign)
        out.symlink_to(t / "notes.txt")
    elif kind == "dangling symlink":
        out.symlink_to(t / "nowhere")
    return out


@needs_coral
@given(kind=st.sampled_from(OUTPUT_KINDS), overwrite=st.booleans(),
       foreign=st.binary(max_size=64), fmt=st.sampled_from(["json", "csv"]))
def test_outputs_never_destroy_what_they_should_not(work, capsys, kind, overwrite, foreign,
                                                    fmt):
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        image = shutil.copy(work / "imgs" / "im0.jpg", t / "im0.jpg")
        out = _make_output(t, kind, foreign, Path(image))
        before = hashes(Path(image), work / "bundle")
        notes = hashes(t / "notes.txt") if (t / "notes.txt").exists() else {}
        args = [str(work / "bundle"), str(image), "-o", str(out), "--format",
                "csv" if fmt == "csv" else "megadetector"] + (["--overwrite"] if overwrite else [])
        rc = edge(capsys, *args)
        assert hashes(Path(image), work / "bundle") == before
        may_replace = kind == "absent" or (overwrite and kind in ("foreign",
                                                                   "symlink to foreign"))
        assert (rc == 0) == may_replace, (kind, overwrite, rc)
        if kind == "symlink to foreign":
            assert out.is_symlink() and (overwrite or hashes(t / "notes.txt") == notes)
        if kind == "foreign" and not overwrite:
            assert out.read_bytes() == foreign
        if kind in ("directory", "fifo"):
            assert not out.is_file()


# -- kerascls --data csv: / coco: ----------------------------------------------------------------

USER_ERRORS = (ValueError, FileNotFoundError)


def _load(spec: str):
    from kerascls.data.sources import load_source

    return load_source(spec)


@given(header=st.sampled_from(["filepath,label\n", "filepath,label,location\n", "label\n", ""]),
       body=st.binary(max_size=120))
def test_csv_source_any_bytes(header, body):
    with tempfile.TemporaryDirectory() as t:
        texture(Path(t) / "a.jpg", 0)
        f = Path(t) / "data.csv"
        f.write_bytes(header.encode() + b"a.jpg,cat\n" + body)
        before = hashes(Path(t))
        try:
            src = _load(f"csv:{f}")
            assert src.class_names
        except USER_ERRORS as e:
            msg = str(e)
            assert "\n" not in msg.strip() and (str(f) in msg or "csv:" in msg), msg
        assert hashes(Path(t)) == before


@given(key=st.sampled_from(["images", "annotations", "categories"]), index=st.integers(0, 1),
       field=st.sampled_from(["id", "file_name", "image_id", "category_id", "name", "bbox"]),
       value=json_values, cut=st.integers(0, 400), whole=st.booleans())
def test_coco_source_any_values(key, index, field, value, cut, whole):
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
            "categories": [{"id": 0, "name": "empty"}, {"id": 1, "name": "deer"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1},
                            {"id": 2, "image_id": 2, "category_id": 0, "bbox": [1, 2, 3, 4]}]}
    if whole:
        coco[key] = value
    else:
        coco[key][index][field] = value
    with tempfile.TemporaryDirectory() as t:
        texture(Path(t) / "a.jpg", 0)
        texture(Path(t) / "b.jpg", 1)
        f = Path(t) / "coco.json"
        text = json.dumps(coco)
        f.write_text(text[:cut] if cut < 50 else text)
        before = hashes(Path(t))
        try:
            _load(f"coco:{f}")
        except USER_ERRORS as e:
            msg = str(e)
            assert "\n" not in msg.strip() and (str(f) in msg or "coco:" in msg), msg
        assert hashes(Path(t)) == before


# -- the listed kerascls cases (issue 13, item 6) ------------------------------------------------


def test_csv_row_without_label_field_names_file_and_line(tmp_path):
    texture(tmp_path / "a.jpg", 0)
    f = tmp_path / "d.csv"
    f.write_text("filepath,label\na.jpg,cat\na.jpg\n")
    with pytest.raises(ValueError, match=r"d\.csv: line 3 has no label field"):
        _load(f"csv:{f}")


def test_latin1_csv_names_file_and_line(tmp_path):
    texture(tmp_path / "a.jpg", 0)
    f = tmp_path / "d.csv"
    f.write_bytes("filepath,label\na.jpg,cat\na.jpg,chevreuil \xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"d\.csv: line 3 is not UTF-8"):
        _load(f"csv:{f}")


@pytest.mark.parametrize("text, where", [
    ('{"images": [{"id": 1, "file_name": "a.jpg"},\n {"id": 2,, }]}', "line 2 column"),
    ('{"images": [{"id": 1}], "annotations": []}', "images[0] has no usable 'file_name'"),
    ('{"images": [], "annotations": [{"image_id": 1}]}', "annotations[0] has no usable"),
    ("[" * 100_000, "nested too deeply"),
])
def test_malformed_coco_names_file_and_place(tmp_path, text, where):
    f = tmp_path / "c.json"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        _load(f"coco:{f}")
    assert str(f) in str(e.value) and where in str(e.value)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> Path:
    """A good .keras, its first half, random bytes, and one naming a class nobody defines."""
    pytest.importorskip("keras")
    import zipfile

    import keras

    d = tmp_path_factory.mktemp("keras")
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    m.save(d / "good.keras")
    data = (d / "good.keras").read_bytes()
    (d / "half.keras").write_bytes(data[: len(data) // 2])
    (d / "random.keras").write_bytes(np.random.default_rng(0).bytes(4000))
    with zipfile.ZipFile(d / "good.keras") as zin, \
            zipfile.ZipFile(d / "unknown.keras", "w") as zout:
        for item in zin.infolist():
            blob = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(blob)
                cfg["config"]["layers"][-1].update(class_name="MysteryLayer", module="elsewhere")
                blob = json.dumps(cfg).encode()
            zout.writestr(item, blob)
    return d


@pytest.mark.parametrize("name, says", [("random", "not a .keras model"),
                                        ("half", "not a .keras model"),
                                        ("unknown", "'MysteryLayer'"),
                                        ("missing", "model not found")])
def test_unloadable_keras_files_say_why(keras_files, name, says):
    import kerascls

    with pytest.raises((ValueError, FileNotFoundError)) as e:
        kerascls.load_model(keras_files / f"{name}.keras")
    msg = str(e.value)
    assert says in msg and "File not found" not in msg and "\n" not in msg


def test_export_of_unknown_class_is_one_line(keras_files, cli, tmp_path):
    proc = cli("export", f"--model={keras_files / 'unknown.keras'}",
               f"--output_dir={tmp_path / 'b'}", check=False, timeout=240)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("kerascls: error:")]
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "MysteryLayer" in errors[0]
