"""``eval/report.html``: the evaluation as one static page people can look at.

The confusion matrix (click a cell to see its images as thumbnails), the per-class
precision/recall table, the most confident mistakes and the reliability plot. No server:
for image files the thumbnails are small JPEGs in ``report_thumbs/`` beside the page
(relative links, so the ``eval`` folder works from a USB stick); for array data
(Fashion-MNIST, …) there are no files, so the thumbnails are small PNG data URIs made from
the evaluated arrays, inside the page. Thumbnails are made for the ``per_cell`` most
confident images of each cell (every image is still listed by name); the page stays small
on 10,000 images. The selected cell lives in the URL hash (``#cell=TRUE-PRED``).

Videos: the matrix counts sampled frames (named ``FILE #frame N``, thumbnails from the
evaluated pixels); a "Videos" table lists every video with its label by the device's rule,
the other rules' labels and how many of its frames were right.

The thumbnail helpers are the device review page's (``kerascls_edge.report``), and so is the
rendering (``kerascls_edge.html``: Jinja2 with autoescape, the data as JSON in a
``<script type="application/json">``, one stylesheet): no value (a class named ``%DATA%``, a
file named ``<img onerror=…>.jpg``) is ever read as markup or as a template.
"""

from __future__ import annotations

import base64
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
            size: int, frames: Sequence[int] | None = None) -> dict[int, str]:
    """Thumbnail src per chosen index: files beside the page, or data URIs from arrays (a
    video frame's: the pixels it was evaluated on)."""
    from kerascls_edge.report import _store, _thumb
    if paths is None:
        return {i: _array_thumb(images[i], size) for i in sorted(chosen)} \
            if images is not None else {}
    folder.mkdir(exist_ok=True)

    def one(i: int) -> str:
        if frames is not None and frames[i] >= 0:
            return _array_thumb(images[i], size) if images is not None else ""
        t = _thumb(Path(paths[i]), size)
        return _store(t[0], str(paths[i]), folder) if t else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(sorted(chosen), pool.map(one, sorted(chosen))))


def _name(paths, frames, i: int) -> str:
    """An item's name: its file (``FILE #frame N`` for a video frame), or its index."""
    if paths is None:
        return f"test image #{i}"
    return f"{paths[i]} #frame {frames[i]}" if frames is not None and frames[i] >= 0 \
        else str(paths[i])


def _items(probs: np.ndarray, y: np.ndarray, paths, images, out: Path,
           per_cell: int, size: int, frames: Sequence[int] | None = None) -> list[dict]:
    known = np.flatnonzero(y >= 0)  # images of an unknown class are not in the matrix
    top, conf = probs.argmax(1), probs.max(1)
    chosen = {int(known[k]) for k in _chosen(y[known], top[known], conf[known], per_cell)}
    from kerascls_edge.report import thumbs_dir
    srcs = _thumbs(chosen, paths, images, thumbs_dir(out / "report.html"), size, frames)
    return [{"f": _name(paths, frames, int(i)),
             "y": int(y[i]), "p": int(top[i]), "c": round(float(conf[i]), 4),
             "t": srcs.get(int(i), "")} for i in known]


def _png_uri(path: Path) -> str:
    return ("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            if path.is_file() else "")


def _video_rows(videos: Sequence[dict], names: Sequence[str], top: np.ndarray,
                rule: str) -> list[dict]:
    """The Videos table: file, true class, label by each rule, frames right of frames used."""
    rows = []
    for v in videos:
        p = v["probs"][rule]
        rows.append({"file": v["file"], "true": names[v["y"]] if v["y"] >= 0 else "",
                     "label": names[int(p.argmax())], "conf": float(p.max()),
                     "rules": {r: names[int(q.argmax())] for r, q in v["probs"].items()},
                     "right": int(sum(int(top[i]) == v["y"] for i in v["rows"])),
                     "frames": len(v["rows"])})
    return rows


def write_html_report(report: dict, probs: np.ndarray, y, out: Path,
                      paths: Sequence[str] | None = None, images=None,
                      per_cell: int = PER_CELL, size: int = THUMB,
                      frames: Sequence[int] | None = None,
                      videos: Sequence[dict] = ()) -> Path:
    """Write ``out/report.html`` for a multiclass evaluation; returns its path.

    ``frames`` (each item's video frame number, -1 for a photo) and ``videos``
    (``evaluate.video_results``) add the videos; ``images`` then gives the frames' thumbnails.
    """
    from kerascls_edge.html import render
    from kerascls_edge.journal import atomic_write_text
    probs = np.asarray(probs, np.float64).reshape(len(probs), -1)
    y = np.asarray(y).astype(int).reshape(-1)
    if paths is not None and len(paths) != len(y):
        paths = None  # a list that does not line up is worse than none
    items = _items(probs, y, paths, images, Path(out), per_cell, size,
                   frames if paths is not None else None)
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
    video = report.get("video")
    if video and videos:
        rules = " · ".join(f"{r} {a:.4f}" for r, a in video["accuracy_by_rule"].items())
        summary += (f" · {video['videos']} videos: video accuracy ({video['rule']}) "
                    f"{video['accuracy']:.4f}, frame accuracy {video['frame_accuracy']:.4f}; "
                    f"by rule {rules}")
    rule = video["rule"] if video else ""
    video_rows = _video_rows(videos, data["names"], probs.argmax(1), rule) if video else []
    page = render(_PAGE, generator="kerascls evaluate report", title=data["title"],
                  body_class="eval", summary=summary, per_class=report["per_class"],
                  videos=video_rows, rule=rule,
                  rule_names=list(video["accuracy_by_rule"]) if video else [],
                  reliability=_png_uri(Path(out) / "reliability.png"), data={"kc-data": data})
    target = Path(out) / "report.html"
    atomic_write_text(target, page)
    return target


_PAGE = r"""{% extends "base.html" %}
{% block header %}<div id="summary">{{ summary }}</div>{% endblock %}
{% block body %}
<section class="cols">
<div><h2>Confusion matrix (rows: true class, columns: predicted; click a cell)</h2>
<table id="matrix"></table></div>
<div id="reliability"><h2>Reliability</h2><img alt="reliability plot" src="{{ reliability }}">
</div>
</section>
<section id="cell"></section>
<section><h2>Per class</h2><table id="perclass"><tr><th>class</th><th>precision</th>
<th>recall</th><th>F1</th><th>support</th></tr>
{%- for r in per_class %}<tr class="pc"><td>{{ r["class"] }}</td>{#
#}<td>{{ "%.3f" | format(r["precision"]) }}</td><td>{{ "%.3f" | format(r["recall"]) }}</td>{#
#}<td>{{ "%.3f" | format(r["f1"]) }}</td><td>{{ r["support"] | int }}</td></tr>
{%- endfor %}</table></section>
{% if videos %}<section><h2>Videos (label: {{ rule }} of the sampled frames)</h2>
<table id="videos"><tr><th>video</th><th>true</th><th>label</th><th>confidence</th>
{%- for r in rule_names %}<th>{{ r }}</th>{% endfor %}<th>frames right</th></tr>
{%- for v in videos %}<tr class="vid"><td>{{ v["file"] }}</td><td>{{ v["true"] }}</td>{#
#}<td>{{ v["label"] }}</td><td>{{ "%.3f" | format(v["conf"]) }}</td>{#
#}{% for r in rule_names %}<td>{{ v["rules"][r] }}</td>{% endfor %}{#
#}<td>{{ v["right"] }} / {{ v["frames"] }}</td></tr>
{%- endfor %}</table></section>{% endif %}
<section><h2>Most confident mistakes</h2><p id="root"></p>
<div id="mistakes" class="grid"></div></section>
{% endblock %}
{% block script %}{{ dom_js }}{% raw %}
const DATA = jsonOf("kc-data");
const N = DATA.names.length;
function matrix() {
  const cm = Array.from({length: N}, () => new Array(N).fill(0));
  for (const e of DATA.items) cm[e.y][e.p] += 1;
  return cm;
}
function shortName(f) {
  return DATA.root && f.startsWith(DATA.root) ? f.slice(DATA.root.length) : f;
}
function card(e) {
  const img = e.t ? el("img", {loading: "lazy", alt: e.f, src: e.t}) : el("div", {class: "noimg"});
  return el("div", {class: "card", "data-file": e.f, "data-true": e.y, "data-pred": e.p,
                    "data-conf": e.c, title: e.f}, img,
            el("div", {}, `${DATA.names[e.y]} → `, el("b", {}, DATA.names[e.p]),
               ` ${e.c.toFixed(2)}`),
            el("div", {class: "file"}, shortName(e.f)));
}
function selected() {
  const m = /^(\d+)-(\d+)$/.exec(new URLSearchParams(location.hash.slice(1)).get("cell") || "");
  return m && +m[1] < N && +m[2] < N ? [+m[1], +m[2]] : null;
}
function render() {
  const cm = matrix(), sel = selected();
  const rows = [el("tr", {}, el("th"), ...DATA.names.map((n) => el("th", {}, n)))];
  for (let i = 0; i < N; i++) {
    const tr = el("tr", {}, el("th", {class: "row"}, DATA.names[i]));
    for (let j = 0; j < N; j++) {
      const k = cm[i][j], cls = !k ? "zero" : i === j ? "diag" : "off";
      const s = sel && sel[0] === i && sel[1] === j ? " sel" : "";
      tr.append(el("td", {id: `c-${i}-${j}`, class: cls + s, "data-n": k},
                   el("a", {href: `#cell=${i}-${j}`}, k)));
    }
    rows.push(tr);
  }
  $("matrix").replaceChildren(...rows);
  if (!sel) {
    $("cell").replaceChildren(el("p", {}, "Click a cell of the matrix to see its images."));
    return;
  }
  const shown = DATA.items.filter((e) => e.y === sel[0] && e.p === sel[1])
    .sort((a, b) => b.c - a.c);
  $("cell").replaceChildren(
    el("h2", {}, `True ${DATA.names[sel[0]]}, predicted ${DATA.names[sel[1]]}: `,
       el("span", {id: "ncell"}, shown.length), " images"),
    el("div", {class: "grid", id: "cellgrid"}, ...shown.map(card)));
}
const wrong = DATA.items.filter((e) => e.y !== e.p).sort((a, b) => b.c - a.c)
  .slice(0, DATA.mistakes);
$("mistakes").replaceChildren(...(wrong.length ? wrong.map(card) : [el("p", {}, "No mistakes.")]));
if (DATA.root) $("root").textContent = `files under ${DATA.root}`;
window.onhashchange = render;
render();
{% endraw %}{% endblock %}
"""
