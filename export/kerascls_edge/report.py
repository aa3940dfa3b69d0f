"""`kerascls-edge report RESULTS -o review.html`: one static page to look at the photos.

People trust a model after looking at what it did. The page is static (thumbnails are small
JPEGs made here with Pillow's reduced-size JPEG decode, in `<page>_thumbs/` beside it, or
inlined as data URIs with --inline for one file), so it works from a USB stick with no
server: images grouped by predicted label, filtered by label and confidence, sorted, paged
(only the current page's thumbnails become <img> elements), failures and warnings listed.
The view state lives in the URL hash (`#label=macaw&min=0.5&sort=conf&page=1`), so a
filtered view can be bookmarked.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from .bundle import EdgeError
from .journal import atomic_write_text

THUMB = 160


def _thumb(path: Path, size: int) -> Optional[tuple[bytes, int, int]]:
    """(a small upright JPEG, width, height), or None if the image cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: DCT-scaled decode, much faster
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=70)
    except Exception:  # an unreadable image is listed, not fatal (it is often a failure entry)
        return None
    return buf.getvalue(), img.width, img.height


def thumbs_dir(output: Path) -> Path:
    """Where the page's thumbnails go: `<page name>_thumbs/` beside it."""
    return Path(output).with_name(f"{Path(output).stem}_thumbs")


def _store(jpeg: bytes, file: str, folder: Optional[Path]) -> str:
    """The <img> src: a data URI (inline), or a content-named file in the thumbs folder."""
    if folder is None:
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    name = hashlib.sha1(file.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".jpg"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(jpeg)
    os.replace(tmp, folder / name)
    return f"{urllib.parse.quote(folder.name)}/{name}"


def _boxes(rec: dict, cls: dict) -> list:
    out = []
    for det in rec.get("detections") or []:
        bbox = [float(v) for v in det.get("bbox") or []]
        if len(bbox) != 4 or bbox == [0.0, 0.0, 1.0, 1.0]:
            continue
        ranking = det.get("classifications") or []
        label = cls.get(str(ranking[0][0]), "") if ranking else ""
        out.append([round(v, 4) for v in bbox] + [label, round(float(det.get("conf", 0)), 3)])
    return out


def _entry_json(rec: dict, cls: dict, det_names: dict) -> dict:
    """One image for the page: top label and confidence, as --sort_into decides them."""
    from .sortinto import _best_json

    label, conf = _best_json(rec, cls, det_names, "blank")
    seq = rec.get("sequence") or {}
    return {"file": str(rec["file"]), "label": label or "(failed)", "conf": round(conf, 4),
            "failure": rec.get("failure") or "", "warnings": list(rec.get("warnings") or []),
            "seq": seq.get("id", ""), "boxes": _boxes(rec, cls)}


def read_results(path: Path) -> tuple[list[dict], dict]:
    """Entries and page facts from our MD JSON / CSV or MegaDetector's own JSON."""
    if Path(path).suffix.lower() == ".csv":
        return _read_csv(path), {}
    from .runner import load_md

    md = load_md(Path(path))  # every field read here is checked: one-line errors
    images = md["images"]
    cls = md.get("classification_categories") or {}
    det_names = md.get("detection_categories") or {}
    return [_entry_json(r, cls, det_names) for r in images], md.get("info") or {}


def _read_csv(path: Path) -> list[dict]:
    by_file: dict[str, dict] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                e = by_file.setdefault(row["file"], {
                    "file": row["file"], "label": "blank", "conf": 1.0, "boxes": [],
                    "failure": row.get("failure", ""), "seq": row.get("sequence_id", ""),
                    "warnings": [w for w in (row.get("warnings") or "").split(";") if w]})
                if e["failure"]:
                    e["label"], e["conf"] = "(failed)", 0.0
                    continue
                conf = float(row.get("confidence") or 0.0)
                if row.get("label") and (e["label"] == "blank" or conf > e["conf"]):
                    e["label"], e["conf"] = row["label"], conf
                if row.get("bbox"):
                    e["boxes"].append([float(v) for v in row["bbox"].split()] +
                                      [row.get("label", ""), conf])
    except (OSError, KeyError, ValueError, csv.Error) as e:
        raise EdgeError(f"cannot read results {path}: {e}") from None
    return list(by_file.values())


def check_page_output(output: Path, results: Path, overwrite: bool) -> None:
    """Never replace the results, or a file this command did not write (without --overwrite)."""
    output = Path(output)
    if output.exists() and output.resolve() == Path(results).resolve():
        raise EdgeError(f"refusing to write the page over its input {results}")
    if output.is_dir():
        raise EdgeError(f"refusing to write the page to {output}: it is a directory")
    if thumbs_dir(output).exists() and not thumbs_dir(output).is_dir():
        raise EdgeError(f"cannot write thumbnails to {thumbs_dir(output)}: not a folder")
    if output.exists() and not overwrite:
        with open(output, "rb") as f:
            ours = b'content="kerascls-edge report"' in f.read(4096)
        if not ours:
            raise EdgeError(f"refusing to replace {output}: not a kerascls-edge review page "
                            "(pass --overwrite to replace it)")
    if not output.parent.is_dir():
        raise EdgeError(f"cannot write {output}: folder {output.parent} does not exist")


def build(results: Path, output: Path, image_dir: Optional[Path] = None,
          size: int = THUMB, page_size: int = 60, workers: int = 4,
          inline: bool = False) -> dict:
    """Write the page (thumbnails beside it, or inline in it); returns counts.

    Beside is the default: measured with headless chromium on 2 cores, a 10,000-image page
    with inline thumbnails is 60 MB and takes 23 s to open; the thumbnails as files leave a
    page of a few MB whose current page's images load lazily.
    """
    entries, info = read_results(results)
    base = Path(image_dir or info.get("image_base") or Path(results).resolve().parent)
    folder = None if inline else thumbs_dir(output)
    if folder is not None:
        folder.mkdir(exist_ok=True)

    def thumb(e: dict) -> tuple[str, int, int]:
        f = e["file"]
        t = _thumb(Path(f) if os.path.isabs(f) else base / f, size)
        return (_store(t[0], f, folder), t[1], t[2]) if t else ("", size, size * 3 // 4)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for e, t in zip(entries, pool.map(thumb, entries), strict=True):
            e["thumb"], e["tw"], e["th"] = t
    title = f"Review: {Path(results).name}"
    meta = {"title": title, "classifier": info.get("classifier", ""),
            "detector": info.get("detector", ""), "page_size": page_size}
    atomic_write_text(Path(output), _page(entries, meta))
    return {"images": len(entries), "failures": sum(bool(e["failure"]) for e in entries),
            "thumbnails": sum(bool(e["thumb"]) for e in entries), "output": str(output)}


def _script_json(value: object) -> str:
    """JSON safe inside <script>: no '</' can close the element."""
    return json.dumps(value).replace("</", "<\\/").replace("<!--", "<\\!--")


def _page(entries: list[dict], meta: dict) -> str:
    return (_TEMPLATE.replace("%TITLE%", html.escape(meta["title"]))
            .replace("%DATA%", _script_json(entries)).replace("%META%", _script_json(meta)))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="kerascls-edge report">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#2d4a3e;color:#fff;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}
#controls{padding:8px 16px;background:#fff;border-bottom:1px solid #ccc;position:sticky;top:0}
#controls label{margin-right:14px}
#summary{padding:6px 16px;font-size:14px}
.group h2{font-size:16px;margin:14px 16px 6px}
.grid{display:flex;flex-wrap:wrap;gap:8px;padding:0 16px}
.card{background:#fff;border:1px solid #ccc;width:168px;font-size:12px;padding:4px}
.card.seq{border-left:4px solid #c80}
.tw{position:relative;background:#ddd;overflow:hidden;margin:auto}
.tw img{width:100%;height:100%;display:block}
.box{position:absolute;border:2px solid #f30}
.file{word-break:break-all;color:#555}
.conf{font-weight:bold}
#pager{padding:12px 16px}
#problems{padding:6px 16px 24px}
#problems td{padding:2px 8px;border-bottom:1px solid #ddd;font-size:13px}
</style></head><body>
<header><h1 id="title"></h1><div id="who"></div></header>
<div id="controls">
<label>Label <select id="label"><option value="">all</option></select></label>
<label>Min. confidence <input id="min" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>Sort <select id="sort"><option value="conf">confidence, high first</option>
<option value="confasc">confidence, low first</option><option value="file">file</option>
</select></label>
</div>
<div id="summary"></div><div id="gallery"></div><div id="pager"></div>
<div id="problems"></div>
<script>
"use strict";
const DATA = %DATA%;
const META = %META%;
const $ = (id) => document.getElementById(id);
const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
function esc(s) { return String(s).replace(/[&<>"']/g, c => ESC[c]); }
function state() {
  const h = new URLSearchParams(location.hash.slice(1));
  return {label: h.get("label") || "", min: parseFloat(h.get("min") || "0") || 0,
          sort: h.get("sort") || "conf", page: Math.max(1, parseInt(h.get("page") || "1") || 1)};
}
function setState(s) {
  const h = new URLSearchParams({label: s.label, min: String(s.min), sort: s.sort,
                                 page: String(s.page)});
  location.hash = h.toString();
}
function counts() {
  const c = {};
  for (const e of DATA) c[e.label] = (c[e.label] || 0) + 1;
  return Object.keys(c).sort((a, b) => c[b] - c[a] || a.localeCompare(b)).map(k => [k, c[k]]);
}
function card(e) {
  const boxes = e.boxes.map(b => `<div class="box" title="${esc(b[4] + " " + b[5])}" style="` +
    `left:${b[0]*100}%;top:${b[1]*100}%;width:${b[2]*100}%;height:${b[3]*100}%"></div>`).join("");
  const img = e.thumb ? `<img loading="lazy" alt="${esc(e.file)}" src="${e.thumb}">` : "";
  return `<div class="card${e.seq ? " seq" : ""}" data-label="${esc(e.label)}" ` +
    `data-conf="${e.conf}"><div class="tw" style="width:${e.tw}px;height:${e.th}px">` +
    `${img}${boxes}</div>` +
    `<div><span class="lab">${esc(e.label)}</span> <span class="conf">${e.conf.toFixed(2)}` +
    `</span>${e.seq ? ` <span class="sq">seq ${esc(String(e.seq))}</span>` : ""}</div>` +
    `<div class="file">${esc(e.file)}</div></div>`;
}
function render() {
  const s = state();
  $("label").value = s.label; $("min").value = s.min; $("sort").value = s.sort;
  let rows = DATA.filter(e => (!s.label || e.label === s.label) && e.conf >= s.min);
  const key = s.sort === "file" ? (a, b) => a.file.localeCompare(b.file)
    : s.sort === "confasc" ? (a, b) => a.conf - b.conf : (a, b) => b.conf - a.conf;
  // grouped by label (largest group first), sequences kept together inside a group
  const order = new Map(counts().map(([k], i) => [k, i]));
  rows.sort((a, b) => order.get(a.label) - order.get(b.label) ||
    String(a.seq).localeCompare(String(b.seq)) || key(a, b));
  const pages = Math.max(1, Math.ceil(rows.length / META.page_size));
  const page = Math.min(s.page, pages);
  const shown = rows.slice((page - 1) * META.page_size, page * META.page_size);
  $("summary").innerHTML = `<span id="nshown">${rows.length}</span> of ${DATA.length} images` +
    ` shown (page <span id="npage">${page}</span> of ${pages})`;
  let out = "", current = null;
  for (const e of shown) {
    if (e.label !== current) {
      if (current !== null) out += "</div></div>";
      current = e.label;
      out += `<div class="group"><h2>${esc(e.label)}</h2><div class="grid">`;
    }
    out += card(e);
  }
  if (current !== null) out += "</div></div>";
  $("gallery").innerHTML = out;
  let nav = "";
  for (let p = 1; p <= pages; p++)
    nav += p === page ? ` <b>${p}</b>` : ` <a href="#" data-page="${p}">${p}</a>`;
  $("pager").innerHTML = pages > 1 ? "Page" + nav : "";
}
function init() {
  $("title").textContent = META.title;
  $("who").textContent = [META.detector, META.classifier].filter(Boolean).join(" + ");
  for (const [k, n] of counts()) {
    const o = document.createElement("option"); o.value = k; o.textContent = `${k} (${n})`;
    $("label").appendChild(o);
  }
  const bad = DATA.filter(e => e.failure || e.warnings.length);
  $("problems").innerHTML = `<h2>Failures and warnings (<span id="nproblems">${bad.length}` +
    `</span>)</h2><table>` + bad.map(e => `<tr class="problem"><td>${esc(e.file)}</td>` +
    `<td>${esc(e.failure || e.warnings.join("; "))}</td></tr>`).join("") + "</table>";
  const upd = (k, v) => { const s = state(); s[k] = v; s.page = 1; setState(s); };
  $("label").onchange = () => upd("label", $("label").value);
  $("min").onchange = () => upd("min", parseFloat($("min").value) || 0);
  $("sort").onchange = () => upd("sort", $("sort").value);
  $("pager").onclick = (ev) => {
    const p = ev.target.dataset && ev.target.dataset.page;
    if (p) { ev.preventDefault(); const s = state(); s.page = +p; setState(s); }
  };
  window.onhashchange = render;
  render();
}
init();
</script></body></html>
"""
