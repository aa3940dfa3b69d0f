"""Issue 26: the review page's video strip (`report`) and `convert` on video entries.

A video's card is a strip of up to 8 of its sampled frames, spread evenly, each with its own
thumbnail, label, confidence, frame number and time; the card's label is the video's. Every
expected value below is worked by hand from the results written in the test; pictures are
checked by decoding the written JPEGs with Pillow and against a plain sequential PyAV decode
(not kerascls_edge.video); CSV rows are read with Python's csv module. Clips are rendered by
tests/video_clips.py at a size no codec block divides (122x70).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerascls_edge import report
from kerascls_edge.cli import main
from tests.browser import browser, needs_chromium
from tests.pictures import texture
from tests.video_clips import render

av = pytest.importorskip("av")

WHOLE = "none (kerascls-edge whole-image classifier)"
CLS = {"0": "deer", "1": "fox", "2": "boar"}
W, H = 122, 70  # the clips' frame size
EVERY_2ND = list(range(0, 26, 2))  # 13 sampled frames: 0, 2, ... 24
# 8 of those 13 spread evenly: index round(j * 12 / 7), halves up, j = 0..7
# -> 0, 1.71, 3.43, 5.14, 6.86, 8.57, 10.29, 12 -> indices 0 2 3 5 7 9 10 12 -> frames:
SHOWN = [0, 4, 6, 10, 14, 18, 20, 24]
# frame n's class is (n // 2) % 3 (see walk_frames): 0 2 0 2 1 0 1 0 for the shown ones
SHOWN_LABELS = ["deer", "boar", "deer", "boar", "fox", "deer", "fox", "deer"]
SHOWN_CONFS = [0.5, 0.54, 0.56, 0.6, 0.64, 0.68, 0.7, 0.74]  # 0.5 + n / 100
SHOWN_TIMES = [0.0, 0.4, 0.6, 1.0, 1.4, 1.8, 2.0, 2.4]  # n / 10 (10 frames a second)


def cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in-process; never a traceback."""
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return rc, cap.out, cap.err


def write_md(path: Path, images: list, detector: str = WHOLE) -> Path:
    path.write_text(json.dumps({
        "info": {"format_version": "1.4", "detector": detector},
        "detection_categories": {"1": "animal", "2": "person"},
        "classification_categories": CLS, "images": images}), encoding="utf-8")
    return path


def walk_frames(numbers: list[int]) -> list[dict]:
    """Our `video.frames`: frame n at n / 10 s, class (n // 2) % 3 at 0.5 + n / 100, then the
    other two classes (a ranking of three, as predict writes top-k)."""
    out = []
    for n in numbers:
        c = (n // 2) % 3
        out.append({"frame_number": n, "time": n / 10, "classifications": [
            [str(c), 0.5 + n / 100], [str((c + 1) % 3), 0.3 - n / 100],
            [str((c + 2) % 3), 0.2]]})
    return out


def video_entry(file: str, frames: list[dict], top: list) -> dict:
    """A video as predict writes it (whole-image): frames_processed, and the `video` block."""
    return {"file": file, "frame_rate": 10.0,
            "frames_processed": [f["frame_number"] for f in frames], "detections": [],
            "video": {"rule": "mean", "frames_used": len(frames), "classifications": top,
                      "frames": frames}}


def project(tmp_path: Path) -> tuple[Path, Path]:
    """Clips and a photo, and our JSON for them (hand-written, as predict writes it).

    walk.mp4: 26 frames, every 2nd sampled. cut.avi: the same 13 frames in the results, but
    the file now holds only 20 (cut after the run): frames 20 and 24 cannot be shown.
    gone.mp4: in the results, not on disk. deer.jpg: a photo.
    """
    card = tmp_path / "card"
    card.mkdir()
    render(card / "walk.mp4", "libx264", 26, size=(W, H))
    render(card / "cut.avi", "mpeg4", 20, size=(W, H))
    Image.fromarray(texture(131, 97, seed=3)).save(card / "deer.jpg", quality=92)
    images = [video_entry("walk.mp4", walk_frames(EVERY_2ND), [["0", 0.61], ["1", 0.2]]),
              video_entry("cut.avi", walk_frames(EVERY_2ND), [["2", 0.55]]),
              video_entry("gone.mp4", walk_frames(EVERY_2ND), [["1", 0.45]]),
              {"file": "deer.jpg", "detections": [
                  {"category": "1", "conf": 0.05, "bbox": [0, 0, 1, 1],
                   "classifications": [["0", 0.9]]}]}]
    return write_md(tmp_path / "r.json", images), card


def page_rows(page: Path) -> dict[str, list]:
    """Every row of the page's `f` (file order) chunks, by file, read with json."""
    out = {}
    for js in sorted(report.data_dir(page).glob("f*.js")):
        m = re.fullmatch(r'kcChunk\("[^"]+",(.*)\);\n', js.read_text(encoding="ascii"), re.S)
        out.update({r[0]: r for r in json.loads(m.group(1))})
    return out


def jpeg_of(page: Path, src: str) -> Image.Image:
    """A thumbnail as the browser gets it: a file beside the page, or a data URI."""
    if src.startswith("data:image/jpeg;base64,"):
        import base64
        return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    return Image.open(page.parent / src)


def plain_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a clip by a plain sequential PyAV decode (not kerascls_edge.video),
    made 80 px wide as Pillow does."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            img = f.to_image()
            img.thumbnail((80, 80))  # the strip's size at the default thumbnail size
            out.append(np.asarray(img, np.float32))
    return out


def ijg_luma_table(quality: int) -> list[int]:
    """libjpeg's luminance table at `quality` (the JPEG standard's Annex K table, scaled)."""
    k1 = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
          14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
          18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
          49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (q * scale + 50) // 100)) for q in k1]


# == the strip from our JSON ===================================================================


def test_strip_frames_labels_times_and_pictures_from_our_json(tmp_path, capsys):
    """13 sampled frames: 8 shown (first and last in), each with its own label, confidence and
    time, a picture of that very frame at the strip's size (half the thumbnail size: 80 px
    for the default 160, so 122x70 -> 80x46); the card's label and confidence are the
    video's. A frame the file no longer holds, or a video gone from disk, keeps its label
    and time with an 80x60 placeholder; the page is still built."""
    results, card = project(tmp_path)
    page = tmp_path / "review.html"
    rc, out, err = cli(capsys, "report", results, "-o", page, "--image_dir", card)
    assert rc == 0, err
    # thumbnails: walk (a strip), cut (a strip, some frames missing), deer.jpg; not gone.mp4
    assert json.loads(out) == {"images": 4, "failures": 0, "thumbnails": 3,
                               "output": str(page)}
    rows = page_rows(page)
    assert [rows[f][1] for f in ("walk.mp4", "cut.avi", "gone.mp4")] == [0.61, 0.55, 0.45]
    index = json.loads(re.search(r'id="kc-index">(.*?)</script>', page.read_text()).group(1))
    assert sorted(index["labels"]) == ["boar", "deer", "fox"]  # the videos' own labels
    for file in ("walk.mp4", "cut.avi", "gone.mp4"):
        strip = rows[file][9]
        assert [s[3] for s in strip] == SHOWN
        assert [s[5] for s in strip] == SHOWN_LABELS
        assert [s[6] for s in strip] == SHOWN_CONFS
        assert [s[4] for s in strip] == SHOWN_TIMES
    decoded = {"walk.mp4": plain_frames(card / "walk.mp4"),
               "cut.avi": plain_frames(card / "cut.avi")}
    assert len(decoded["cut.avi"]) == 20
    for file, frames in decoded.items():
        for src, w, h, n, *_ in rows[file][9]:
            if n >= 20 and file == "cut.avi":
                assert (src, w, h) == ("", 80, 60), (file, n)  # placeholder, 4:3 of 80
                continue
            img = jpeg_of(page, src)
            assert img.format == "JPEG" and img.size == (w, h) == (80, 46), (file, n)
            diffs = [np.abs(np.asarray(img.convert("RGB"), np.float32) - f).mean()
                     for f in frames]  # this frame, not its neighbours (the block moves)
            assert sorted(diffs)[0] == diffs[n] < 0.9 * sorted(diffs)[1], (file, n)
    assert all((s[0], s[1], s[2]) == ("", 80, 60) for s in rows["gone.mp4"][9])


def test_strip_frame_rounding_fallbacks_and_missing_values(tmp_path, capsys):
    """Hand-edited or older results: a frame's time to 3 decimals and confidence to 4 (as the
    CSV writes them); no time: 0; a class id the file does not name: the id itself (as
    convert shows an unnamed category); no classification: no label, confidence 0."""
    card = tmp_path / "card"
    card.mkdir()
    render(card / "few.mp4", "libx264", 5, size=(W, H))
    frames = [{"frame_number": 0, "classifications": [["7", 0.876549]]},
              {"frame_number": 2, "time": 0.23456, "classifications": [["1", 0.5], ["2", 0.3]]},
              {"frame_number": 4, "time": 0.4, "classifications": []}]
    results = write_md(tmp_path / "r.json", [video_entry("few.mp4", frames, [["1", 0.5]])])
    page = tmp_path / "p.html"
    rc, out, err = cli(capsys, "report", results, "-o", page, "--image_dir", card)
    assert rc == 0, err
    strip = page_rows(page)["few.mp4"][9]
    assert [s[3:] for s in strip] == [[0, 0.0, "7", 0.8765], [2, 0.235, "fox", 0.5],
                                      [4, 0.4, "", 0.0]]
    assert all(jpeg_of(page, s[0]).size == (80, 46) for s in strip)


def test_strip_thumbnail_sizes_follow_the_page_size(tmp_path):
    """The strip's frames are half the page's thumbnail size, never under 16 px: size 20 ->
    16 (122x70 -> 16x9), size 99 -> 49 (-> 49x28; a placeholder 49 x 49*3//4 = 36)."""
    results, card = project(tmp_path)
    for size, small, pic, hole in ((20, 16, (16, 9), (16, 12)), (99, 49, (49, 28), (49, 36))):
        assert pic[0] == hole[0] == small  # the strip's width, picture or not
        page = tmp_path / f"p{size}.html"
        counts = report.build(results, page, card, size=size, inline=True)
        assert counts["thumbnails"] == 3
        rows = page_rows_inline(page)
        for src, w, h, n, *_ in rows["cut.avi"][9]:
            if n >= 20:
                assert (src, w, h) == ("", *hole) and type(w) is type(h) is int, (size, n)
            else:
                assert jpeg_of(page, src).size == (w, h) == pic, (size, n)
        assert [(s[1], s[2]) for s in rows["gone.mp4"][9]] == [hole] * 8
        assert max(jpeg_of(page, rows["deer.jpg"][6]).size) == size  # the photo: full size


def page_rows_inline(page: Path) -> dict[str, list]:
    """Rows of an --inline page's `f` chunks (in the page itself), by file."""
    m = re.search(r'id="kc-chunks">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    return {r[0]: r for key, rows in json.loads(m.group(1)).items() if key[0] == "f"
            for r in rows}


def test_strip_jpegs_are_encoded_as_the_photo_thumbnails(tmp_path, capsys):
    """One look for the whole page: the strip's frames are JPEGs of the photos' quality
    (libjpeg's quality 70 tables, worked from the standard's Annex K table)."""
    results, card = project(tmp_path)
    page = tmp_path / "p.html"
    assert cli(capsys, "report", results, "-o", page, "--image_dir", card)[0] == 0
    rows = page_rows(page)
    want = sorted(ijg_luma_table(70))
    assert want[:3] == [6, 7, 7]  # by hand: (10*60+50)//100, (11*60+50)//100, (12*60+50)//100
    photo = jpeg_of(page, rows["deer.jpg"][6])
    assert sorted(photo.quantization[0]) == want
    for src, *_ in rows["walk.mp4"][9]:
        assert sorted(jpeg_of(page, src).quantization[0]) == want


def test_strip_over_the_time_limit_keeps_labels_without_pictures(tmp_path, capsys,
                                                                 monkeypatch):
    """A video whose strip cannot be decoded within the limit: its frames are still listed
    (labels, times) with placeholders, the photo is thumbnailed and the page is built."""
    monkeypatch.setattr(report, "STRIP_TIME_LIMIT", -1.0)  # spent before the first packet
    results, card = project(tmp_path)
    page = tmp_path / "p.html"
    rc, out, _ = cli(capsys, "report", results, "-o", page, "--image_dir", card)
    assert rc == 0 and json.loads(out)["thumbnails"] == 1  # deer.jpg only
    strip = page_rows(page)["walk.mp4"][9]
    assert [s[:3] for s in strip] == [["", 80, 60]] * 8
    assert [s[5] for s in strip] == SHOWN_LABELS


# == the strip from our CSV ====================================================================


def test_strip_from_our_csv_is_the_strip_from_our_json(tmp_path, capsys):
    """`convert --to csv` of the JSON, then the page from that CSV: the same strips (frames,
    labels, confidences, times, picture sizes) and card labels as the page from the JSON."""
    results, card = project(tmp_path)
    sheet = tmp_path / "r.csv"
    assert cli(capsys, "convert", results, "--to", "csv", "-o", sheet)[0] == 0
    pages = {}
    for src in (results, sheet):
        pages[src.suffix] = tmp_path / f"p{src.suffix}.html"
        rc, _, err = cli(capsys, "report", src, "-o", pages[src.suffix], "--image_dir", card)
        assert rc == 0, err
    js, cs = page_rows(pages[".json"]), page_rows(pages[".csv"])
    for file in ("walk.mp4", "cut.avi", "gone.mp4"):
        assert cs[file][1] == js[file][1]
        assert [s[1:] for s in cs[file][9]] == [s[1:] for s in js[file][9]]
        assert [s[4] for s in cs[file][9]] == SHOWN_TIMES


def test_strip_from_a_csv_frame_row_without_a_time(tmp_path, capsys):
    """A sheet edited by hand may lose a frame's time: shown at 0 s, like a JSON frame without
    one; the others keep theirs; the video row is the card's label."""
    card = tmp_path / "card"
    card.mkdir()
    render(card / "few.mp4", "libx264", 5, size=(W, H))
    sheet = tmp_path / "r.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "confidence", "row", "frames_used", "frame_number",
                    "frame_time"])
        w.writerow(["few.mp4", "fox", "0.6000", "video", "3", "", ""])
        w.writerow(["few.mp4", "deer", "0.7000", "frame", "", "0", ""])
        w.writerow(["few.mp4", "fox", "0.8000", "frame", "", "2", "1.500"])
        w.writerow(["few.mp4", "boar", "0.4000", "frame", "", "4", "2.250"])
    page = tmp_path / "p.html"
    rc, out, err = cli(capsys, "report", sheet, "-o", page, "--image_dir", card)
    assert rc == 0 and json.loads(out)["thumbnails"] == 1, err
    row = page_rows(page)["few.mp4"]
    assert row[1] == 0.6 and [s[3:] for s in row[9]] == [
        [0, 0.0, "deer", 0.7], [2, 1.5, "fox", 0.8], [4, 2.25, "boar", 0.4]]


# == MegaDetector's own video entries ==========================================================


def test_megadetector_video_entry_without_our_video_block(tmp_path, capsys):
    """MegaDetector's own tools write a video as frames_processed and boxes carrying their
    frame_number, no `video` block: the page shows it as one card labelled by its most
    confident box (no strip, a placeholder picture); convert writes one row per box."""
    card = tmp_path / "card"
    card.mkdir()
    render(card / "walk.mp4", "libx264", 26, size=(W, H))
    entry = {"file": "walk.mp4", "frame_rate": 10.0, "frames_processed": EVERY_2ND,
             "detections": [
                 {"category": "2", "conf": 0.6, "bbox": [0.1, 0.2, 0.3, 0.4], "frame_number": 4},
                 {"category": "1", "conf": 0.8, "bbox": [0.5, 0.1, 0.2, 0.3],
                  "frame_number": 10}]}
    results = write_md(tmp_path / "md.json", [entry], detector="MDV5A")
    page = tmp_path / "p.html"
    rc, out, err = cli(capsys, "report", results, "-o", page, "--image_dir", card)
    assert rc == 0 and json.loads(out)["thumbnails"] == 0, err
    row = page_rows(page)["walk.mp4"]
    assert row[1] == 0.8 and row[9] == [] and row[6:9] == ["", 160, 120]
    assert row[5] == [[0.1, 0.2, 0.3, 0.4, "", 0.6], [0.5, 0.1, 0.2, 0.3, "", 0.8]]
    sheet = tmp_path / "md.csv"
    assert cli(capsys, "convert", results, "--to", "csv", "-o", sheet)[0] == 0
    got = [(r["file"], r["label"], r["confidence"], r["detection"], r["row"])
           for r in read_csv(sheet)]
    assert got == [("walk.mp4", "person", "0.6000", "0", ""),
                   ("walk.mp4", "animal", "0.8000", "1", "")]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_convert_whole_image_video_entries_as_predict_writes_them(tmp_path, capsys):
    """A whole-image file: a video is its `video` row (the video's label, frames used) then a
    `frame` row per frame; a failed video (frames_processed [], no `video` block) is still a
    `video` row with its failure; one with a `video` block but no frames_processed too."""
    frames = [{"frame_number": 0, "time": 0.0, "classifications": [["1", 0.7], ["0", 0.2]]},
              {"frame_number": 5, "time": 0.5, "classifications": [["0", 0.65432]]}]
    ok = video_entry("a.mp4", frames, [["1", 0.6], ["0", 0.3]])
    no_list = {k: v for k, v in video_entry("c.mp4", frames[:1], [["2", 0.9]]).items()
               if k != "frames_processed"}
    failed = {"file": "b.mp4", "failure": "cannot decode video", "detections": None,
              "frame_rate": -1.0, "frames_processed": []}
    photo = {"file": "d.jpg", "detections": [{"category": "1", "conf": 0.1, "bbox": [0, 0, 1, 1],
                                              "classifications": [["2", 0.8]]}]}
    results = write_md(tmp_path / "r.json", [ok, failed, no_list, photo])
    sheet = tmp_path / "r.csv"
    rc, out, _ = cli(capsys, "convert", results, "--to", "csv", "-o", sheet)
    assert rc == 0 and json.loads(out)["images"] == 4
    cols = ("file", "row", "label", "confidence", "top_k", "frames_used", "frame_number",
            "frame_time", "failure")
    assert [tuple(r[c] for c in cols) for r in read_csv(sheet)] == [
        ("a.mp4", "video", "fox", "0.6000", "fox:0.6000;deer:0.3000", "2", "", "", ""),
        ("a.mp4", "frame", "fox", "0.7000", "fox:0.7000;deer:0.2000", "", "0", "0.000", ""),
        ("a.mp4", "frame", "deer", "0.6543", "deer:0.6543", "", "5", "0.500", ""),
        ("b.mp4", "video", "", "", "", "0", "", "", "cannot decode video"),
        ("c.mp4", "video", "boar", "0.9000", "boar:0.9000", "1", "", "", ""),
        ("c.mp4", "frame", "fox", "0.7000", "fox:0.7000;deer:0.2000", "", "0", "0.000", ""),
        ("d.jpg", "", "boar", "0.8000", "boar:0.8000", "", "", "", "")]


# == in a real browser =========================================================================


@needs_chromium
def test_strip_as_the_browser_shows_it(tmp_path, capsys):
    """The page's script builds each video card: its frames in order, each picture at its
    size (or a placeholder box), caption `label conf` / `#n t s` to 2 and 1 decimals; the
    card's line is the video's label and confidence."""
    results, card = project(tmp_path)
    page = tmp_path / "review.html"
    assert cli(capsys, "report", results, "-o", page, "--image_dir", card)[0] == 0
    dom = browser(tmp_path, page, "sort=file")
    cards = {}
    for c in dom.split('<div class="card video"')[1:]:
        file = re.search(r'<div class="file">([^<]*)</div>', c).group(1)
        line = re.search(r'<div>video: <span class="lab">([^<]*)</span> '
                         r'<span class="conf">([^<]*)</span></div>', c).groups()
        figs = re.findall(r'<figure class="sf" data-frame="(\d+)">(<img|<div)[^>]*?'
                          r'style="width:(\d+)px;height:(\d+)px"[^>]*>.*?'
                          r'<span class="lab">([^<]*)</span> <span class="conf">([^<]*)</span>'
                          r'<br><span class="ft">([^<]*)</span>', c)
        cards[file] = (line, figs)
    assert sorted(cards) == ["cut.avi", "gone.mp4", "walk.mp4"]
    assert cards["walk.mp4"][0] == ("deer", "0.61") and cards["cut.avi"][0] == ("boar", "0.55")
    captions = [(str(n), lab, f"{c:.2f}", f"#{n} {t:.1f} s")
                for n, lab, c, t in zip(SHOWN, SHOWN_LABELS, SHOWN_CONFS, SHOWN_TIMES)]
    assert captions[1] == ("4", "boar", "0.54", "#4 0.4 s")  # worked by hand
    for file, (_, figs) in cards.items():
        assert [(n, lab, c, t) for n, _, _, _, lab, c, t in figs] == captions, file
        boxes = [(tag, w, h) for _, tag, w, h, *_ in figs]
        want = {"walk.mp4": [("<img", "80", "46")] * 8,
                "cut.avi": [("<img", "80", "46")] * 6 + [("<div", "80", "60")] * 2,
                "gone.mp4": [("<div", "80", "60")] * 8}[file]
        assert boxes == want, file
