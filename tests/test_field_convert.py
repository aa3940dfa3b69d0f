"""Issue 25, results into CSV (`convert --to csv`, `predict -o X.csv`) and the streaming reader
of MegaDetector files (kerascls_edge/mdstream.py).

Cases: 9 (a detector-only file: every image gets a row), 18 (malformed `classifications`: one
line naming file and entry, never a traceback), 20 (spreadsheet formula injection: text cells
starting with = + - @ tab CR are quoted, numbers are not), 16 (bounded memory on a large
results file); properties: the streaming reader equals json.load on varied files, and
`convert` on any damaged file keeps its input and never shows a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from tests.edge_cli import run_edge as run  # noqa: E402
from tests.memory import run_measured  # noqa: E402
from tests.pictures import photo  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, ENA24  # noqa: E402

MD_FILE = ENA24 / "md_annotations.json"
FORMULA = ("=", "+", "-", "@", "\t", "\r")
needs_md = pytest.mark.skipif(not MD_FILE.is_file(), reason="../shared/data absent")
needs_coral = pytest.mark.skipif(not CORAL_MODEL.is_file(), reason="../shared/data absent")




def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- case 9: a detector-only file ------------------------------------------------------------


def detector_only(tmp_path: Path) -> tuple[Path, dict]:
    """MegaDetector's real output for ENA24 frames, its classifications removed (as MD alone
    writes it), plus a blank frame, a frame with a person and a faint box, and a failure."""
    md = json.loads(MD_FILE.read_text())
    md.pop("classification_categories")
    md.pop("classification_category_descriptions", None)
    for im in md["images"]:
        for det in im["detections"]:
            det.pop("classifications", None)
    md["images"] += [
        {"file": "blank/0001.jpg", "detections": []},
        {"file": "people/0002.jpg", "detections": [
            {"category": "2", "conf": 0.95, "bbox": [0.1, 0.2, 0.3, 0.4]},
            {"category": "1", "conf": 0.1, "bbox": [0.5, 0.5, 0.1, 0.1]}]},
        {"file": "broken/0003.jpg", "failure": "Failure image access", "detections": None}]
    path = tmp_path / "md_only.json"
    path.write_text(json.dumps(md, indent=1))
    return path, md


@needs_md
def test_case9_detector_only_file_gives_every_image_a_row(tmp_path, capsys):
    path, md = detector_only(tmp_path)
    out = tmp_path / "out.csv"
    rc, stdout, _ = run(capsys, "convert", str(path), "--to", "csv", "-o", str(out))
    assert rc == 0 and json.loads(stdout)["images"] == len(md["images"])
    got = rows(out)
    assert [r["file"] for r in got if r["file"] != "people/0002.jpg"] == \
        [im["file"] for im in md["images"] if im["file"] != "people/0002.jpg"]
    by_file = {r["file"]: r for r in got}
    for im in md["images"][:21]:  # the real frames: one animal box each, conf 0.87-0.93
        r = by_file[im["file"]]
        assert (r["label"], r["detection"]) == ("animal", "0")
        assert float(r["confidence"]) == pytest.approx(im["detections"][0]["conf"], abs=5e-5)
        assert [float(v) for v in r["bbox"].split()] == \
            pytest.approx(im["detections"][0]["bbox"], abs=5e-5)
    blank = by_file["blank/0001.jpg"]
    assert blank["label"] == blank["confidence"] == blank["detection"] == blank["failure"] == ""
    people = [r for r in got if r["file"] == "people/0002.jpg"]
    assert [(r["label"], r["confidence"]) for r in people] == [("person", "0.9500")]  # 0.1 <0.8
    assert by_file["broken/0003.jpg"]["failure"] == "Failure image access"
    # a lower threshold: the faint box becomes a row too
    rc, _, _ = run(capsys, "convert", str(path), "--to", "csv", "-o", str(out),
                   "--detection_threshold", "0.05")
    assert [r["label"] for r in rows(out) if r["file"] == "people/0002.jpg"] == \
        ["person", "animal"]


@needs_md
def test_case9_classified_md_file_keeps_its_rows(tmp_path, capsys):
    """MegaDetector + its classifier (the real file): one row per classified box with the
    classifier's top label, as before."""
    out = tmp_path / "out.csv"
    rc, _, _ = run(capsys, "convert", str(MD_FILE), "--to", "csv", "-o", str(out))
    md = json.loads(MD_FILE.read_text())
    cats = md["classification_categories"]
    assert rc == 0
    got = rows(out)
    assert len(got) == len(md["images"])
    for r, im in zip(got, md["images"], strict=True):
        top = im["detections"][0]["classifications"][0]
        assert (r["file"], r["label"]) == (im["file"], cats[top[0]])
        assert float(r["confidence"]) == pytest.approx(top[1], abs=5e-5)


# -- case 18: malformed classifications ---------------------------------------------------------

BAD_RANKINGS = {
    "unknown id": [["99", 0.9]],
    "string confidence": [["0", "high"]],
    "dict": {"0": 0.9},
    "dict entry": [{"id": "0", "conf": 0.9}],
    "three items": [["0", 0.9, 1]],
    "null id": [[None, 0.5]],
    "infinite": [["0", float("inf")]],
}


def malformed(tmp_path: Path, ranking: object) -> Path:
    md = {"info": {"format_version": "1.4", "detector": "md_v5a"},
          "detection_categories": {"1": "animal"},
          "classification_categories": {"0": "deer", "1": "fox"},
          "images": [{"file": f"cam/IMG_{i:04d}.JPG", "detections": [
              {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.5],
               "classifications": [["0", 0.8], ["1", 0.2]]}]} for i in range(3)]}
    md["images"][1]["detections"][0]["classifications"] = ranking
    path = tmp_path / "md.json"
    path.write_text(json.dumps(md))  # inf is written as Infinity, which json.load reads
    return path


@pytest.mark.parametrize("kind", sorted(BAD_RANKINGS))
@pytest.mark.parametrize("command", ["convert", "report"])
def test_case18_malformed_classifications_are_one_line_naming_file_and_entry(
        tmp_path, capsys, kind, command):
    path = malformed(tmp_path, BAD_RANKINGS[kind])
    before = sha(path)
    if command == "convert":
        out = tmp_path / "out.csv"
        rc, _, err = run(capsys, "convert", str(path), "--to", "csv", "-o", str(out))
    else:
        out = tmp_path / "page.html"
        rc, _, err = run(capsys, "report", str(path), "-o", str(out))
    assert rc == 2
    assert str(path) in err and "images[1]" in err and "cam/IMG_0001.JPG" in err, err
    assert not out.exists() and sha(path) == before


@pytest.mark.parametrize("kind", ["unknown id", "string confidence"])
def test_case18_camtrapdp_conversion_refuses_in_one_line(tmp_path, capsys, kind):
    path = malformed(tmp_path, BAD_RANKINGS[kind])
    for i in range(3):
        photo(tmp_path / "cam" / f"IMG_{i:04d}.JPG", i)
    rc, _, err = run(capsys, "convert", str(path), "--to", "camtrapdp", "-o",
                     str(tmp_path / "pkg"), "--location", "51.0,3.7")
    assert rc == 2 and "images[1]" in err and "cam/IMG_0001.JPG" in err, err


# -- case 20: spreadsheet formula injection ------------------------------------------------------

HOSTILE = ["=HYPERLINK(\"x\",\"y\")", "+cmd|' -C calc'!A0", "-2+3", "@SUM(A1)",
           "\tTAB", "\rCR", "'quoted"]


def assert_safe_cells(path: Path) -> list[dict]:
    """No text cell starts like a formula; number cells are plain numbers."""
    got = rows(path)
    for r in got:
        for k, v in r.items():
            if k in ("confidence", "sequence_confidence") and v:
                assert re.fullmatch(r"\d\.\d{4}", v), (k, v)
            elif v and k != "bbox":
                assert v[0] not in FORMULA, (k, v)
    return got


def test_case20_convert_csv_quotes_formula_cells(tmp_path, capsys):
    cats = {str(i): name for i, name in enumerate(HOSTILE)}
    md = {"info": {"format_version": "1.4", "detector": "md_v5a"},
          "detection_categories": {"1": "animal"}, "classification_categories": cats,
          "images": [{"file": f"{name}.jpg", "warnings": ["=warn"], "detections": [
              {"category": "1", "conf": 0.9, "bbox": [-0.01, 0.1, 0.5, 0.5],
               "classifications": [[str(i), 0.75], [str((i + 1) % 7), 0.25]]}]}
              for i, name in enumerate(HOSTILE)]}
    path = tmp_path / "md.json"
    path.write_text(json.dumps(md))
    out = tmp_path / "out.csv"
    rc, _, _ = run(capsys, "convert", str(path), "--to", "csv", "-o", str(out))
    assert rc == 0
    got = assert_safe_cells(out)
    assert [r["file"] for r in got] == [f"'{n}.jpg" for n in HOSTILE]  # OWASP: one quote
    assert [r["label"] for r in got] == [f"'{n}" for n in HOSTILE]
    assert {r["confidence"] for r in got} == {"0.7500"}
    assert {r["bbox"] for r in got} == {"-0.0100 0.1000 0.5000 0.5000"}  # a number: kept
    assert {r["warnings"] for r in got} == {"'=warn"}


def test_case20_quoted_cells_read_back_exactly(tmp_path):
    """Our readers of our CSVs (sorting, the review page) undo the quote: a file named
    `=x.jpg` or `'y.jpg` is found again under its real name."""
    from kerascls_edge.spreadsheet import from_spreadsheet_cell, spreadsheet_cell

    for text in [*HOSTILE, "''", "'", "plain", "-0.5", "+1e5", "", "=", "-", "ok'"]:
        cell = spreadsheet_cell(text)
        assert from_spreadsheet_cell(cell) == text
        assert not cell or cell[0] not in FORMULA or re.fullmatch(r"[+-][\d.e]+", cell)


@needs_coral
def test_case20_predict_csv_and_sort_manifest_are_safe(tmp_path, capsys):
    """predict -o X.csv with hostile file names and labels, then --sort_into from that CSV:
    every cell safe, and the sort reads the names back exactly."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "m.tflite").symlink_to(CORAL_MODEL)
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    labels[518] = "crane (machine)"  # the shared file names two classes "crane"
    (bundle / "labels.txt").write_text("".join(f"{FORMULA[i % 4]}{n}\n"
                                               for i, n in enumerate(labels)))
    card = tmp_path / "card"
    card.mkdir()
    for name in HOSTILE:
        shutil.copy(CORAL / "cat.bmp", card / f"{name}.bmp")
    out, target = tmp_path / "r.csv", tmp_path / "sorted"
    rc, _, err = run(capsys, "predict", str(bundle / "m.tflite"), str(card), "-o", str(out),
                     "--threads", "1", "--progress_every", "-1", "--sort_into", str(target),
                     "--sort_threshold", "0")
    assert rc == 0, err
    got = assert_safe_cells(out)
    assert sorted(r["file"] for r in got) == sorted(f"'{n}.bmp" for n in HOSTILE)
    sorted_names = {p.name for p in target.rglob("*.bmp")}
    assert sorted_names == {f"{n}.bmp" for n in HOSTILE}  # the real names, found on disk
    for r in rows(target / "manifest.csv"):
        for k in ("source", "sorted", "folder"):
            assert r[k][0] not in FORMULA, (k, r[k])


# -- case 16: bounded memory ------------------------------------------------------------------

CONVERT_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from kerascls_edge.cli import main
sys.exit(main(sys.argv[2:]))
"""


def big_results(path: Path, n: int) -> None:
    """A whole-image results file of n entries like ours (three-class rankings, blanks every
    tenth frame), written as a stream."""
    cats = {str(i): f"species_{i}" for i in range(20)}
    head = {"info": {"format_version": "1.6", "detector": "none (kerascls-edge whole-image "
                     "classifier)"}, "detection_categories": {"1": "animal"},
            "classification_categories": cats}
    with open(path, "w") as f:
        f.write(json.dumps(head)[:-1] + ', "images": [\n')
        for start in range(0, n, 10000):
            chunk = []
            for i in range(start, min(n, start + 10000)):
                a = i % 20
                dets = [] if i % 10 == 0 else [{
                    "category": "1", "conf": 0.93, "bbox": [0.0, 0.0, 1.0, 1.0],
                    "classifications": [[str(a), 0.93], [str((a + 7) % 20), 0.05]]}]
                chunk.append(json.dumps({"file": f"cam{i % 50:02d}/IMG_{i:07d}.JPG",
                                         "detections": dets,
                                         "datetime": "2024:05:01 12:00:00"}))
            f.write((",\n" if start else "") + ",\n".join(chunk))
        f.write("\n]}\n")


def convert_peak(tmp_path: Path, n: int) -> tuple[float, Path]:
    results, out = tmp_path / f"r{n}.json", tmp_path / f"r{n}.csv"
    big_results(results, n)
    proc, peak = run_measured([sys.executable, "-c", CONVERT_SCRIPT, str(ROOT / "export"),
                               "convert", str(results), "--to", "csv", "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    return peak, out


def count_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_case16_convert_memory_does_not_grow_with_the_file(tmp_path):
    """100x more images (a 20 MB file; json.load of it alone takes >100 MB) raise the peak by
    far less than the file's size: the file is streamed."""
    small, _ = convert_peak(tmp_path, 1000)
    large, out = convert_peak(tmp_path, 100_000)
    assert count_rows(out) == 100_000
    size_mb = (tmp_path / "r100000.json").stat().st_size / 2**20
    assert size_mb > 15
    assert large - small < size_mb / 2, (small, large, size_mb)


@pytest.mark.slow
def test_case16_convert_of_a_million_images_within_300_mb(tmp_path):
    peak, out = convert_peak(tmp_path, 1_000_000)
    assert count_rows(out) == 1_000_000
    assert peak <= 300, peak
    print(f"convert --to csv of 1,000,000 images: peak {peak:.0f} MB")


# -- properties ------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROFILE = dict(max_examples=40, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.function_scoped_fixture])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)


@settings(**PROFILE)
@given(header=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "images"), values,
                              max_size=4),
       images=st.lists(values, max_size=8), where=st.integers(0, 4),
       indent=st.sampled_from([None, 0, 1, 4]), ascii_=st.booleans(),
       seps=st.sampled_from([None, (",", ":"), (" ,  ", " :\n")]), chunk=st.integers(1, 64),
       bom=st.booleans(), cut=st.integers(0, 10**6))
def test_property_stream_reader_equals_json_load(header, images, where, indent, ascii_, seps,
                                                 chunk, bom, cut, monkeypatch):
    """Any header values, any entries (any JSON kinds), `images` anywhere among the keys, any
    formatting and a window as small as one byte: the same values json.load gives; a file cut
    short is refused exactly when json.load refuses it."""
    from kerascls_edge import mdstream
    from kerascls_edge.bundle import EdgeError

    keys = list(header)
    keys.insert(where % (len(keys) + 1), "images")
    doc = {k: images if k == "images" else header[k] for k in keys}
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_, separators=seps)
    data = ("\ufeff" if bom else "").encode() + text.encode()
    monkeypatch.setattr(mdstream, "_CHUNK", chunk)
    with tempfile.TemporaryDirectory() as t:
        path = Path(t) / "r.json"
        path.write_bytes(data)
        assert mdstream.read_header(path) == header
        assert list(mdstream.iter_images(path)) == images
        short = data[: cut % (len(data) + 1)]
        path.write_bytes(short)
        try:
            want = json.loads(short.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            want = None
        try:
            got = (mdstream.read_header(path), list(mdstream.iter_images(path)))
        except EdgeError:
            got = None
        if want is None or not isinstance(want, dict) or not isinstance(want.get("images"),
                                                                         list):
            assert got is None
        else:
            assert got == ({k: v for k, v in want.items() if k != "images"}, want["images"])


def good_md() -> dict:
    return {"info": {"format_version": "1.4", "detector": "md_v5a"},
            "detection_categories": {"1": "animal", "2": "person"},
            "classification_categories": {"0": "deer", "1": "=fox"},
            "images": [{"file": f"im{i}.jpg", "detections": [
                {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.5],
                 "classifications": [["0", 0.7], ["1", 0.3]]},
                {"category": "2", "conf": 0.3, "bbox": [0.5, 0.5, 0.2, 0.2]}]}
                for i in range(3)]}


PLACES = ["det", "ranking", "entry", "top", "raw"]


def damaged_md(where: str, key: int, value: object, drop: bool) -> dict:
    """good_md with one field at `where` (picked by `key`) replaced by `value`, or dropped."""
    md = good_md()
    entry = md["images"][key % 3]
    target, names = {
        "det": (entry["detections"][0], ["category", "conf", "bbox", "classifications"]),
        "ranking": (entry["detections"][0]["classifications"], [0, 1]),
        "entry": (entry, ["file", "detections", "failure", "datetime", "warnings"]),
        "top": (md, ["images", "detection_categories", "classification_categories", "info"]),
        "raw": ({}, ["x"]),
    }[where]
    name = names[key % len(names)]
    if drop and isinstance(target, dict):
        target.pop(name, None)
    else:
        target[name] = value
    return md


@settings(**PROFILE)
@given(where=st.sampled_from(PLACES), key=st.integers(0, 10), value=values, drop=st.booleans(),
       raw=st.binary(max_size=64))
def test_property_convert_any_damage_keeps_input_and_never_tracebacks(capsys, where, key,
                                                                      value, drop, raw):
    """Any field of a results file replaced by any JSON value (or dropped), or the file cut
    and followed by any bytes: convert --to csv exits 0 with a row for every image, or 2 with
    one error line; the input is never changed and no partial output is left."""
    md = damaged_md(where, key, value, drop)
    with tempfile.TemporaryDirectory() as t:
        path, out = Path(t) / "md.json", Path(t) / "out.csv"
        text = json.dumps(md).encode()
        path.write_bytes(text[: key * 40] + raw if where == "raw" else text)
        before = sha(path)
        rc, _, _ = run(capsys, "convert", str(path), "--to", "csv", "-o", str(out))
        assert sha(path) == before
        assert sorted(p.name for p in Path(t).iterdir()) == \
            (["md.json", "out.csv"] if rc == 0 else ["md.json"])
        if rc == 0:
            with open(out, newline="", encoding="utf-8") as f:
                files = {r["file"] for r in csv.DictReader(f)}
            images = json.loads(path.read_bytes())["images"]
            assert len(files) == len({im["file"] for im in images})
        else:
            assert rc == 2


@settings(**{**PROFILE, "max_examples": 25})
@given(where=st.sampled_from(PLACES), key=st.integers(0, 10), value=values, drop=st.booleans(),
       raw=st.binary(max_size=64))
def test_property_report_any_damage_keeps_input_and_never_tracebacks(capsys, where, key,
                                                                     value, drop, raw):
    """The same damage for `report`: exit 0 with the page, or 2 with one error line and
    nothing written beside the input; the results file is never changed."""
    md = damaged_md(where, key, value, drop)
    with tempfile.TemporaryDirectory() as t:
        path, page = Path(t) / "md.json", Path(t) / "review.html"
        text = json.dumps(md).encode()
        path.write_bytes(text[: key * 40] + raw if where == "raw" else text)
        before = sha(path)
        rc, _, _ = run(capsys, "report", str(path), "-o", str(page))
        assert sha(path) == before
        if rc == 0:
            assert page.is_file() and page.stat().st_size > 0
        else:
            assert rc == 2 and sorted(p.name for p in Path(t).iterdir()) == ["md.json"]


def test_stream_reader_refuses_one_giant_entry_in_one_line(tmp_path, capsys):
    """An entry larger than MAX_VALUE_CHARS (a damaged or hostile file: one 17 MB string) is
    refused in one line instead of growing the window without bound."""
    from kerascls_edge.mdstream import MAX_VALUE_CHARS

    path = tmp_path / "md.json"
    with open(path, "w") as f:
        f.write('{"images": [{"file": "a.jpg", "detections": [], "datetime": "')
        f.write("x" * (MAX_VALUE_CHARS + (1 << 20)))
        f.write('"}]}')
    rc, _, err = run(capsys, "convert", str(path), "--to", "csv", "-o", str(tmp_path / "o.csv"))
    assert rc == 2 and "larger than" in err
