"""`kerascls-edge report`: the review page opened in a real browser (Debian's headless chromium).

The page's JavaScript builds the gallery from the URL hash; chromium's --dump-dom returns the
DOM after it ran, so the test reads what a person would see (counts, a class filter working,
paging, failures listed) and takes a screenshot. Skips where chromium is absent (CI installs it:
`apt-get install -y chromium`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))

from kerascls_edge.cli import main  # noqa: E402
from tests.browser import browser, needs_chromium  # noqa: E402
from tests.shared_paths import CORAL, CORAL_MODEL, ENA24, SPECIESNET, coral_tflite  # noqa: E402

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(not (CORAL_MODEL.is_file() and SPECIESNET.is_dir()
                            and (ENA24 / "md_annotations.json").is_file()),
                       reason="../shared/data (Coral model, camera-trap frames) absent"),
]


def cards(dom: str) -> list[tuple[str, float]]:
    return [(lab, float(c)) for lab, c in
            re.findall(r'<div class="card[^"]*" data-label="([^"]*)" data-conf="([^"]*)"', dom)]


def text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}">([^<]*)<', dom)
    assert m, f"no #{element_id} in the page"
    return m.group(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A whole-image run with one failure (--strict on a truncated JPEG) and warnings."""
    tmp = tmp_path_factory.mktemp("review")
    img = tmp / "img"
    img.mkdir()
    for name in ("cat.bmp", "parrot.jpg"):
        shutil.copy(CORAL / name, img / name)
    for name in ("african_elephants.jpg", "african_elephants_truncated_file.jpg", "blank.jpg",
                 "ocelot.jpg", "human.jpg"):
        shutil.copy(SPECIESNET / name, img / name)
    results = tmp / "r.json"
    assert main(["predict", str(coral_tflite(tmp)), str(img), "-o", str(results), "--strict",
                 "--threads", "2", "--progress_every", "-1"]) == 0
    return tmp, img, results


def test_page_shows_counts_and_the_class_filter_works(run, capsys) -> None:
    tmp, img, results = run
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in img.iterdir()}
    page = tmp / "review.html"
    assert main(["report", str(results), "-o", str(page)]) == 0, capsys.readouterr().err
    md = json.loads(results.read_text())
    n = len(md["images"])
    failures = [im for im in md["images"] if im.get("failure")]
    assert len(failures) == 1
    thumbs = sorted((tmp / "review_thumbs").glob("*.jpg"))  # thumbnails beside the page
    assert n - 1 <= len(thumbs) <= n  # the truncated JPEG may have none

    dom = browser(tmp, page, "")
    assert len(cards(dom)) == n and text_of(dom, "nshown") == str(n)
    srcs = re.findall(r'<img [^>]*src="(review_thumbs/[^"]+)"', dom)
    assert sorted(srcs) == sorted(f"review_thumbs/{p.name}" for p in thumbs)
    assert text_of(dom, "nproblems") == str(sum(bool(im.get("failure") or im.get("warnings"))
                                                for im in md["images"]))
    assert "african_elephants_truncated_file.jpg" in dom.split('id="problems"')[1]

    macaw = [im for im in md["images"] if not im.get("failure") and md[
        "classification_categories"][im["detections"][0]["classifications"][0][0]] == "macaw"]
    dom = browser(tmp, page, "label=macaw")
    assert [lab for lab, _ in cards(dom)] == ["macaw"] * len(macaw) == ["macaw"]
    assert text_of(dom, "nshown") == "1"

    confs = sorted(im["detections"][0]["classifications"][0][1] for im in md["images"]
                   if not im.get("failure"))
    dom = browser(tmp, page, "min=0.5&sort=confasc")
    shown = [c for _, c in cards(dom)]
    assert len(shown) == sum(c >= 0.5 for c in confs) and all(c >= 0.5 for c in shown)

    shot = tmp / "review.png"
    browser(tmp, page, "", screenshot=shot)
    from PIL import Image, ImageStat
    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        assert max(ImageStat.Stat(im.convert("L")).stddev) > 20  # thumbnails, not a blank page
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in img.iterdir()} == before


def test_megadetector_file_paged_with_boxes(tmp_path: Path, capsys) -> None:
    page = tmp_path / "md.html"
    assert main(["report", str(ENA24 / "md_annotations.json"), "-o", str(page),
                 "--page_size", "5", "--inline"]) == 0, capsys.readouterr().err
    assert not (tmp_path / "md_thumbs").exists()  # one self-contained file
    src = json.loads((ENA24 / "md_annotations.json").read_text())
    dom = browser(tmp_path, page, "page=2")
    assert len(cards(dom)) == 5 and text_of(dom, "npage") == "2"
    assert f"of {len(src['images'])} images" in dom
    last = browser(tmp_path, page, "page=99")  # clamped to the last page
    assert len(cards(last)) == len(src["images"]) - 5 * ((len(src["images"]) - 1) // 5)
    assert dom.count('class="box"') >= 5  # detector boxes drawn on the thumbnails
    assert dom.count('src="data:image/jpeg;base64,') == 5


def test_report_refuses_to_replace_a_foreign_file(tmp_path: Path, capsys) -> None:
    page = tmp_path / "notes.html"
    page.write_text("<html>mine</html>")
    assert main(["report", str(ENA24 / "md_annotations.json"), "-o", str(page)]) == 2
    assert "kerascls-edge: error: refusing to replace" in capsys.readouterr().err
    assert page.read_text() == "<html>mine</html>"


def test_hostile_names_are_shown_as_text(tmp_path: Path, capsys) -> None:
    """A file name or label with quotes and markup is text on the page, never markup."""
    evil = 'x" onerror="document.title=1"><b id="pwn">.jpg'
    md = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
          "classification_categories": {"0": '<i id="pwn2">fox</i>'},
          "images": [{"file": evil, "detections": [{"category": "1", "conf": 0.9,
                      "bbox": [0.1, 0.1, 0.2, 0.2], "classifications": [["0", 0.8]]}]}]}
    src = tmp_path / "md.json"
    src.write_text(json.dumps(md))
    page = tmp_path / "p.html"
    assert main(["report", str(src), "-o", str(page)]) == 0, capsys.readouterr().err
    dom = browser(tmp_path, page, "").split("<script>")[0]  # the rendered part
    assert "<b id=" not in dom and "<i id=" not in dom  # no element was injected
    assert '&lt;b id="pwn"&gt;.jpg</div>' in dom  # the name shown as text
    assert "<title>Review: md.json</title>" in dom
    import html
    (label, conf), = cards(dom)  # the attribute is intact: quotes inside were escaped
    assert html.unescape(label) == '<i id="pwn2">fox</i>' and conf == 0.8
