"""`kerascls-edge report RESULTS -o review.html`: one static page to look at the photos.

People trust a model after looking at what it did. The page is static (thumbnails are small
JPEGs made here with Pillow's reduced-size JPEG decode, in `<page>_thumbs/` beside it, or
inlined as data URIs with --inline for one file), so it works from a USB stick with no
server: images grouped by predicted label, filtered by label and confidence, sorted, paged,
failures and warnings listed. The view state lives in the URL hash
(`#label=macaw&min=0.5&sort=conf&page=1`), so a filtered view can be bookmarked.

Projects reach 1,000,000 images, so nothing here holds the project: results are streamed into
a temporary SQLite table (its sorter spills to disk), and the page's data is written in
chunks. For each label and order (confidence, file) the images are cut into chunks of
:data:`CHUNK`; the page holds only an index (labels, and per chunk how many images reach each
minimum-confidence step of 0.05) and loads the chunks of the page shown, as `<script src>`
files in `<page>_data/` (file:// pages cannot fetch() JSON in Chromium; a script can call
`kcChunk(key, rows)`). With --inline the chunks are inside the page instead.

The page is rendered by :mod:`kerascls_edge.html` (Jinja2, autoescaped; data as JSON).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import itertools
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from .bundle import EdgeError
from .html import json_for_script, render
from .journal import atomic_write_text
from .userfiles import open_regular, open_text

THUMB = 160
CHUNK = 500  # images per data file: ~50 KB of JS, parsed in milliseconds
STEPS = 20  # the minimum-confidence filter moves in steps of 1/STEPS (0.05)
BATCH = 256  # entries thumbnailed and stored at a time (bounded memory)
GENERATOR = "kerascls-edge report"
DATA_MARK = ".kerascls-edge-report"  # in `<page>_data/`: the folder is ours to replace
HEAVY_BYTES = 16 << 20  # a thumbnail decode above this waits for the one heavy slot
STRIP = 8  # a video's strip: at most this many of its sampled frames, spread evenly
STRIP_TIME_LIMIT = 60.0  # seconds of decoding a video's strip may take
_HEAVY = threading.Lock()


# -- thumbnails -------------------------------------------------------------------------------


def _heavy(img) -> bool:
    """A decode that may take more than HEAVY_BYTES (big non-JPEG, WebP, or a JPEG libjpeg
    buffers whole): these run one at a time, so `workers` threads stay within ~300 MB."""
    from .decode import jpeg_frame

    if img.width * img.height * 4 > HEAVY_BYTES or img.format == "WEBP":
        return True
    if img.format == "JPEG" and img.fp is not None:
        frame = jpeg_frame(img.fp)
        return frame is None or frame.buffered
    return False


def _thumb(path: Path, size: int) -> Optional[tuple[bytes, int, int]]:
    """(a small upright JPEG, width, height), or None if the image cannot be read.

    Opened as every device reader opens images (:func:`decode.open_image`: regular files,
    the device's formats), refused from the headers when its decode would pass the pixel or
    memory caps, and made small before it is rotated or converted (no full-size copies).
    """
    from PIL import ImageOps

    from . import decode

    try:
        with decode.open_image(path) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: DCT-scaled decode, much faster
            decode._check_pixels(img, decode.max_pixels_default)
            decode._check_memory(img, decode.max_pixels_default)
            with _HEAVY if _heavy(img) else contextlib.nullcontext():
                if img.mode not in ("RGB", "L", "RGBA", "CMYK", "YCbCr"):
                    # 16/32-bit greyscale scaled as the model sees it (convert clips it white)
                    img = img.convert("RGBA") if "A" in img.mode else decode.to_channels(img, 3)
                img.thumbnail((size, size))
            img = ImageOps.exif_transpose(img).convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=70)
    except Exception:  # an unreadable image is listed, not fatal (it is often a failure entry)
        return None
    return buf.getvalue(), img.width, img.height


def _strip(path: Path, frames: list, size: int) -> list:
    """A video's strip: up to STRIP of its classified frames (spread evenly), each
    ``[jpeg or None, w, h, frame_number, time, label, conf]``; the frames are decoded by
    number (video.read_numbered_frames: one RGB frame at a time, the video's own caps)."""
    from .video import read_numbered_frames, spread_evenly

    shown = spread_evenly(frames, STRIP)
    small = max(size // 2, 16)
    made: dict[int, tuple[bytes, int, int]] = {}

    def jpeg(img, number: int) -> None:
        img.thumbnail((small, small))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=70)
        made[number] = (buf.getvalue(), img.width, img.height)

    try:
        read_numbered_frames(path, [f[0] for f in shown], jpeg, STRIP_TIME_LIMIT)
    except Exception:  # unreadable now: the strip lists the frames' labels without pictures
        pass
    return [[*(made.get(f[0]) or (None, small, small * 3 // 4)), *f] for f in shown]


def thumbs_dir(output: Path) -> Path:
    """Where the page's thumbnails go: `<page name>_thumbs/` beside it."""
    return Path(output).with_name(f"{Path(output).stem}_thumbs")


def data_dir(output: Path) -> Path:
    """Where the page's data chunks go: `<page name>_data/` beside it."""
    return Path(output).with_name(f"{Path(output).stem}_data")


def _store(jpeg: bytes, file: str, folder: Optional[Path]) -> str:
    """The <img> src: a data URI (inline), or a content-named file in the thumbs folder."""
    if folder is None:
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    name = hashlib.sha1(file.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".jpg"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(jpeg)
    os.replace(tmp, folder / name)
    return f"{urllib.parse.quote(folder.name)}/{name}"


# -- reading results (streamed) ---------------------------------------------------------------


def _num(value: Any) -> float:
    """A finite float (a results file's NaN or a string is a malformed entry)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r:.40}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {value!r}")
    return v


def _boxes(rec: dict, cls: dict) -> list:
    out = []
    for det in rec.get("detections") or []:
        bbox = [_num(v) for v in det.get("bbox") or []]
        if len(bbox) != 4 or bbox == [0.0, 0.0, 1.0, 1.0]:
            continue
        ranking = det.get("classifications") or []
        label = str(cls.get(str(ranking[0][0]), "")) if ranking else ""
        out.append([round(v, 4) for v in bbox] + [label, round(_num(det["conf"]), 3)])
    return out


def _frames(rec: dict, cls: dict) -> list:
    """A video's classified frames ``[frame_number, time, label, conf]`` (its ``video``
    block), for the strip; [] for a photo."""
    video = rec.get("video")
    out = []
    for f in (video.get("frames") or []) if isinstance(video, dict) else []:
        ranking = f.get("classifications") or []
        label = str(cls.get(str(ranking[0][0]), ranking[0][0])) if ranking else ""
        out.append([int(f["frame_number"]), round(_num(f.get("time", 0.0)), 3), label,
                    round(_num(ranking[0][1]), 4) if ranking else 0.0])
    return out


def _entry_json(rec: dict, cls: dict, det_names: dict) -> dict:
    """One image for the page: top label and confidence, as --sort_into decides them."""
    from .sortinto import _best_json

    label, conf = _best_json(rec, cls, det_names, "blank")
    seq = rec.get("sequence") or {}
    return {"file": str(rec["file"]), "label": str(label) if label is not None else "(failed)",
            "conf": round(_num(conf), 4), "failure": str(rec.get("failure") or ""),
            "warnings": [str(w) for w in rec.get("warnings") or []],
            "seq": str(seq.get("id", "")) if isinstance(seq, dict) else "",
            "boxes": _boxes(rec, cls), "frames": _frames(rec, cls)}


def _iter_md(path: Path) -> tuple[dict, Iterator[dict]]:
    """(info, entries) of a MegaDetector-format file, streamed and checked entry by entry
    (:class:`mdstream.Results`: a malformed entry is one line naming it)."""
    from .mdstream import Results

    results = Results(path)
    cls, det_names = results.classification_categories, results.detection_categories

    def entries() -> Iterator[dict]:
        for i, rec in enumerate(results.images()):
            try:
                yield _entry_json(rec, cls, det_names)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                raise EdgeError(f"cannot read results {path}: images[{i}] "
                                f"({rec.get('file')!r:.80}): {type(e).__name__}: {e}") from None
    return results.info, entries()


def _iter_csv(path: Path) -> Iterator[dict]:
    """Our CSV (one row per box), rows of one image together: one entry per image."""
    from .spreadsheet import read_spreadsheet_csv

    entry: Optional[dict] = None
    try:
        with open_text(path, "results", newline="") as f:
            for row in read_spreadsheet_csv(f):  # cells as written: OWASP quotes undone
                if entry is not None and entry["file"] != row["file"]:
                    yield entry
                    entry = None
                entry = entry or {
                    "file": row["file"], "label": "blank", "conf": 1.0, "boxes": [],
                    "frames": [],
                    "failure": row.get("failure") or "", "seq": row.get("sequence_id") or "",
                    "warnings": [w for w in (row.get("warnings") or "").split(";") if w]}
                _csv_row(entry, row)
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as e:
        raise EdgeError(f"cannot read results {path}: {e}") from None
    if entry is not None:
        yield entry


def _csv_row(e: dict, row: dict) -> None:
    if e["failure"]:
        e["label"], e["conf"] = "(failed)", 0.0
        return
    conf = _num(float(row.get("confidence") or 0.0))
    if row.get("row") == "frame":  # a video's frame: its strip, not the video's label
        e["frames"].append([int(row["frame_number"]), _num(float(row.get("frame_time") or 0)),
                            row.get("label") or "", conf])
        return
    if row.get("label") and (e["label"] == "blank" or conf > e["conf"]):
        e["label"], e["conf"] = row["label"], conf
    if row.get("bbox"):
        e["boxes"].append([_num(float(v)) for v in row["bbox"].split()] +
                          [row.get("label") or "", conf])


def iter_results(path: Path) -> tuple[dict, Iterator[dict]]:
    """(page facts, entries) from our MD JSON / CSV or MegaDetector's own JSON, streamed."""
    if Path(path).suffix.lower() == ".csv":
        with open_regular(path, "results"):
            pass  # refuse a FIFO or a missing file now, in one line
        return {}, _iter_csv(path)
    return _iter_md(Path(path))


def read_results(path: Path) -> tuple[list[dict], dict]:
    """Entries and page facts as lists (small files, tests)."""
    info, entries = iter_results(path)
    return list(entries), info


# -- the output -------------------------------------------------------------------------------


def _is_ours(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and (folder / DATA_MARK).is_file()


def check_page_output(output: Path, results: Path, overwrite: bool) -> None:
    """Never replace the results, or a file this command did not write (without --overwrite)."""
    output = Path(output)
    if output.exists() and output.resolve() == Path(results).resolve():
        raise EdgeError(f"refusing to write the page over its input {results}")
    if output.is_dir():
        raise EdgeError(f"refusing to write the page to {output}: it is a directory")
    if thumbs_dir(output).exists() and not thumbs_dir(output).is_dir():
        raise EdgeError(f"cannot write thumbnails to {thumbs_dir(output)}: not a folder")
    data = data_dir(output)
    if os.path.lexists(data) and not _is_ours(data):
        raise EdgeError(f"refusing to replace {data}: not a folder kerascls-edge report wrote "
                        "(move it away, or choose another page name)")
    if output.exists() and not overwrite:
        with open_regular(output, "page") as f:
            ours = f'content="{GENERATOR}"'.encode() in f.read(4096)
        if not ours:
            raise EdgeError(f"refusing to replace {output}: not a kerascls-edge review page "
                            "(pass --overwrite to replace it)")
    if not output.parent.is_dir():
        raise EdgeError(f"cannot write {output}: folder {output.parent} does not exist")


def _level_counts(confs: Iterable[float]) -> list[int]:
    """How many of `confs` each minimum-confidence step keeps (step 0 keeps everything).

    The page's script applies the same rule (`conf >= k / STEPS`, k ≥ 1) to the same numbers.
    """
    out = [0] * (STEPS + 1)
    for c in confs:
        out[0] += 1
        for k in range(1, STEPS + 1):
            if c >= k / STEPS:
                out[k] += 1
            else:
                break
    return out


class _Table:
    """The project's entries in a temporary SQLite file: sorted on disk, not in memory."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       "cache_size=-16384"):  # 16 MB of cache; the sorter spills past it
            self.db.execute(f"PRAGMA {pragma}")
        self._spill_to(str(path.parent))  # not /tmp: a tmpfs there would be RAM again
        self.db.execute("CREATE TABLE e(label INTEGER, conf REAL, fkey BLOB, problem INTEGER,"
                        " row TEXT)")
        self.labels: dict[str, int] = {}
        self.count = 0

    def _spill_to(self, folder: str) -> None:
        """Where the sorter's temporary files go (process-wide in SQLite; '' = its default)."""
        try:
            self.db.execute("PRAGMA temp_store_directory = '%s'" % folder.replace("'", "''"))
        except sqlite3.Error:  # a build without the (deprecated) pragma: the default folder
            pass

    def close(self) -> None:
        """Close (again is harmless), and give SQLite back its default temporary folder."""
        if self.db is not None:
            self._spill_to("")
            self.db.close()
            self.db = None

    def add(self, entries: list[dict]) -> None:
        rows = []
        for e in entries:
            lid = self.labels.setdefault(e["label"], len(self.labels))
            row = [e["file"], e["conf"], e["failure"], e["warnings"], e["seq"], e["boxes"],
                   e["thumb"], e["tw"], e["th"], e.get("strip") or []]
            rows.append((lid, e["conf"], e["file"].encode("utf-8", "surrogatepass"),
                         int(bool(e["failure"] or e["warnings"])), str(json_for_script(row))))
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO e VALUES (?, ?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")
        self.count += len(rows)

    def groups(self) -> list[tuple[str, int, int]]:
        """(label, label id, count), largest group first (ties by name)."""
        counts = dict(self.db.execute("SELECT label, COUNT(*) FROM e GROUP BY label"))
        return sorted(((lab, lid, counts[lid]) for lab, lid in self.labels.items()),
                      key=lambda t: (-t[2], t[0]))

    def ordered(self, order: str) -> Iterator[tuple[int, float, str]]:
        """(label id, conf, row JSON) in the order of `order`: c (confidence), f, p."""
        sql = {"c": "SELECT label, conf, row FROM e ORDER BY label, conf DESC, fkey",
               "f": "SELECT label, conf, row FROM e ORDER BY label, fkey",
               "p": "SELECT 0, conf, row FROM e WHERE problem ORDER BY fkey"}[order]
        return self.db.execute(sql)


class _ChunkWriter:
    """Chunk files in a folder (`kcChunk(key, rows);`), or kept for an inline page."""

    def __init__(self, folder: Optional[Path]) -> None:
        self.folder = folder
        self.inline: dict[str, Any] = {}

    def write(self, key: str, rows: list[str]) -> None:
        body = "[" + ",".join(rows) + "]"
        if self.folder is None:
            self.inline[key] = body
            return
        with open(self.folder / f"{key}.js", "w", encoding="ascii") as f:
            f.write(f"kcChunk({json_for_script(key)},{body});\n")


def _write_chunks(table: _Table, rank: dict[int, int], writer: _ChunkWriter
                  ) -> dict[str, list[list[list[int]]]]:
    """Write every (order, label) sequence in chunks; per chunk, its step counts."""
    index: dict[str, list[list[list[int]]]] = {}
    for order in ("c", "f", "p"):
        per = index[order] = [[] for _ in range(len(rank) if order != "p" else 1)]
        for lid, rows in itertools.groupby(table.ordered(order), key=lambda r: r[0]):
            g = rank[lid] if order != "p" else 0
            for piece in _batched(rows, CHUNK):
                writer.write(f"{order}{g}-{len(per[g])}", [r[2] for r in piece])
                per[g].append(_level_counts(r[1] for r in piece))
    return index


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while piece := list(itertools.islice(it, n)):
        yield piece


def _swap_in(new: Path, final: Path) -> None:
    """Put the new data folder in place of ours (check_page_output refused anyone else's)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if _is_ours(final):
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def build(results: Path, output: Path, image_dir: Optional[Path] = None,
          size: int = THUMB, page_size: int = 60, workers: int = 4,
          inline: bool = False) -> dict:
    """Write the page (thumbnails beside it, or inline in it); returns counts.

    Beside is the default: measured with headless chromium on 2 cores, a 10,000-image page
    with inline thumbnails is 60 MB and takes 23 s to open; the thumbnails as files leave a
    small page whose current page's images and data load on demand.
    """
    output = Path(output)
    info, entries = iter_results(results)
    base = Path(image_dir or info.get("image_base") or Path(results).resolve().parent)
    folder = None if inline else thumbs_dir(output)
    created = folder is not None and not folder.exists()
    if folder is not None:
        folder.mkdir(exist_ok=True)
    try:
        return _build(results, output, info, entries, base, folder, size, page_size, workers,
                      inline)
    except BaseException:
        if created:  # a refused or failed run leaves nothing of its own beside the input
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _build(results: Path, output: Path, info: dict, entries: Iterator[dict], base: Path,
           folder: Optional[Path], size: int, page_size: int, workers: int,
           inline: bool) -> dict:
    """build's work once the thumbnail folder exists: entries, data chunks, the page."""
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        table = _Table(Path(tmp) / "entries.sqlite")
        data = None
        try:
            stats = _fill(table, entries, base, folder, size, workers)
            if not inline:
                data = Path(tempfile.mkdtemp(dir=output.parent,
                                             prefix=f".{data_dir(output).name}."))
                os.chmod(data, 0o755)  # mkdtemp's 0700 would hide the data from other users
            page = _layout(table, data, output, info, page_size, Path(results).name)
            table.close()
            if data is not None:
                (data / DATA_MARK).write_text("written by kerascls-edge report\n")
                _swap_in(data, data_dir(output))
            atomic_write_text(output, page)
        finally:
            table.close()
            if data is not None and data.exists():
                shutil.rmtree(data, ignore_errors=True)
    return {"images": table.count, **stats, "output": str(output)}


def _fill(table: _Table, entries: Iterator[dict], base: Path, folder: Optional[Path],
          size: int, workers: int) -> dict:
    """Thumbnail and store the entries, BATCH at a time; returns counts."""
    def thumb(e: dict) -> tuple[str, int, int]:
        f = e["file"]
        path = Path(f) if os.path.isabs(f) else base / f
        if e.get("frames"):  # a video: a strip of its frames instead of one picture
            e["strip"] = [[_store(j, f"{f}#{n}", folder) if j else "", w, h, n, t, lab, c]
                          for j, w, h, n, t, lab, c in _strip(path, e["frames"], size)]
            return "", 0, 0
        t = _thumb(path, size)
        return (_store(t[0], f, folder), t[1], t[2]) if t else ("", size, size * 3 // 4)

    stats = {"failures": 0, "thumbnails": 0}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in _batched(entries, BATCH):
            for e, t in zip(batch, pool.map(thumb, batch), strict=True):
                e["thumb"], e["tw"], e["th"] = t
                stats["failures"] += bool(e["failure"])
                stats["thumbnails"] += bool(t[0]) or any(f[0] for f in e.get("strip") or [])
            table.add(batch)
    return stats


def _layout(table: _Table, data: Optional[Path], output: Path, info: dict, page_size: int,
            name: str) -> str:
    """Write the chunks and return the page that indexes them."""
    groups = table.groups()
    rank = {lid: g for g, (_, lid, _) in enumerate(groups)}
    writer = _ChunkWriter(data)
    chunks = _write_chunks(table, rank, writer)
    index = {
        "total": table.count, "page_size": page_size, "steps": STEPS,
        "labels": [lab for lab, _, _ in groups],
        "counts": [[sum(c[k] for c in per) for k in range(STEPS + 1)] for per in chunks["c"]],
        "chunks": chunks,
        "data": None if data is None else urllib.parse.quote(data_dir(output).name) + "/",
    }
    from markupsafe import Markup

    inline = Markup("{" + ",".join(f"{json_for_script(k)}:{v}" for k, v in
                                   writer.inline.items()) + "}")
    return render(PAGE, generator=GENERATOR, title=f"Review: {name}",
                  who=" + ".join(x for x in (str(info.get("detector") or ""),
                                             str(info.get("classifier") or "")) if x),
                  data={"kc-index": index}, inline=inline if data is None else None)


PAGE = """{% extends "base.html" %}
{% block header %}<div id="who">{{ who }}</div>{% endblock %}
{% block body %}
<style>#gallery .card.video{width:auto;max-width:100%}.strip{display:flex;flex-wrap:wrap;gap:3px}
.sf{margin:0;width:84px;font-size:10px}.sf img{display:block}</style>
<div id="controls">
<label>Label <select id="label"><option value="">all</option></select></label>
<label>Min. confidence <select id="min"></select></label>
<label>Sort <select id="sort"><option value="conf">confidence, high first</option>
<option value="confasc">confidence, low first</option><option value="file">file</option>
</select></label>
</div>
<div id="summary"></div><div id="gallery"></div><div id="pager"></div>
<section id="problems"></section><div id="ppager"></div>
{% if inline is not none %}<script type="application/json" id="kc-chunks">{{ inline }}</script>
{% endif %}
{% endblock %}
{% block script %}{{ dom_js }}{% raw %}
const INDEX = jsonOf("kc-index");
const CHUNKS = jsonOf("kc-chunks") || {};
const STEPS = INDEX.steps, PROBLEMS_PER_PAGE = 100;
const pending = {};
// A chunk file is a script calling kcChunk(key, rows): it works from file:// too.
window.kcChunk = (key, rows) => {
  CHUNKS[key] = rows;
  if (pending[key]) pending[key].resolve(rows);
};
function chunk(key) {
  if (key in CHUNKS) return Promise.resolve(CHUNKS[key]);
  if (!pending[key]) {
    const p = {};
    p.promise = new Promise((resolve, reject) => { p.resolve = resolve; p.reject = reject; });
    pending[key] = p;
    const s = el("script", {src: INDEX.data + encodeURIComponent(key) + ".js"});
    s.onerror = () => { delete pending[key]; p.reject(new Error("cannot load " + s.src)); };
    document.head.append(s);
  }
  return pending[key].promise;
}
const threshold = (k) => k === 0 ? -Infinity : k / STEPS;
// The chunks holding rows ranked x..y-1 among those of one (order, group) reaching step k.
function plan(order, g, k, x, y) {
  const per = INDEX.chunks[order][g] || [], want = [];
  let before = 0;
  for (let c = 0; c < per.length && before < y; c++) {
    if (per[c][k] > 0 && before + per[c][k] > x) want.push({key: `${order}${g}-${c}`, before});
    before += per[c][k];
  }
  return {want, k, x, y};
}
// Every chunk of every plan is asked for at once (one round of loading), then cut.
async function fetchRows(plans) {
  const keys = [...new Set(plans.flatMap((p) => p.want.map((w) => w.key)))];
  await Promise.all(keys.map(chunk));
  return plans.map(({want, k, x, y}) => {
    const out = [], t = k === 0 ? -Infinity : k / STEPS;
    for (const {key, before} of want) {
      let r = before;
      for (const row of CHUNKS[key]) {
        if (row[1] < t) continue;
        if (r >= x && r < y) out.push(row);
        r++;
      }
    }
    return out;
  });
}
function state() {
  const h = new URLSearchParams(location.hash.slice(1));
  const min = Math.min(1, Math.max(0, parseFloat(h.get("min") || "0") || 0));
  return {label: h.get("label") || "", step: Math.min(STEPS, Math.ceil(min * STEPS - 1e-9)),
          sort: ["conf", "confasc", "file"].includes(h.get("sort")) ? h.get("sort") : "conf",
          page: Math.max(1, parseInt(h.get("page") || "1") || 1),
          problems: Math.max(1, parseInt(h.get("problems") || "1") || 1)};
}
function setState(s) {
  location.hash = new URLSearchParams({label: s.label, min: String(s.step / STEPS),
    sort: s.sort, page: String(s.page), problems: String(s.problems)}).toString();
}
// A video: its sampled frames side by side, each with its own label; the card's label line
// is the video's (by the rule in the results).
function strip(file, frames) {
  return el("div", {class: "strip"}, ...frames.map(([src, w, h, n, t, lab, c]) =>
    el("figure", {class: "sf", "data-frame": n},
       src ? el("img", {loading: "lazy", alt: `${file} frame ${n}`, src,
                        style: `width:${+w}px;height:${+h}px`})
           : el("div", {class: "tw", style: `width:${+w}px;height:${+h}px`}),
       el("figcaption", {}, el("span", {class: "lab"}, lab), " ",
          el("span", {class: "conf"}, (+c).toFixed(2)), el("br"),
          el("span", {class: "ft"}, `#${n} ${(+t).toFixed(1)} s`)))));
}
function card(row, label) {
  const [file, conf, , , seq, boxes, thumb, tw, th, frames] = row;
  if (frames && frames.length) {
    const line = el("div", {}, "video: ", el("span", {class: "lab"}, label), " ",
                    el("span", {class: "conf"}, conf.toFixed(2)));
    return el("div", {class: "card video", "data-label": label, "data-conf": conf},
              strip(file, frames), line, el("div", {class: "file"}, file));
  }
  const frame = el("div", {class: "tw", style: `width:${+tw}px;height:${+th}px`});
  if (thumb) frame.append(el("img", {loading: "lazy", alt: file, src: thumb}));
  for (const b of boxes) {
    frame.append(el("div", {class: "box", title: `${b[4]} ${b[5]}`, style:
      `left:${b[0] * 100}%;top:${b[1] * 100}%;width:${b[2] * 100}%;height:${b[3] * 100}%`}));
  }
  const line = el("div", {}, el("span", {class: "lab"}, label), " ",
                  el("span", {class: "conf"}, conf.toFixed(2)));
  if (seq) line.append(" ", el("span", {class: "sq"}, `seq ${seq}`));
  return el("div", {class: seq ? "card seq" : "card", "data-label": label, "data-conf": conf},
            frame, line, el("div", {class: "file"}, file));
}
function pager(box, page, pages, go) {
  box.replaceChildren();
  if (pages <= 1) return;
  const shown = new Set([1, pages]);
  for (let p = Math.max(1, page - 3); p <= Math.min(pages, page + 3); p++) shown.add(p);
  box.append("Page");
  let last = 0;
  for (const p of [...shown].sort((a, b) => a - b)) {
    if (p > last + 1) box.append(" …");
    box.append(" ", p === page ? el("b", {}, p) : el("a", {href: "#", "data-page": p}, p));
    last = p;
  }
  box.onclick = (ev) => {
    const p = ev.target.dataset && ev.target.dataset.page;
    if (p) { ev.preventDefault(); go(+p); }
  };
}
let drawing = 0;
async function render() {
  const s = state(), mine = ++drawing;
  $("label").value = s.label; $("min").value = String(s.step); $("sort").value = s.sort;
  const groups = s.label ? [INDEX.labels.indexOf(s.label)].filter((g) => g >= 0)
                         : INDEX.labels.map((_, g) => g);
  const order = s.sort === "file" ? "f" : "c", reverse = s.sort === "confasc";
  const total = groups.reduce((n, g) => n + INDEX.counts[g][s.step], 0);
  const size = INDEX.page_size, pages = Math.max(1, Math.ceil(total / size));
  const page = Math.min(s.page, pages), a = (page - 1) * size, b = Math.min(page * size, total);
  const shown = [], plans = [];
  let off = 0;
  for (const g of groups) {
    const n = INDEX.counts[g][s.step], x = Math.max(a - off, 0), y = Math.min(b - off, n);
    if (x < y) {  // confidence low first: the same rows as high first, counted from the end
      shown.push(g);
      plans.push(reverse ? plan(order, g, s.step, n - y, n - x) : plan(order, g, s.step, x, y));
    }
    off += n;
  }
  const nproblems = (INDEX.chunks.p[0] || []).reduce((t, c) => t + c[0], 0);
  const ppages = Math.max(1, Math.ceil(nproblems / PROBLEMS_PER_PAGE));
  const ppage = Math.min(s.problems, ppages);
  plans.push(plan("p", 0, 0, (ppage - 1) * PROBLEMS_PER_PAGE, ppage * PROBLEMS_PER_PAGE));
  const rows = await fetchRows(plans);
  if (mine !== drawing) return;  // the view changed while its data loaded
  $("summary").replaceChildren(el("span", {id: "nshown"}, total), ` of ${INDEX.total} images` +
    " shown (page ", el("span", {id: "npage"}, page), ` of ${pages})`);
  $("gallery").replaceChildren(...shown.map((g, i) => el("div", {class: "group"},
    el("h2", {}, INDEX.labels[g]), el("div", {class: "grid"},
      ...(reverse ? rows[i].reverse() : rows[i]).map((row) => card(row, INDEX.labels[g]))))));
  pager($("pager"), page, pages, (p) => { s.page = p; setState(s); });
  $("problems").replaceChildren(el("h2", {}, "Failures and warnings (",
    el("span", {id: "nproblems"}, nproblems), ")"), el("table", {}, ...rows.at(-1).map((r) =>
      el("tr", {class: "problem"}, el("td", {}, r[0]), el("td", {}, r[2] || r[3].join("; "))))));
  pager($("ppager"), ppage, ppages, (p) => { s.problems = p; setState(s); });
}
function init() {
  INDEX.labels.forEach((name, g) => $("label").append(
    el("option", {value: name}, `${name} (${INDEX.counts[g][0]})`)));
  for (let k = 0; k <= STEPS; k++) {
    $("min").append(el("option", {value: k}, (k / STEPS).toFixed(2)));
  }
  const upd = (f) => { const s = state(); f(s); s.page = 1; setState(s); };
  $("label").onchange = () => upd((s) => { s.label = $("label").value; });
  $("min").onchange = () => upd((s) => { s.step = +$("min").value; });
  $("sort").onchange = () => upd((s) => { s.sort = $("sort").value; });
  const shown = (p) => p.catch((e) => $("summary").replaceChildren(
    el("span", {class: "error"}, `${e.message}: the page's data folder is missing or stale`)));
  window.onhashchange = () => shown(render());
  shown(render());
}
init();
{% endraw %}{% endblock %}
"""
