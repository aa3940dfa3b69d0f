"""``eval/report.html``: the evaluation as one static page people can look at.

The confusion matrix (click a cell to see its images as thumbnails), the per-class
precision/recall table, the most confident mistakes and the reliability plot. No server:
for image files the thumbnails are small JPEGs in ``report_thumbs/`` beside the page
(relative links, so the ``eval`` folder works from a USB stick); for array data
(Fashion-MNIST, …) there are no files, so the thumbnails are small PNG data URIs made from
the evaluated arrays, inside the page. Thumbnails are made for the ``per_cell`` most
confident images of each cell (every image is still listed by name); the page stays small
on 10,000 images. The selected cell lives in the URL hash (``#cell=TRUE-PRED``).

The thumbnail and escaping helpers are the device review page's (``kerascls_edge.report``).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

THUMB = 96
PER_CELL = 40
MISTAKES = 24


def _array_thumb(img: np.ndarray, size: int) -> str:
    """A PNG data URI of one evaluated image (float 0–255, H×W×C)."""
    from PIL import Image
    a = np.clip(np.asarray(img, np.float32), 0, 255).astype(np.uint8)
    a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
    pic = Image.fromarray(a)
    scale = size / max(pic.size)
    pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))),
                     Image.NEAREST if scale >= 1 else Image.LANCZOS)
    buf = io.BytesIO()
    pic.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _chosen(y: np.ndarray, top: np.ndarray, conf: np.ndarray, per_cell: int) -> set[int]:
    """Indices that get a thumbnail: each cell's most confident ``per_cell`` images."""
    order = np.lexsort((-conf, top, y))  # by cell, most confident first
    chosen, last, run = set(), None, 0
    for i in order:
        key = (int(y[i]), int(top[i]))
        run = run + 1 if key == last else 1
        last = key
        if run <= per_cell:
            chosen.add(int(i))
    return chosen


def _thumbs(chosen: set[int], paths: Sequence[str] | None, images, folder: Path,
            size: int) -> dict[int, str]:
    """Thumbnail src per chosen index: files beside the page, or data URIs from arrays."""
    from kerascls_edge.report import _store, _thumb
    if paths is None:
        return {i: _array_thumb(images[i], size) for i in sorted(chosen)} \
            if images is not None else {}
    folder.mkdir(exist_ok=True)

    def one(i: int) -> str:
        t = _thumb(Path(paths[i]), size)
        return _store(t[0], str(paths[i]), folder) if t else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(sorted(chosen), pool.map(one, sorted(chosen))))


def _items(probs: np.ndarray, y: np.ndarray, paths, images, out: Path,
           per_cell: int, size: int) -> list[dict]:
    known = np.flatnonzero(y >= 0)  # images of an unknown class are not in the matrix
    top, conf = probs.argmax(1), probs.max(1)
    chosen = {int(known[k]) for k in _chosen(y[known], top[known], conf[known], per_cell)}
    from kerascls_edge.report import thumbs_dir
    srcs = _thumbs(chosen, paths, images, thumbs_dir(out / "report.html"), size)
    return [{"f": str(paths[i]) if paths is not None else f"test image #{i}",
             "y": int(y[i]), "p": int(top[i]), "c": round(float(conf[i]), 4),
             "t": srcs.get(int(i), "")} for i in known]


def _per_class_table(rows: list[dict]) -> str:
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    body = "".join(
        f'<tr class="pc"><td>{html.escape(str(r["class"]))}</td><td>{r["precision"]:.3f}</td>'
        f'<td>{r["recall"]:.3f}</td><td>{r["f1"]:.3f}</td><td>{int(r["support"])}</td></tr>'
        for r in rows)
    return f'<table id="perclass">{head}{body}</table>'


def _png_uri(path: Path) -> str:
    return ("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            if path.is_file() else "")


def write_html_report(report: dict, probs: np.ndarray, y, out: Path,
                      paths: Sequence[str] | None = None, images=None,
                      per_cell: int = PER_CELL, size: int = THUMB) -> Path:
    """Write ``out/report.html`` for a multiclass evaluation; returns its path."""
    from kerascls_edge.journal import atomic_write_text
    from kerascls_edge.report import _script_json
    probs = np.asarray(probs, np.float64).reshape(len(probs), -1)
    y = np.asarray(y).astype(int).reshape(-1)
    if paths is not None and len(paths) != len(y):
        paths = None  # a list that does not line up is worse than none
    items = _items(probs, y, paths, images, Path(out), per_cell, size)
    root = os.path.commonpath([str(p) for p in paths]) if paths is not None and len(
        paths) > 1 else ""
    data = {"names": list(report["class_names"]), "items": items, "mistakes": MISTAKES,
            "root": os.path.join(root, "") if root else "",
            "title": f"Evaluation: {report.get('model', '')}"}
    summary = (f"accuracy {report['accuracy']:.4f} · top-5 {report['top5_accuracy']:.4f} · "
               f"NLL {report['nll']:.4f} · ECE {report['ece']:.4f} · "
               f"{report['count']} images ({report.get('data', '')}:{report.get('split', '')})")
    from kerascls.evaluation.metrics import calibration_line
    calibrated = calibration_line(report.get("calibration"))
    summary += f" · {calibrated}" if calibrated else ""
    page = (_TEMPLATE.replace("%TITLE%", html.escape(data["title"]))
            .replace("%SUMMARY%", html.escape(summary))
            .replace("%PERCLASS%", _per_class_table(report["per_class"]))
            .replace("%RELIABILITY%", _png_uri(Path(out) / "reliability.png"))
            .replace("%DATA%", _script_json(data)))
    target = Path(out) / "report.html"
    atomic_write_text(target, page)
    return target


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="kerascls evaluate report">
<title>%TITLE%</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#2d3e4a;color:#fff;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}
section{padding:6px 16px}
h2{font-size:16px;margin:12px 0 6px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
#matrix th.row{text-align:left}
#matrix td a{display:block;color:inherit;text-decoration:none;min-width:28px}
#matrix td.diag{background:#d8ecd8}
#matrix td.off{background:#f6dede}
#matrix td.zero{background:#fff;color:#aaa}
#matrix td.sel{outline:3px solid #f60}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.card{background:#fff;border:1px solid #ccc;width:104px;font-size:11px;padding:3px}
.card img{display:block;max-width:96px;max-height:96px;margin:auto}
.noimg{width:96px;height:24px;background:#eee;margin:auto}
.file{word-break:break-all;color:#555}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
#reliability img{max-width:420px;border:1px solid #ccc;background:#fff}
</style></head><body>
<header><h1>%TITLE%</h1><div id="summary">%SUMMARY%</div></header>
<section class="cols">
<div><h2>Confusion matrix (rows: true class, columns: predicted; click a cell)</h2>
<table id="matrix"></table></div>
<div id="reliability"><h2>Reliability</h2><img alt="reliability plot" src="%RELIABILITY%"></div>
</section>
<section id="cell"></section>
<section><h2>Per class</h2>%PERCLASS%</section>
<section><h2>Most confident mistakes</h2><p id="root"></p>
<div id="mistakes" class="grid"></div></section>
<script>
"use strict";
const DATA = %DATA%;
const $ = (id) => document.getElementById(id);
const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
function esc(s) { return String(s).replace(/[&<>"']/g, c => ESC[c]); }
const N = DATA.names.length;
function matrix() {
  const cm = Array.from({length: N}, () => new Array(N).fill(0));
  for (const e of DATA.items) cm[e.y][e.p] += 1;
  return cm;
}
function card(e) {
  const img = e.t ? `<img loading="lazy" alt="${esc(e.f)}" src="${e.t}">`
                  : `<div class="noimg"></div>`;
  return `<div class="card" data-file="${esc(e.f)}" data-true="${e.y}" data-pred="${e.p}" ` +
    `data-conf="${e.c}" title="${esc(e.f)}">${img}<div>${esc(DATA.names[e.y])} → ` +
    `<b>${esc(DATA.names[e.p])}</b> ${e.c.toFixed(2)}</div><div class="file">` +
    `${esc(DATA.root && e.f.startsWith(DATA.root) ? e.f.slice(DATA.root.length) : e.f)}` +
    `</div></div>`;
}
function selected() {
  const m = /^(\\d+)-(\\d+)$/.exec(new URLSearchParams(location.hash.slice(1)).get("cell") || "");
  return m && +m[1] < N && +m[2] < N ? [+m[1], +m[2]] : null;
}
function render() {
  const cm = matrix(), sel = selected();
  let t = "<tr><th></th>" + DATA.names.map(n => `<th>${esc(n)}</th>`).join("") + "</tr>";
  for (let i = 0; i < N; i++) {
    t += `<tr><th class="row">${esc(DATA.names[i])}</th>`;
    for (let j = 0; j < N; j++) {
      const k = cm[i][j], cls = !k ? "zero" : i === j ? "diag" : "off";
      const s = sel && sel[0] === i && sel[1] === j ? " sel" : "";
      t += `<td id="c-${i}-${j}" class="${cls}${s}" data-n="${k}">` +
           `<a href="#cell=${i}-${j}">${k}</a></td>`;
    }
    t += "</tr>";
  }
  $("matrix").innerHTML = t;
  if (!sel) {
    $("cell").innerHTML = "<p>Click a cell of the matrix to see its images.</p>";
    return;
  }
  const rows = DATA.items.filter(e => e.y === sel[0] && e.p === sel[1]).sort((a, b) => b.c - a.c);
  $("cell").innerHTML = `<h2>True ${esc(DATA.names[sel[0]])}, predicted ` +
    `${esc(DATA.names[sel[1]])}: <span id="ncell">${rows.length}</span> images</h2>` +
    `<div class="grid" id="cellgrid">${rows.map(card).join("")}</div>`;
}
const wrong = DATA.items.filter(e => e.y !== e.p).sort((a, b) => b.c - a.c).slice(0, DATA.mistakes);
$("mistakes").innerHTML = wrong.length ? wrong.map(card).join("") : "<p>No mistakes.</p>";
if (DATA.root) $("root").textContent = `files under ${DATA.root}`;
window.onhashchange = render;
render();
</script></body></html>
"""
