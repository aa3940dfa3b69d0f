"""``kerascls evaluate``'s ``eval/report.html`` opened in a real browser (headless chromium).

A small real training on rendered JPEGs (one with quotes and markup in its name), then
``kerascls evaluate``; the page's DOM after its scripts ran is compared with what evaluate
wrote beside it (metrics.json's confusion matrix, predictions.csv image by image,
per_class.csv), and a screenshot is taken. Array data (Fashion-MNIST) gets thumbnails made
from the arrays, inline. Skips where chromium is absent.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.browser import browser, needs_chromium
from tests.conftest import needs_debian
from tests.scenes import render_folder, small_run, texture
from tests.scenes import train_in_subprocess as _train

pytestmark = needs_chromium
EVIL = "x'\" onerror=\"document.title=1\"><b id=\"pwn\">&amp.jpg"


def matrix_of(dom: str, n: int) -> np.ndarray:
    cells = {(int(i), int(j)): int(k) for i, j, k in
             re.findall(r'<td id="c-(\d+)-(\d+)" class="[^"]*" data-n="(\d+)">', dom)}
    assert len(cells) == n * n
    return np.array([[cells[i, j] for j in range(n)] for i in range(n)])


def cards(dom: str, section: str) -> list[dict]:
    part = dom.split(f'id="{section}"')[1].split("</section>")[0]
    return [{"file": html.unescape(f), "true": int(t), "pred": int(p), "conf": float(c)}
            for f, t, p, c in re.findall(r'<div class="card" data-file="([^"]*)" '
                                         r'data-true="(\d+)" data-pred="(\d+)" '
                                         r'data-conf="([^"]*)"', part)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A 3-class run trained as test_evaluate_vs_edge's (mostly right, some mistakes)."""
    from tests.conftest import run_cli
    tmp = tmp_path_factory.mktemp("evalpage")
    data = render_folder(tmp / "images", per_class=24, seed=5)
    from PIL import Image
    for k in range(8):  # some land in the (seeded) test split
        Image.fromarray(texture("rings", 90, 70, 99 + k)).save(data / "rings" / f"{k}{EVIL}",
                                                               quality=90)
    run = _train(small_run(data, tmp / "run", test_fraction=0.35))
    run_cli("evaluate", f"--model={run}")
    return tmp, run / "eval"


def test_page_matrix_cells_table_and_screenshot(evaluated) -> None:
    tmp, out = evaluated
    page = out / "report.html"
    rep = json.loads((out / "metrics.json").read_text())
    names, cm = rep["class_names"], np.array(rep["confusion_matrix"])
    with open(out / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == cm.sum() == rep["count"] >= 20

    dom = browser(tmp, page)
    np.testing.assert_array_equal(matrix_of(dom, len(names)), cm)
    assert "Click a cell" in dom and not cards(dom, "cell")
    # the per-class table shows per_class.csv's numbers
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shown = re.findall(r'<tr class="pc"><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>'
                       r'<td>([^<]*)</td><td>([^<]*)</td></tr>', dom)
    assert [(html.unescape(c), float(p), float(r), int(s)) for c, p, r, _, s in shown] == [
        (r["class"], pytest.approx(float(r["precision"]), abs=5e-4),
         pytest.approx(float(r["recall"]), abs=5e-4), int(r["support"])) for r in rows]
    # most confident mistakes: the wrong rows of predictions.csv, highest top-1 first
    wrong = sorted((float(r["top1_prob"]) for r in preds if r["label"] != r["top1"]),
                   reverse=True)
    assert [c["conf"] for c in cards(dom, "mistakes")] == pytest.approx(wrong[:24], abs=1e-4)
    assert 'src="data:image/png;base64,' in dom.split('id="reliability"')[1]

    # selecting each non-empty cell lists exactly that cell's images, each with a thumbnail
    for i, j in zip(*np.nonzero(cm)):
        dom = browser(tmp, page, f"cell={i}-{j}")
        got = cards(dom, "cell")
        expect = {r["filepath"] for r in preds if r["label"] == names[i]
                  and r["top1"] == names[j]}
        assert sorted(c["file"] for c in got) == sorted(expect)
        assert re.search(rf'id="ncell">{cm[i, j]}<', dom)
        assert f'id="c-{i}-{j}" class="{"diag" if i == j else "off"} sel"' in dom
        thumbs = re.findall(r'<img loading="lazy" alt="[^"]*" src="(report_thumbs/[^"]+)"',
                            dom.split('id="cell"')[1].split("</section>")[0])
        assert len(thumbs) == len(got) and all((out / t).is_file() for t in thumbs)
    # the hostile file name is text on the page, never markup
    evil_cell = next(r for r in preds if r["filepath"].endswith(EVIL))
    i, j = names.index(evil_cell["label"]), names.index(evil_cell["top1"])
    dom = browser(tmp, page, f"cell={i}-{j}").split("<script>")[0]
    assert '<b id="pwn">' not in dom and "document.title=1" not in dom.split("<title>")[1][:40]
    assert html.escape(EVIL) in dom or html.escape(EVIL, quote=False) in dom

    shot = tmp / "eval_report.png"
    off = np.where(np.eye(len(names), dtype=bool), -1, cm)  # the largest mistake cell
    i, j = np.unravel_index(np.argmax(off), cm.shape)
    browser(tmp, page, f"cell={i}-{j}", screenshot=shot, size="1200,1400")
    from PIL import Image, ImageStat
    with Image.open(shot) as im:
        assert im.size == (1200, 1400)
        assert max(ImageStat.Stat(im.convert("L")).stddev) > 20  # a page, not a blank


@needs_debian
def test_array_data_gets_inline_thumbnails(tmp_path: Path, cli) -> None:
    """Fashion-MNIST has no files: cell thumbnails are PNG data URIs of the arrays."""
    import keras

    from kerascls.models import create_model
    keras.utils.set_random_seed(0)
    model = tmp_path / "model.keras"
    create_model("small_cnn", 10, (28, 28, 1)).save(model)
    out = tmp_path / "eval"
    cli("evaluate", f"--model={model}", "--data=fashion_mnist", f"--output_dir={out}")
    rep = json.loads((out / "metrics.json").read_text())
    cm = np.array(rep["confusion_matrix"])
    assert not (out / "predictions.csv").exists() and not (out / "report_thumbs").exists()
    dom = browser(tmp_path, out / "report.html")
    np.testing.assert_array_equal(matrix_of(dom, 10), cm)
    i, j = np.unravel_index(np.argmax(cm), cm.shape)
    dom = browser(tmp_path, out / "report.html", f"cell={i}-{j}")
    got = cards(dom, "cell")
    assert len(got) == cm[i, j] and all((c["true"], c["pred"]) == (i, j) for c in got)
    part = dom.split('id="cell"')[1].split("</section>")[0]
    assert part.count('src="data:image/png;base64,') == min(40, cm[i, j])  # capped per cell
