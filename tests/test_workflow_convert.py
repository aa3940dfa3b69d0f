"""Issue 26: what users rely on in `convert`, the review page (`report`), the streaming reader
of MegaDetector files (mdstream) and spreadsheet-safe CSV cells.

Every expected value is worked by hand from the input written in the test, or read back with
an independent tool (Python's json and csv modules, Pillow, hashlib, a real browser), never
computed with the function under test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge import mdstream, report  # noqa: E402
from kerascls_edge.bundle import EdgeError  # noqa: E402
from kerascls_edge.spreadsheet import (  # noqa: E402
    from_spreadsheet_cell,
    read_spreadsheet_csv,
    spreadsheet_cell,
    spreadsheet_row,
)
from tests.browser import browser, needs_chromium  # noqa: E402
from tests.edge_cli import run_edge as cli  # noqa: E402
from tests.pictures import render as render_picture  # noqa: E402
from tests.pictures import texture  # noqa: E402

WHOLE = "none (kerascls-edge whole-image classifier)"




def write_md(path: Path, images: list, info: dict | None = None,
             det: dict | None = None, cls: dict | None = None, text: str | None = None) -> Path:
    md = {"info": {"format_version": "1.4", **(info or {})},
          "detection_categories": {"1": "animal", "2": "person"} if det is None else det,
          "classification_categories": {"0": "deer", "1": "fox", "2": "boar"}
          if cls is None else cls, "images": images}
    path.write_text(text if text is not None else json.dumps(md), encoding="utf-8")
    return path


def csv_dicts(path: Path) -> list[dict]:
    """The CSV read with Python's csv module (never the runtime's reader)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def box(cat: str, conf: float, bbox: list, ranking: list | None = None) -> dict:
    d = {"category": cat, "conf": conf, "bbox": bbox}
    if ranking is not None:
        d["classifications"] = ranking
    return d


# == spreadsheet: cells a spreadsheet shows as text ============================================


@pytest.mark.parametrize("first", ["=", "+", "-", "@", "\t", "\r", "'"])
def test_spreadsheet_text_starting_like_a_formula_gets_one_quote(first):
    text = f"{first}SUM(A1:A9)"
    assert spreadsheet_cell(text) == "'" + text
    assert from_spreadsheet_cell("'" + text) == text


@pytest.mark.parametrize("number", ["-0.25", "+1e5", "-.5", "-3.", "+7", "-2E-3", "'"[:0]])
def test_spreadsheet_plain_numbers_and_empty_cells_are_left_alone(number):
    assert spreadsheet_cell(number) == number
    assert from_spreadsheet_cell(number) == number


@pytest.mark.parametrize("text", ["-1e", "-1.2.3", "+ 1", "-e5", "--1", "-1,5", "'5", "=1"])
def test_spreadsheet_almost_numbers_are_quoted(text):
    assert spreadsheet_cell(text) == "'" + text


@pytest.mark.parametrize("value", [None, 0.5, -3, True])
def test_spreadsheet_non_text_values_pass_through(value):
    assert spreadsheet_cell(value) is value


@pytest.mark.parametrize("cell", ["'", "'x", "'a=b", "plain", "a'", ""])
def test_spreadsheet_reader_keeps_quotes_it_did_not_add(cell):
    """A hand-edited CSV may hold a lone quote or a quoted word: read back as written."""
    assert from_spreadsheet_cell(cell) == cell


def test_spreadsheet_row_leaves_number_fields_alone():
    """Cells holding numbers we formatted stay as written even when they start with '-'
    (a box at x = -0.01); text cells beside them are quoted."""
    numbers = ["confidence", "detection", "bbox", "sequence_confidence", "size", "mtime_ns",
               "device", "inode", "frames_used", "frame_number", "frame_time"]
    row = {k: "-0.0100 0.2000" for k in numbers}
    row.update(label="-fox", file="=cmd.jpg", top_k="@x:0.5000", n=3)
    out = spreadsheet_row(row)
    assert {k: out[k] for k in numbers} == {k: "-0.0100 0.2000" for k in numbers}
    assert (out["label"], out["file"], out["top_k"], out["n"]) == \
        ("'-fox", "'=cmd.jpg", "'@x:0.5000", 3)


def test_spreadsheet_csv_round_trip_through_the_csv_module(tmp_path):
    """Written with csv.writer (quoted cells), read back with read_spreadsheet_csv: the text
    the cells stand for; a short row's missing cells stay None (csv's restval)."""
    texts = ["=HYPERLINK(\"x\")", "'quoted", "-2+3", "\tTAB", "plain", "'", "-0.5"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "label"])
    for t in texts:
        w.writerow([spreadsheet_cell(t), spreadsheet_cell(t[::-1])])
    w.writerow(["short.jpg"])
    buf.seek(0)
    got = list(read_spreadsheet_csv(buf))
    assert [(r["file"], r["label"]) for r in got[:-1]] == [(t, t[::-1]) for t in texts]
    assert got[-1] == {"file": "short.jpg", "label": None}


# == convert --to csv: rows and values =========================================================

COLS = ("file", "label", "confidence", "top_k", "detection", "bbox", "datetime", "sequence_id",
        "sequence_label", "sequence_confidence", "failure", "warnings")


def pick(rows: list[dict]) -> list[tuple]:
    return [tuple(r[c] for c in COLS) for r in rows]


def row(file: str, label="", conf="", top_k="", det="", bbox="", dt="", seq=("", "", ""),
        failure="", warnings="") -> tuple:
    return (file, label, conf, top_k, det, bbox, dt, *seq, failure, warnings)


def detector_file(tmp_path: Path, threshold: float | None = 0.25) -> Path:
    """A detector's file (MegaDetector + a classifier) whose every row is worked by hand."""
    info = {"detector": "MDV5A"}
    if threshold is not None:
        info["detector_metadata"] = {"typical_detection_threshold": threshold}
    images = [
        {"file": "site/cam/a.jpg", "datetime": "2024:05:01 06:30:00", "detections": [
            box("1", 0.25, [0.1, 0.2, 0.3, 0.4]),  # exactly the threshold: a row
            box("2", 0.2499, [0.5, 0.5, 0.1, 0.1]),  # below it: none
            box("1", 0.05, [0.0, 0.6, 0.4, 0.4], [["1", 0.876543], ["0", 0.123457]]),
            box("2", 0.9, [0.7, 0.05, 0.2, 0.25])]},
        {"file": "site/cam/b.jpg", "detections": [box("2", 0.1, [0.2, 0.2, 0.2, 0.2])],
         "warnings": ["exif clock", "odd size"], "sequence": {"id": "s3"}},
        {"file": "site/cam/c.jpg", "failure": "Failure image access", "detections": None},
        {"file": "site/cam/d.jpg", "detections": [],
         "sequence": {"id": 7, "classifications": [["2", 0.666666], ["0", 0.3]]}},
        {"file": "site/cam/e.jpg", "failure": "truncated", "detections": None,
         "sequence": {"id": "s9", "classifications": [["0", 0.5]]}},
        {"file": "site/cam/f.jpg", "detections": [box("1", 0.3, [0.1, 0.1, 0.1, 0.1])],
         "sequence": {"classifications": [["1", 0.4]]}},
    ]
    return write_md(tmp_path / "md.json", images, info)


def test_convert_csv_detector_file_rows_worked_by_hand(tmp_path, capsys):
    """The file's own typical threshold (0.25) keeps a box at exactly 0.25 and drops 0.2499;
    a classified box is a row whatever its detector confidence; `detection` is the box's
    index in the entry; a failure is one row; sequences add their label and confidence."""
    path, out = detector_file(tmp_path), tmp_path / "out.csv"
    rc, stdout, _ = cli(capsys, "convert", path, "--to", "csv", "-o", out)
    assert rc == 0 and json.loads(stdout) == {"images": 6, "output": str(out)}
    assert pick(csv_dicts(out)) == [
        row("site/cam/a.jpg", "animal", "0.2500", det="0", bbox="0.1000 0.2000 0.3000 0.4000",
            dt="2024:05:01 06:30:00"),
        row("site/cam/a.jpg", "fox", "0.8765", "fox:0.8765;deer:0.1235", "2",
            "0.0000 0.6000 0.4000 0.4000", dt="2024:05:01 06:30:00"),
        row("site/cam/a.jpg", "person", "0.9000", det="3", bbox="0.7000 0.0500 0.2000 0.2500",
            dt="2024:05:01 06:30:00"),
        row("site/cam/b.jpg", warnings="exif clock;odd size"),
        row("site/cam/c.jpg", failure="Failure image access"),
        row("site/cam/d.jpg", seq=("7", "boar", "0.6667")),
        row("site/cam/e.jpg", seq=("s9", "deer", "0.5000"), failure="truncated"),
        row("site/cam/f.jpg", "animal", "0.3000", det="0", bbox="0.1000 0.1000 0.1000 0.1000",
            seq=("", "fox", "0.4000")),
    ]


def test_convert_csv_threshold_flag_wins_over_the_file(tmp_path, capsys):
    path, out = detector_file(tmp_path), tmp_path / "out.csv"
    assert cli(capsys, "convert", path, "--to", "csv", "-o", out,
               "--detection_threshold", "0.1")[0] == 0
    got = [(r["file"], r["detection"], r["label"]) for r in csv_dicts(out)]
    assert got[:5] == [("site/cam/a.jpg", "0", "animal"), ("site/cam/a.jpg", "1", "person"),
                       ("site/cam/a.jpg", "2", "fox"), ("site/cam/a.jpg", "3", "person"),
                       ("site/cam/b.jpg", "0", "person")]  # 0.1 == the flag: kept
    assert cli(capsys, "convert", path, "--to", "csv", "-o", out, "--overwrite",
               "--detection_threshold", "0.95")[0] == 0
    assert [(r["file"], r["label"]) for r in csv_dicts(out)][:2] == [
        ("site/cam/a.jpg", "fox"), ("site/cam/b.jpg", "")]


@pytest.mark.parametrize("meta", [None, {"typical_detection_threshold": "0.5"},
                                  {"typical_detection_threshold": True}, "0.5"])
def test_convert_csv_default_threshold_is_0_2(tmp_path, capsys, meta):
    """No usable typical threshold in the file (absent, a string, a boolean): 0.2."""
    info = {"detector": "MDV5A"} if meta is None else {"detector": "MDV5A",
                                                       "detector_metadata": meta}
    path = write_md(tmp_path / "md.json", [{"file": "x.jpg", "detections": [
        box("1", 0.2, [0.1, 0.1, 0.2, 0.2]), box("1", 0.1999, [0.3, 0.3, 0.2, 0.2])]}], info)
    out = tmp_path / "o.csv"
    assert cli(capsys, "convert", path, "--to", "csv", "-o", out)[0] == 0
    assert [(r["detection"], r["confidence"]) for r in csv_dicts(out)] == [("0", "0.2000")]


def test_convert_csv_whole_image_file_one_row_per_image(tmp_path, capsys):
    """A whole-image classifier's file (detector "none ..."): the first entry's ranking is the
    row (no box, no detection index, no threshold); no entry or no ranking: a blank row."""
    images = [
        {"file": "a.jpg", "detections": [box("1", 0.05, [0, 0, 1, 1],
                                             [["2", 0.7], ["0", 0.2], ["1", 0.1]]),
                                         box("1", 0.99, [0, 0, 1, 1], [["1", 0.99]])]},
        {"file": "b.jpg", "detections": []},
        {"file": "c.jpg", "detections": [box("1", 0.9, [0, 0, 1, 1])]},
        {"file": "d.jpg", "failure": "unreadable", "detections": None},
    ]
    path = write_md(tmp_path / "md.json", images, {"detector": WHOLE})
    out = tmp_path / "o.csv"
    rc, stdout, _ = cli(capsys, "convert", path, "--to", "csv", "-o", out)
    assert rc == 0 and json.loads(stdout)["images"] == 4
    assert pick(csv_dicts(out)) == [
        row("a.jpg", "boar", "0.7000", "boar:0.7000;deer:0.2000;fox:0.1000"),
        row("b.jpg"), row("c.jpg"), row("d.jpg", failure="unreadable")]


def test_convert_csv_unnamed_category_is_its_id(tmp_path, capsys):
    """A file without detection_categories: an unclassified box's label is its category id."""
    path = write_md(tmp_path / "md.json", [{"file": "x.jpg", "detections": [
        box("7", 0.5, [0.1, 0.1, 0.2, 0.2])]}], {"detector": "MDV5A"}, det={})
    out = tmp_path / "o.csv"
    assert cli(capsys, "convert", path, "--to", "csv", "-o", out)[0] == 0
    assert [(r["label"], r["confidence"]) for r in csv_dicts(out)] == [("7", "0.5000")]


def test_convert_csv_refuses_to_write_over_its_input(tmp_path, capsys):
    path = detector_file(tmp_path)
    before = path.read_bytes()
    rc, _, err = cli(capsys, "convert", path, "--to", "csv", "-o", path, "--overwrite")
    assert rc == 2 and path.read_bytes() == before


# == mdstream: the streaming reader ============================================================


def md_text(n: int = 5) -> str:
    md = {"info": {"detector": "MDV5A"}, "detection_categories": {"1": "animal"},
          "images": [{"file": f"cam/IMG_{i:03d}.JPG", "detections": [
              box("1", 0.5 + i / 100, [0.1, 0.2, 0.3, 0.4])]} for i in range(n)]}
    return json.dumps(md, indent=1)


def json_error_at(text: str) -> int:
    """Where Python's own json module says the text goes wrong."""
    with pytest.raises(json.JSONDecodeError) as e:
        json.loads(text)
    return e.value.pos


def stream_error(path: Path) -> str:
    with pytest.raises(EdgeError) as e:
        mdstream.read_header(path)
        list(mdstream.iter_images(path))
    return str(e.value)


def damaged(text: str) -> dict[str, str]:
    """Structural damage far into the file (past several small windows)."""
    third = text.index('"file": "cam/IMG_003.JPG"')
    close = text.rindex("}", 0, third)  # the end of entry 2
    return {
        "comma dropped between entries": text[:close + 1] + " " + text[close + 2:],
        "cut short": text[:close + 1],
        "extra data after the object": text + '\n{"images": []}',
        "colon dropped": text.replace('"detection_categories":', '"detection_categories" ', 1),
        "semicolon between entries": text[:close + 1] + ";" + text[close + 2:],
    }


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
@pytest.mark.parametrize("kind", ["comma dropped between entries", "cut short",
                                  "extra data after the object", "colon dropped",
                                  "semicolon between entries"])
def test_stream_error_names_the_character_json_names(tmp_path, monkeypatch, chunk, kind):
    """A damaged file is one error whose position is where Python's json module finds the
    damage, however small the reading window (the offset is kept across windows); leading
    blank lines and a BOM do not shift it."""
    monkeypatch.setattr(mdstream, "_CHUNK", chunk)
    text = "\n  \n" + damaged(md_text())[kind]
    path = tmp_path / "r.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    msg = stream_error(path)
    assert msg.startswith(f"cannot read results {path}: ")
    assert msg.endswith(f"(at character {json_error_at(text)})"), msg


def test_stream_error_inside_an_entry_names_the_entry_start(tmp_path, monkeypatch):
    monkeypatch.setattr(mdstream, "_CHUNK", 5)
    text = md_text().replace('"conf": 0.52', '"conf": 0.52.1')
    path = tmp_path / "r.json"
    path.write_text(text)
    start = text.rindex("{", 0, text.index("0.52.1"))
    start = text.rindex("{", 0, start)  # the entry, not its detection
    assert stream_error(path).endswith(f"not valid JSON (Expecting ',' delimiter) "
                                       f"(at character {start})")


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
@pytest.mark.parametrize("layout", ["images first", "images last", "blank padding"])
def test_stream_reader_sees_every_entry_once(tmp_path, monkeypatch, chunk, layout):
    """Each entry once, in order, equal to json.load's; the header without `images`."""
    monkeypatch.setattr(mdstream, "_CHUNK", chunk)
    md = json.loads(md_text(12))
    md["images"][3]["file"] = "ünïcode/𝔣ile 12345.jpg"
    md["images"][4]["detections"][0]["conf"] = 12345
    if layout == "images first":
        md = {"images": md.pop("images"), **md}
    text = json.dumps(md, ensure_ascii=False)
    if layout == "blank padding":
        text = "\r\n\t " + text.replace(", ", " ,\n\n ") + " \n\n"
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    want = json.loads(text)
    assert mdstream.read_header(path) == {k: v for k, v in want.items() if k != "images"}
    assert list(mdstream.iter_images(path)) == want["images"]
    res = mdstream.Results(path)
    assert [e["file"] for e in res.images()] == [e["file"] for e in want["images"]]
    assert mdstream.load_results(path) == want


@pytest.mark.parametrize("text, kind", [
    ("[]", "a list"), ('"x"', "a string"), ("true", "a boolean"), ("false", "a boolean"),
    ("null", "null"), ("12", "a number"), ("  ", "nothing"), ("-1", "a number")])
def test_stream_top_level_not_an_object(tmp_path, text, kind):
    path = tmp_path / "r.json"
    path.write_text(text)
    assert stream_error(path) == (f"cannot read results {path}: top level: expected an "
                                  f"object, got {kind}")


@pytest.mark.parametrize("value, kind", [
    ("null", "null"), ("5", "a number"), ("{}", "an object"), ('"a"', "a string"),
    ("true", "a boolean"), ("-2", "a number")])
def test_stream_images_not_a_list(tmp_path, value, kind):
    path = tmp_path / "r.json"
    path.write_text('{"info": {}, "images": ' + value + ', "x": 1}')
    assert stream_error(path) == f"cannot read results {path}: images: expected a list, got " \
                                 f"{kind}"


@pytest.mark.parametrize("text, why", [
    ('  {  }  ', "images: missing"), ('{"info": {}}', "images: missing"),
    ('{"images": [], "info": {}, "images": []}', "'images' appears twice"),
    ('{"images": [] , }', "expected a property name"),
    ('{"images": [],}', "expected a property name"),
    ('{"images": [1 2]}', "expected ',' or ']', found '2'"),
    ('{"images": [1', "expected ',' or ']', found the end of the file (truncated?)"),
    ('{"images": []} x', "extra data after the top-level object"),
    ('{}x', "extra data after the top-level object"),
    ('{"images": [{"file": "a', "not valid JSON (Unterminated string"),
])
def test_stream_refusals_say_why(tmp_path, text, why):
    path = tmp_path / "r.json"
    path.write_text(text)
    assert why in stream_error(path)


def test_stream_empty_object_and_list(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('\n {\n "images" : [ ] , "info" : { } \n}\n')
    assert mdstream.read_header(path) == {"info": {}}
    assert list(mdstream.iter_images(path)) == []


def test_stream_not_utf8_and_too_deep(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"images": [{"file": "caf\xe9.jpg"}]}')
    assert "not UTF-8 text (invalid continuation byte)" in stream_error(path)
    path.write_text('{"images": [' + "[" * 200_000 + "]" * 200_000 + "]}")
    assert "nested too deeply" in stream_error(path)


def test_stream_value_size_limit_is_16_mib(tmp_path):
    """One entry of 16.5 MiB (a damaged or hostile file) is refused in one line; 15.5 MiB
    still reads. The window grows by doubling, so memory stays near the largest entry. The
    big entry starts exactly at the 1 MiB read boundary (where the window holds exactly the
    limit before it refuses)."""
    path = tmp_path / "r.json"
    head = '{"images": [{"file": "pad.jpg", "detections": [], "datetime": "'
    pad = head + "p" * ((1 << 20) - len(head) - 4) + '"}, '
    assert len(pad) == 1 << 20
    for mib, ok in ((15.5, True), (16.5, False)):
        with open(path, "w") as f:
            f.write(pad + '{"file": "a.jpg", "detections": [], "datetime": "')
            f.write("x" * int(mib * (1 << 20)))
            f.write('"}]}')
        if ok:
            _, entry = mdstream.iter_images(path)
            assert len(entry["datetime"]) == int(mib * (1 << 20))
        else:
            assert "one value is larger than 16,777,216 characters" in stream_error(path)


def good_entry() -> dict:
    return {"file": "cam/IMG_1.JPG", "datetime": "2024:01:02 03:04:05", "warnings": ["w"],
            "detections": [box("1", 0.9, [0.1, 0.2, 0.3, 0.4], [["0", 0.8], [1, 0.2]])],
            "sequence": {"id": "s1", "classifications": [["2", 0.7]]}}


def with_(path: tuple, value: object) -> dict:
    e = good_entry()
    target = e
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return e


F = "images[1] (cam/IMG_1.JPG)"
BAD_ENTRIES = {
    "not an object": (["x"], "images[1]: expected an object, got a list"),
    "file empty": (with_(("file",), ""), "images[1]: file: expected a non-empty string, got "
                                         "the string ''"),
    "file number": (with_(("file",), 3), "images[1]: file: expected a non-empty string, got "
                                         "the number 3"),
    "file missing": ({"detections": []}, "images[1]: file: expected a non-empty string, got "
                                         "null"),
    "failure number": (with_(("failure",), 1.5), f"{F}: failure: expected a string, got the "
                                                  "number 1.5"),
    "datetime bool": (with_(("datetime",), True), f"{F}: datetime: expected a string, got a "
                                                  "boolean (True)"),
    "warnings string": (with_(("warnings",), "w"), f"{F}: warnings: expected a list of strings"),
    "warnings number": (with_(("warnings",), ["w", 2]), f"{F}: warnings: expected a list of "
                                                        "strings"),
    "detections null": (with_(("detections",), None), f"{F}: detections: missing (null is for "
                                                       "failures only)"),
    "detections object": (with_(("detections",), {}), f"{F}: detections: expected a list, got "
                                                      "an object"),
    "detection list": (with_(("detections", 0), [1]), f"{F}: detections[0]: expected an "
                                                      "object, got a list"),
    "category unknown": (with_(("detections", 0, "category"), "9"),
                         f"{F}: detections[0].category: the string '9' is not an id of "
                         "detection_categories"),
    "category long": (with_(("detections", 0, "category"), "c" * 60),
                      f"{F}: detections[0].category: the string '{'c' * 40}' is not an id of "
                      "detection_categories"),
    "category number": (with_(("detections", 0, "category"), 1),
                        f"{F}: detections[0].category: the number 1 is not an id of "
                        "detection_categories"),
    "conf string": (with_(("detections", 0, "conf"), "0.9"),
                    f"{F}: detections[0].conf: expected a finite number, got the string '0.9'"),
    "conf bool": (with_(("detections", 0, "conf"), False),
                  f"{F}: detections[0].conf: expected a finite number, got a boolean (False)"),
    "bbox three": (with_(("detections", 0, "bbox"), [0.1, 0.2, 0.3]),
                   f"{F}: detections[0].bbox: expected [x, y, width, height] (4 finite "
                   "numbers), got a list"),
    "bbox null item": (with_(("detections", 0, "bbox"), [0.1, 0.2, 0.3, None]),
                       f"{F}: detections[0].bbox: expected [x, y, width, height] (4 finite "
                       "numbers), got a list"),
    "ranking object": (with_(("detections", 0, "classifications"), {"0": 0.8}),
                       f"{F}: detections[0].classifications: expected a list, got an object"),
    "ranking pair of 3": (with_(("detections", 0, "classifications", 1), ["1", 0.2, 0]),
                          f"{F}: detections[0].classifications[1]: expected [category id, "
                          "confidence], got a list"),
    "ranking id unknown": (with_(("detections", 0, "classifications", 1), ["7", 0.2]),
                           f"{F}: detections[0].classifications[1]: the string '7' is not an id"
                           " of classification_categories"),
    "ranking id bool": (with_(("detections", 0, "classifications", 0), [True, 0.2]),
                        f"{F}: detections[0].classifications[0]: a boolean (True) is not an id"
                        " of classification_categories"),
    "ranking id float": (with_(("detections", 0, "classifications", 0), [0.0, 0.2]),
                         f"{F}: detections[0].classifications[0]: the number 0.0 is not an id"
                         " of classification_categories"),
    "ranking conf null": (with_(("detections", 0, "classifications", 0), ["0", None]),
                          f"{F}: detections[0].classifications[0]: confidence: expected a "
                          "finite number, got null"),
    "sequence list": (with_(("sequence",), []), f"{F}: sequence: expected an object, got a "
                                                "list"),
    "sequence ranking": (with_(("sequence", "classifications"), [["2"]]),
                         f"{F}: sequence.classifications[0]: expected [category id, "
                         "confidence], got a list"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
def test_entry_check_names_file_entry_and_field(tmp_path, kind):
    """Each malformed field is one line naming the results file, the entry's index, its image
    and the field; the entries before it were yielded, checked, first."""
    bad, why = BAD_ENTRIES[kind]
    path = write_md(tmp_path / "md.json", [good_entry(), bad, good_entry()])
    res = mdstream.Results(path)
    seen = []
    with pytest.raises(EdgeError) as e:
        for entry in res.images():
            seen.append(entry["file"])
    assert str(e.value) == f"{path}: {why}"
    assert seen == ["cam/IMG_1.JPG"]
    with pytest.raises(EdgeError) as e:  # an already-loaded file: the same check
        mdstream.check_loaded(path, json.loads(path.read_text()))
    assert str(e.value) == f"{path}: {why}"


def test_entry_check_accepts_what_megadetector_writes(tmp_path):
    """A failure's null detections, an int class id, no sequence, no warnings, a file without
    detection_categories (any category), a negative or huge box number: all accepted."""
    entries = [good_entry(),
               {"file": "f.jpg", "failure": "Failure image access", "detections": None},
               {"file": "g.jpg", "detections": [box("5", 1, [-0.01, 0, 1e3, 2],
                                                    [[0, 1], ["2", 0]])],
                "failure": None, "datetime": None, "warnings": None, "sequence": None},
               {"file": "h.jpg", "detections": []}]
    path = write_md(tmp_path / "md.json", entries, det={})
    assert mdstream.load_results(path)["images"] == entries
    assert mdstream.check_loaded(path, {"images": None}) == {"images": None}


@pytest.mark.parametrize("key, value, why", [
    ("info", [], "info: expected an object, got a list"),
    ("detection_categories", "x", "detection_categories: expected an object, got the string "
                                  "'x'"),
    ("classification_categories", {"0": "deer", "1": 2},
     "classification_categories.1: expected a string, got the number 2"),
    ("detection_categories", {"1": None}, "detection_categories.1: expected a string, got "
                                          "null"),
])
def test_header_check_names_the_key(tmp_path, key, value, why):
    md = {"info": {}, "detection_categories": {"1": "animal"},
          "classification_categories": {"0": "deer"}, "images": [], key: value}
    path = tmp_path / "md.json"
    path.write_text(json.dumps(md))
    with pytest.raises(EdgeError) as e:
        mdstream.Results(path)
    assert str(e.value) == f"{path}: {why}"


def test_header_null_values_read_as_empty(tmp_path):
    path = tmp_path / "md.json"
    path.write_text('{"info": null, "detection_categories": null, "images": []}')
    res = mdstream.Results(path)
    assert (res.info, res.detection_categories, res.classification_categories) == ({}, {}, {})


@pytest.mark.parametrize("info, whole, threshold", [
    ({"detector": "none (kerascls-edge whole-image classifier)"}, True, 0.2),
    ({"detector": "none"}, True, 0.2),
    ({"detector": "MDV5A", "detector_metadata": {"typical_detection_threshold": 0.35}},
     False, 0.35),
    ({"detector": "md_v5a none", "detector_metadata": {"typical_detection_threshold": 0}},
     False, 0.0),
    ({"detector_metadata": {"typical_detection_threshold": float("nan")}}, False, 0.2),
    ({"detector_metadata": {"typical_detection_threshold": None}}, False, 0.2),
    ({"detector_metadata": [0.5]}, False, 0.2),
    ({}, False, 0.2),
])
def test_whole_image_and_typical_threshold(info, whole, threshold):
    assert mdstream.whole_image(info) is whole
    assert mdstream.typical_threshold(info) == threshold
    assert mdstream.typical_threshold(info, 0.6) == (0.6 if threshold == 0.2 else threshold)
    assert mdstream.typical_threshold([]) == 0.2


# == report: the review page's data ============================================================

INDEX = re.compile(r'<script type="application/json" id="kc-index">(.*?)</script>', re.S)


def page_index(page: Path) -> dict:
    """The page's index, read with the json module from the page text."""
    (text,) = INDEX.findall(page.read_text(encoding="utf-8"))
    return json.loads(text)


def chunk_files(page: Path) -> dict[str, list]:
    """Every `<page>_data/KEY.js` (`kcChunk("KEY",[rows]);`), rows read with json."""
    out = {}
    for p in sorted(report.data_dir(page).glob("*.js")):
        m = re.fullmatch(r'kcChunk\("([^"]+)",(.*)\);\n', p.read_text(encoding="ascii"), re.S)
        assert m and m.group(1) == p.stem, p
        out[p.stem] = json.loads(m.group(2))
    return out


def cls_box(label_id: str, p: float, bbox: list, conf: float = 0.9) -> dict:
    return box("1", conf, bbox, [[label_id, p]])


def review_project(tmp_path: Path) -> tuple[Path, Path]:
    """Nine entries whose page data is worked by hand below (see test_report_index...)."""
    img = tmp_path / "img"
    img.mkdir()
    (img / "a").mkdir()
    Image.fromarray(texture(301, 211, seed=1)).save(img / "a" / "deer1.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 301x211, shown rotated 90 degrees: 211x301
    Image.fromarray(texture(301, 211, seed=2)).save(img / "a" / "deer2.jpg", quality=92,
                                                    exif=exif.tobytes())
    Image.fromarray(texture(97, 131, seed=3)).save(img / "a" / "deer3.png")
    Image.fromarray(texture(1283, 965, seed=4)).save(img / "fox1.jpg", quality=85)
    render_picture(img, "person.png", 203, 77, seed=5, mode="I;16")
    render_picture(img, "blank.png", 77, 203, seed=6, mode="P+t")
    render_picture(img, "boar.jpg", 150, 100, seed=7, mode="CMYK")
    images = [
        {"file": "a/deer1.jpg", "detections": [
            cls_box("0", 0.5, [0.1, 0.2, 0.3, 0.4]),
            cls_box("1", 0.45, [0.6, 0.1, 0.2, 0.3], conf=0.87654)]},
        {"file": "a/deer2.jpg", "detections": [cls_box("0", 1.0, [0.123456, 0.5, 0.25, 0.5])],
         "sequence": {"id": "s1"}},
        {"file": "a/deer3.png", "detections": [cls_box("0", 0.49994, [0, 0, 0.5, 0.5])],
         "warnings": ["exif clock reset"]},
        {"file": "fox1.jpg", "detections": [cls_box("1", 0.45, [0.2, 0.2, 0.2, 0.2])]},
        {"file": "person.png", "detections": [box("2", 0.95, [0.3, 0.3, 0.4, 0.4]),
                                              box("1", 0.5, [0, 0, 0.1, 0.1])]},
        {"file": "blank.png", "detections": []},
        {"file": "boar.jpg", "detections": [cls_box("2", 0.3, [0.0, 0.0, 1.0, 1.0]),
                                            box("1", 0.1, [0.5, 0.6, 0.2, 0.2])]},
        {"file": "gone.jpg", "failure": "Failure image access", "detections": None},
        {"file": "missing.jpg", "detections": [cls_box("0", 0.05, [0.5, 0.5, 0.5, 0.5])]},
    ]
    results = write_md(tmp_path / "r.json", images,
                       {"detector": "MDV5A", "classifier": "deer-fox-boar v2"})
    return results, img


def steps(*pairs: tuple[int, int]) -> list[int]:
    """21 step counts from (count, how many steps) runs."""
    out = [n for n, k in pairs for _ in range(k)]
    assert len(out) == 21
    return out


def test_report_index_and_chunks_worked_by_hand(tmp_path, capsys):
    """Labels as --sort_into picks them (the most confident classified box, else the best
    box's category, else blank), groups largest first then by name, the minimum-confidence
    step counts (a confidence equal to a step counts at that step), chunk rows in confidence
    order (ties and the `file` order by name) and the failures-and-warnings list."""
    results, img = review_project(tmp_path)
    page = tmp_path / "review.html"
    rc, out, _ = cli(capsys, "report", results, "-o", page, "--image_dir", img,
                     "--page_size", "7")
    assert rc == 0
    assert json.loads(out) == {"images": 9, "failures": 1, "thumbnails": 7,
                               "output": str(page)}
    index = page_index(page)
    labels = ["deer", "(failed)", "blank", "boar", "fox", "person"]
    counts = [steps((4, 2), (3, 8), (2, 1), (1, 10)), steps((1, 1), (0, 20)),
              steps((1, 21)), steps((1, 7), (0, 14)), steps((1, 10), (0, 11)),
              steps((1, 20), (0, 1))]
    assert {k: index[k] for k in ("total", "page_size", "steps", "labels", "counts", "data")} \
        == {"total": 9, "page_size": 7, "steps": 20, "labels": labels, "counts": counts,
            "data": "review_data/"}
    assert index["chunks"] == {"c": [[c] for c in counts], "f": [[c] for c in counts],
                               "p": [[steps((2, 1), (1, 9), (0, 11))]]}
    chunks = chunk_files(page)
    assert sorted(chunks) == sorted([f"{o}{g}-0" for o in "cf" for g in range(6)] + ["p0-0"])
    first = {key: [r[:6] for r in rows] for key, rows in chunks.items()}
    deer1 = ["a/deer1.jpg", 0.5, "", [], "", [[0.1, 0.2, 0.3, 0.4, "deer", 0.9],
                                              [0.6, 0.1, 0.2, 0.3, "fox", 0.877]]]
    deer2 = ["a/deer2.jpg", 1.0, "", [], "s1", [[0.1235, 0.5, 0.25, 0.5, "deer", 0.9]]]
    deer3 = ["a/deer3.png", 0.4999, "", ["exif clock reset"], "",
             [[0, 0, 0.5, 0.5, "deer", 0.9]]]
    missing = ["missing.jpg", 0.05, "", [], "", [[0.5, 0.5, 0.5, 0.5, "deer", 0.9]]]
    gone = ["gone.jpg", 0.0, "Failure image access", [], "", []]
    assert first["c0-0"] == [deer2, deer1, deer3, missing]
    assert first["f0-0"] == [deer1, deer2, deer3, missing]
    assert first["c1-0"] == first["f1-0"] == [gone]
    assert first["c2-0"] == [["blank.png", 1.0, "", [], "", []]]
    assert first["c3-0"] == [["boar.jpg", 0.3, "", [], "", [[0.5, 0.6, 0.2, 0.2, "", 0.1]]]]
    # (a full-frame box is not drawn)
    assert first["c4-0"] == [["fox1.jpg", 0.45, "", [], "", [[0.2, 0.2, 0.2, 0.2, "fox", 0.9]]]]
    assert first["c5-0"] == [["person.png", 0.95, "", [], "", [[0.3, 0.3, 0.4, 0.4, "", 0.95],
                                                               [0, 0, 0.1, 0.1, "", 0.5]]]]
    assert first["p0-0"] == [deer3, gone]
    html = page.read_text(encoding="utf-8")
    assert '<meta name="generator" content="kerascls-edge report">' in html
    assert "<title>Review: r.json</title>" in html
    assert '<div id="who">MDV5A + deer-fox-boar v2</div>' in html
    assert 'id="kc-chunks"' not in html and "a/deer1.jpg" not in html  # data only in the chunks


def reference(path: Path, size: tuple[int, int], upright: bool = True) -> np.ndarray:
    """The picture as a viewer shows it (EXIF rotation applied), resized with Pillow."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im) if upright else im
        if im.mode == "I;16":
            im = im.point(lambda v: v / 257).convert("L")
        return np.asarray(im.convert("RGB").resize(size, Image.Resampling.BOX), np.float32)


def test_report_thumbnails_are_small_upright_and_named_by_file(tmp_path, capsys):
    """Each readable picture (any mode, EXIF rotation applied) gets one JPEG of at most 160
    pixels a side with its aspect ratio, showing the picture (close to Pillow's own resize of
    it, far from the picture unrotated); an unreadable one gets none and a 160x120 frame."""
    results, img = review_project(tmp_path)
    page = tmp_path / "my review.html"
    assert cli(capsys, "report", results, "-o", page, "--image_dir", img)[0] == 0
    rows = {r[0]: r for rows in chunk_files(page).values() for r in rows}
    sizes = {"a/deer1.jpg": (160, 112), "a/deer2.jpg": (112, 160), "a/deer3.png": (97, 131),
             "fox1.jpg": (160, 120), "person.png": (160, 61), "blank.png": (61, 160),
             "boar.jpg": (150, 100)}
    folder = tmp_path / "my review_thumbs"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        hashlib.sha1(f.encode()).hexdigest()[:20] + ".jpg" for f in sizes)
    for file, (w, h) in sizes.items():
        src, tw, th = rows[file][6:9]
        name = hashlib.sha1(file.encode()).hexdigest()[:20] + ".jpg"
        assert src == f"my%20review_thumbs/{name}" and (tw, th) == (w, h)
        with Image.open(folder / name) as t:
            assert (t.format, t.mode, t.size) == ("JPEG", "RGB", (w, h))
            got = np.asarray(t, np.float32)
        diff = np.abs(got - reference(img / file, (w, h))).mean()
        assert diff < 12, (file, diff)
    stored = reference(img / "a/deer2.jpg", (112, 160), upright=False)  # not rotated
    with Image.open(folder / rows["a/deer2.jpg"][6].split("/")[1]) as t:
        assert np.abs(np.asarray(t, np.float32) - stored).mean() > 30
    for file in ("missing.jpg", "gone.jpg"):
        assert rows[file][6:9] == ["", 160, 120]
        assert all(type(v) is int for v in rows[file][7:9])  # pixels: 120, not 120.0
    assert page_index(page)["data"] == "my%20review_data/"


def test_report_inline_page_holds_the_same_data(tmp_path, capsys):
    """--inline: no folders beside the page; its chunks are the beside page's chunks and each
    thumbnail is the same JPEG as a data URI."""
    results, img = review_project(tmp_path)
    beside, inline = tmp_path / "b.html", tmp_path / "i.html"
    assert cli(capsys, "report", results, "-o", beside, "--image_dir", img)[0] == 0
    assert cli(capsys, "report", results, "-o", inline, "--image_dir", img, "--inline")[0] == 0
    assert not (tmp_path / "i_thumbs").exists() and not (tmp_path / "i_data").exists()
    text = inline.read_text(encoding="utf-8")
    (raw,) = re.findall(r'<script type="application/json" id="kc-chunks">(.*?)</script>',
                        text, re.S)
    chunks, files = json.loads(raw), chunk_files(beside)
    assert sorted(chunks) == sorted(files)
    index = page_index(inline)
    assert index["data"] is None and {**index, "data": "b_data/"} == page_index(beside)
    import base64
    for key, rows in files.items():
        for a, b in zip(rows, chunks[key], strict=True):
            assert a[:6] == b[:6] and a[7:9] == b[7:9]
            if a[6]:
                assert b[6].startswith("data:image/jpeg;base64,")
                jpeg = base64.b64decode(b[6].split(",", 1)[1], validate=True)
                assert jpeg == (tmp_path / a[6]).read_bytes()
            else:
                assert b[6] == ""


def test_report_chunks_of_500(tmp_path, capsys):
    """1,001 images of one label: chunks of 500, 500 and 1, in confidence order, each with
    its own step counts (counted here with plain comparisons)."""
    images = [{"file": f"x/{i:04d}.jpg", "detections": [cls_box("0", i / 1000, [0, 0, .5, .5])]}
              for i in range(1001)]
    results = write_md(tmp_path / "r.json", images)
    page = tmp_path / "p.html"
    rc, out, _ = cli(capsys, "report", results, "-o", page)
    assert rc == 0 and json.loads(out) == {"images": 1001, "failures": 0, "thumbnails": 0,
                                           "output": str(page)}
    chunks, index = chunk_files(page), page_index(page)
    assert index["total"] == 1001
    assert [len(chunks[f"c0-{k}"]) for k in range(3)] == [500, 500, 1]
    assert [r[1] for k in range(3) for r in chunks[f"c0-{k}"]] == \
        [i / 1000 for i in range(1000, -1, -1)]
    assert [r[0] for k in range(3) for r in chunks[f"f0-{k}"]] == \
        [f"x/{i:04d}.jpg" for i in range(1001)]
    for order, parts in (("c", [range(1000, 500, -1), range(500, 0, -1), [0]]),
                         ("f", [range(500), range(500, 1000), [1000]])):
        want = [[sum(1 for i in part if k == 0 or i / 1000 >= k / 20) for k in range(21)]
                for part in parts]
        assert index["chunks"][order] == [want], order
    assert index["counts"] == [[1001] + [1001 - 50 * k for k in range(1, 21)]]
    assert index["chunks"]["p"] == [[]] and "p0-0" not in chunks
    assert not (tmp_path / "p_thumbs").exists() or not any((tmp_path / "p_thumbs").iterdir())


def test_report_finds_images_by_flag_then_image_base_then_results_folder(tmp_path, capsys):
    img = tmp_path / "photos"
    Image.fromarray(texture(120, 90, seed=9)).save(img.mkdir() or img / "a.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    entry = {"file": "a.jpg", "detections": [cls_box("0", 0.9, [0, 0, .5, .5])]}
    absolute = {"file": str(img / "a.jpg"), "detections": [cls_box("1", 0.8, [0, 0, .5, .5])]}
    cases = [({}, [], 1), ({}, ["--image_dir", img], 2), ({"image_base": str(img)}, [], 2),
             ({"image_base": str(elsewhere)}, ["--image_dir", img], 2)]
    for n, (info, flags, thumbs) in enumerate(cases):
        results = write_md(elsewhere / f"r{n}.json", [entry, absolute], info)
        rc, out, _ = cli(capsys, "report", results, "-o", tmp_path / f"p{n}.html", *flags)
        assert rc == 0 and json.loads(out)["thumbnails"] == thumbs, (info, flags)
    results = write_md(img / "r.json", [entry])  # beside the images: found with no flag
    rc, out, _ = cli(capsys, "report", results, "-o", tmp_path / "p9.html")
    assert json.loads(out)["thumbnails"] == 1


def our_csv(path: Path, rows: list[dict]) -> Path:
    """A CSV as `predict -o X.csv` writes it (cells made spreadsheet-safe), via csv."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "confidence", "bbox", "failure",
                                          "warnings", "sequence_id"])
        w.writeheader()
        for r in rows:
            w.writerow({k: spreadsheet_cell(v) for k, v in r.items()})
    return path


def test_report_from_our_csv(tmp_path, capsys):
    """Rows of one image together: its label is its most confident row (the first labelled
    row replaces blank; a tie keeps the earlier), every bbox a box; a failure row is
    "(failed)"; formula-safe cells are read back as the text they stand for."""
    rows = [
        {"file": "=a.jpg", "label": "-fox", "confidence": "0.4000", "bbox": "0.1 0.2 0.3 0.4",
         "warnings": "w1;w2", "sequence_id": "@s"},
        {"file": "=a.jpg", "label": "deer", "confidence": "0.7000", "bbox": "0.5 0.5 0.2 0.2"},
        {"file": "=a.jpg", "label": "boar", "confidence": "0.7000", "bbox": "0 0 0.1 0.1"},
        {"file": "b.jpg", "label": "", "confidence": ""},
        {"file": "c.jpg", "failure": "unreadable", "label": "deer", "confidence": "0.9"},
        {"file": "d.jpg", "label": "", "confidence": "", "bbox": "0.1 0.1 0.1 0.1"},
        {"file": "d.jpg", "label": "fox", "confidence": "0.2000"},
        {"file": "e.jpg", "label": "fox", "confidence": "0.3000"},
    ]
    page = tmp_path / "p.html"
    rc, out, _ = cli(capsys, "report", our_csv(tmp_path / "r.csv", rows), "-o", page)
    assert rc == 0 and json.loads(out) == {"images": 5, "failures": 1, "thumbnails": 0,
                                           "output": str(page)}
    index = page_index(page)
    assert index["labels"] == ["fox", "(failed)", "blank", "deer"]
    got = {r[0]: r[:6] for key, rows_ in chunk_files(page).items() if key[0] == "f"
           for r in rows_}
    assert sorted(got.values()) == sorted([
        ["=a.jpg", 0.7, "", ["w1", "w2"], "@s", [[0.1, 0.2, 0.3, 0.4, "-fox", 0.4],
                                                [0.5, 0.5, 0.2, 0.2, "deer", 0.7],
                                                [0, 0, 0.1, 0.1, "boar", 0.7]]],
        ["b.jpg", 1.0, "", [], "", []],
        ["c.jpg", 0.0, "unreadable", [], "", []],
        ["d.jpg", 0.2, "", [], "", [[0.1, 0.1, 0.1, 0.1, "", 0.0]]],
        ["e.jpg", 0.3, "", [], "", []]])
    assert len(got) == 5  # deer (not boar) for =a.jpg: a tie keeps the earlier row
    assert chunk_files(page)["c3-0"][0][0] == "=a.jpg"


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "x"])
def test_report_csv_bad_confidence_is_one_line(tmp_path, capsys, cell):
    path = our_csv(tmp_path / "r.csv", [{"file": "a.jpg", "label": "fox", "confidence": cell}])
    rc, _, err = cli(capsys, "report", path, "-o", tmp_path / "p.html")
    assert rc == 2 and f"cannot read results {path}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_report_page_output_refusals(tmp_path, capsys):
    """Never over the results, a folder, a foreign page (without --overwrite) or a missing
    folder; a thumbnails path that is a file is refused; a refused or failed run leaves
    nothing new; our own page is replaced."""
    results = write_md(tmp_path / "r.json", [{"file": "a.jpg", "detections": []}])
    page = tmp_path / "p.html"
    for out, flags, why in [
            (results, ["--overwrite"], "refusing to write the page over its input"),
            (tmp_path, [], "it is a directory"),
            (tmp_path / "no" / "p.html", [], "does not exist")]:
        rc, _, err = cli(capsys, "report", results, "-o", out, *flags)
        assert rc == 2 and why in err, err
    (tmp_path / "t_thumbs").write_text("x")
    rc, _, err = cli(capsys, "report", results, "-o", tmp_path / "t.html")
    assert rc == 2 and "not a folder" in err
    page.write_text("<html>my notes</html>")
    rc, _, err = cli(capsys, "report", results, "-o", page)
    assert rc == 2 and "not a kerascls-edge review page" in err
    assert page.read_text() == "<html>my notes</html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.html", "r.json", "t_thumbs"]
    assert cli(capsys, "report", results, "-o", page, "--overwrite")[0] == 0
    assert page_index(page)["total"] == 1
    write_md(results, [{"file": "a.jpg", "detections": []}, {"file": "b.jpg", "detections": []}])
    assert cli(capsys, "report", results, "-o", page)[0] == 0  # ours: replaced without a flag
    assert page_index(page)["total"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p.html", "p_data", "p_thumbs", "r.json", "t_thumbs"]
    write_md(results, [{"file": "a.jpg", "detections": []}, ["bad"]])
    rc, _, err = cli(capsys, "report", results, "-o", tmp_path / "q.html")
    assert rc == 2 and "images[1]" in err
    assert not (tmp_path / "q_thumbs").exists() and not (tmp_path / "q.html").exists()
    rc, _, err = cli(capsys, "report", results, "-o", page)  # p_thumbs existed: kept
    assert rc == 2 and (tmp_path / "p_thumbs").is_dir() and page_index(page)["total"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p.html", "p_data", "p_thumbs", "r.json", "t_thumbs"]


CARD = re.compile(r'<div class="card[^"]*" data-label="([^"]*)" data-conf="([^"]*)">.*?'
                  r'<div class="file">([^<]*)</div>', re.S)


@needs_chromium
def test_report_views_in_a_browser(tmp_path, capsys):
    """What a person sees (headless Chromium runs the page's script): the 0.50 filter keeps
    the image at exactly 0.50, groups largest first, pages of 3."""
    results, img = review_project(tmp_path)
    page = tmp_path / "review.html"
    assert cli(capsys, "report", results, "-o", page, "--image_dir", img,
               "--page_size", "3")[0] == 0
    dom = browser(tmp_path, page, "min=0.5&page=2")
    assert re.search(r'id="nshown">4<', dom) and re.search(r'id="npage">2<', dom)
    assert [(lab, float(c), f) for lab, c, f in CARD.findall(dom)] == [
        ("person", 0.95, "person.png")]  # page 2 of deer 1.0, deer 0.5, blank 1.0 | person
    assert re.search(r'id="nproblems">2<', dom) and 'src="review_thumbs/' in dom


def test_report_csv_suffix_any_case_and_missing_file_column(tmp_path, capsys):
    path = our_csv(tmp_path / "R.CSV", [{"file": "a.jpg", "label": "fox", "confidence": "0.5"}])
    entries, info = report.read_results(path)
    assert info == {} and [(e["file"], e["label"], e["conf"]) for e in entries] == \
        [("a.jpg", "fox", 0.5)]
    path.write_text("name,label\na.jpg,fox\n")
    rc, _, err = cli(capsys, "report", path, "-o", tmp_path / "p.html")
    assert rc == 2 and f"cannot read results {path}: 'file'" in err
    rc, _, err = cli(capsys, "report", tmp_path / "none.csv", "-o", tmp_path / "p.html")
    assert rc == 2 and "none.csv" in err


def test_report_data_folder_readable_and_never_a_link(tmp_path, capsys):
    """The data folder is readable by everyone who can read the page; a link named like it
    (even to a folder this command wrote) is never replaced."""
    results = write_md(tmp_path / "r.json", [{"file": "a.jpg", "detections": []}])
    first = tmp_path / "first.html"
    assert cli(capsys, "report", results, "-o", first)[0] == 0
    assert (tmp_path / "first_data").stat().st_mode & 0o777 == 0o755
    (tmp_path / "second_data").symlink_to(tmp_path / "first_data")
    rc, _, err = cli(capsys, "report", results, "-o", tmp_path / "second.html")
    assert rc == 2 and "refusing to replace" in err
    assert (tmp_path / "second_data").is_symlink() and chunk_files(first)


# == convert --to camtrapdp: where the images are, names, refusals =============================


def dated_photo(path: Path, when: int, seed: int) -> None:
    """A photo without EXIF: its capture time is the file's mtime (set here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(texture(80, 60, seed=seed)).save(path, quality=90)
    import os
    os.utime(path, (when, when))


MAR4 = 1614834367  # 2021-03-04T05:06:07Z
JUN1 = 1622527200  # 2021-06-01T06:00:00Z


def timestamps(pkg: Path) -> list[str]:
    return [r["timestamp"] for r in csv_dicts(pkg / "media.csv")]


def test_convert_camtrapdp_finds_images_by_flag_then_image_base_then_results_folder(
        tmp_path, capsys):
    """The capture time comes from the image itself: the one under --image_dir, else under
    the file's image_base (if that folder exists), else beside the results file."""
    photos, runs = tmp_path / "photos", tmp_path / "runs"
    dated_photo(photos / "cam" / "a.jpg", MAR4, 1)
    dated_photo(runs / "cam" / "a.jpg", JUN1, 2)  # a different copy beside the results
    entry = [{"file": "cam/a.jpg", "detections": [cls_box("0", 0.9, [0.1, 0.1, 0.2, 0.2])]}]
    cases = [({}, ["--image_dir", photos], "2021-03-04T05:06:07Z"),
             ({"image_base": str(photos)}, [], "2021-03-04T05:06:07Z"),
             ({"image_base": str(tmp_path / "gone")}, [], "2021-06-01T06:00:00Z"),
             ({"image_base": str(runs)}, ["--image_dir", photos], "2021-03-04T05:06:07Z"),
             ({}, [], "2021-06-01T06:00:00Z")]
    for n, (info, flags, when) in enumerate(cases):
        results = write_md(runs / f"r{n}.json", entry, {"detector": "MDV5A", **info})
        pkg = tmp_path / f"pkg{n}"
        rc, out, err = cli(capsys, "convert", results, "--to", "camtrapdp", "-o", pkg,
                           "--location", "51.05,3.72", *flags)
        assert rc == 0, err
        assert timestamps(pkg) == [when], (info, flags)


def test_convert_camtrapdp_taxonomy_names_and_threshold(tmp_path, capsys):
    """--taxonomy maps each label to its scientific name (an unknown label stays itself);
    boxes below --detection_threshold are not observations."""
    dated_photo(tmp_path / "a.jpg", MAR4, 3)
    results = write_md(tmp_path / "r.json", [{"file": "a.jpg", "detections": [
        cls_box("0", 0.9, [0.1, 0.1, 0.2, 0.2], conf=0.6),
        cls_box("1", 0.8, [0.5, 0.5, 0.2, 0.2], conf=0.4),
        cls_box("2", 0.7, [0.3, 0.6, 0.2, 0.2], conf=0.5)]}], {"detector": "MDV5A"})
    tax = tmp_path / "taxonomy.csv"
    tax.write_text("label,scientificName\ndeer,Capreolus capreolus\nfox,Vulpes vulpes\n")
    pkg = tmp_path / "pkg"
    rc, _, err = cli(capsys, "convert", results, "--to", "camtrapdp", "-o", pkg, "--taxonomy",
                     tax, "--detection_threshold", "0.5", "--deployment", "site1")
    assert rc == 0, err
    obs = csv_dicts(pkg / "observations.csv")
    assert [(o["scientificName"], o["bboxX"], o["deploymentID"]) for o in obs] == [
        ("Capreolus capreolus", "0.1000", "site1"), ("boar", "0.3000", "site1")]


@pytest.mark.parametrize("flags, why", [
    (["--utc_offset", "+25:00"], "utc_offset"),
    (["--deployment", ".."], "deployment"),
    (["--location", "95,3"], "location"),
])
def test_convert_camtrapdp_bad_flags_refused_before_writing(tmp_path, capsys, flags, why):
    results = write_md(tmp_path / "r.json", [{"file": "a.jpg", "detections": []}])
    rc, _, err = cli(capsys, "convert", results, "--to", "camtrapdp", "-o", tmp_path / "pkg",
                     *flags)
    assert rc == 2 and why in err.lower(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_prepare_package_refuses_a_file_as_the_folder(tmp_path):
    from argparse import Namespace

    from kerascls_edge.convert import prepare_package

    out = tmp_path / "pkg"
    out.write_text("not a folder")
    args = Namespace(output=str(out), utc_offset="Z", deployment=None, location=None,
                     overwrite=False)
    with pytest.raises(EdgeError, match="--output is a folder; .* is a file"):
        prepare_package(args)
    made = prepare_package(Namespace(**{**vars(args), "output": str(tmp_path / "a" / "b")}))
    assert made == tmp_path / "a" / "b" and made.is_dir()  # parents made too
    assert prepare_package(Namespace(**{**vars(args), "output": str(made)})) == made


def test_report_heavy_decodes_are_the_big_webp_and_buffered_jpeg_ones(tmp_path):
    """Thumbnails are made by several threads, except decodes that may take more than 16 MiB
    (4 bytes a pixel), WebP, and JPEGs libjpeg buffers whole (progressive): one at a time."""
    rng = np.random.default_rng(0)

    def grey(w: int, h: int, name: str, **save) -> Path:
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(path, **save)
        return path

    def bilevel(w: int, h: int, name: str) -> Path:  # big, yet quick to write
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) > 0).save(path)
        return path

    cases = {bilevel(2048, 2048, "at.png"): False,  # exactly 16 MiB
             bilevel(2048, 2049, "over.png"): True,
             grey(64, 48, "small.webp"): True,
             grey(640, 480, "base.jpg", quality=90): False,
             grey(640, 480, "prog.jpg", quality=90, progressive=True): True}
    for path, heavy in cases.items():
        with Image.open(path) as img:
            assert report._heavy(img) is heavy, path.name


def test_report_confidence_above_one_still_makes_a_page(tmp_path, capsys):
    """A malformed confidence above 1 (accepted by the reader: a finite number) reaches every
    step and breaks nothing."""
    results = write_md(tmp_path / "r.json", [{"file": "a.jpg", "detections": [
        cls_box("0", 1.5, [0.1, 0.1, 0.2, 0.2])]}])
    assert cli(capsys, "report", results, "-o", tmp_path / "p.html")[0] == 0
    assert page_index(tmp_path / "p.html")["counts"] == [[1] * 21]


def test_classified_by_names_the_bundle_version_or_its_hash(tmp_path):
    """classifiedBy: the bundle's name and model.json `version`; without one (or with an
    unreadable model.json) the first 12 hex digits of sha256(model file + labels as JSON)."""
    from types import SimpleNamespace

    from kerascls_edge.convert import _classified_by

    model = tmp_path / "m.tflite"
    model.write_bytes(bytes(range(256)) * 9)
    labels = ["deer", "fox"]
    clf = SimpleNamespace(spec=SimpleNamespace(model_path=model, name="m"), labels=labels)
    digest = hashlib.sha256(model.read_bytes() + json.dumps(labels).encode()).hexdigest()
    assert _classified_by(clf) == f"m sha256:{digest[:12]}"
    for text in ('{"version": ""}', "not json", "[1]"):
        (tmp_path / "model.json").write_text(text)
        assert _classified_by(clf) == f"m sha256:{digest[:12]}", text
    (tmp_path / "model.json").write_text('{"version": "2.1"}')
    assert _classified_by(clf) == "m 2.1"
