"""Camera-trap training sources: MegaDetector crops (``md:``) and Camtrap DP (``camtrapdp:``).

Field biologists have image-level labels and detector output, not hand-drawn boxes, and every
peer trains on detector crops. ``md:RESULTS.json[:LABELS.csv]`` turns each detection of the
chosen categories at or above the threshold into one crop labelled with its image's label;
the crop rule (padding, square, minimum size) is :func:`kerascls_edge.decode.crop_region`,
the same function ``kerascls-edge predict --detections`` applies, and it is written into the
run's config and the bundle's model.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from kerascls_edge.decode import crop_region

from kerascls.data.decode import upright_size
from kerascls.data.records import Record
from kerascls.data.sources import (FileSource, _csv_rows, _existing, _read_text,
                                   _require_every_class)

log = logging.getLogger("kerascls.data")
DEFAULT_DETECTION_THRESHOLD = 0.2  # kerascls-edge predict's default: train on the boxes it classifies


@dataclass(frozen=True)
class CropRule:
    """How a detector box becomes a training crop (model.json ``crop``)."""

    padding: float = 0.0
    square: bool = False
    min_px: int = 0

    def as_json(self) -> dict:
        return {"padding": self.padding, "square": self.square, "min_px": self.min_px}


@dataclass(frozen=True)
class DetectionOptions:
    """Which detections become crops, and what an image without one becomes."""

    threshold: float = DEFAULT_DETECTION_THRESHOLD
    categories: tuple[str, ...] = ("animal",)
    crop: CropRule = CropRule()
    empty_class: str = ""


def options_from_config(cfg) -> DetectionOptions:
    """The detection options of a TrainConfig (fields absent in old configs take defaults)."""
    cats = str(getattr(cfg, "detection_categories", "animal") or "animal")
    return DetectionOptions(
        float(getattr(cfg, "detection_threshold", DEFAULT_DETECTION_THRESHOLD)),
        tuple(c.strip() for c in cats.split(",") if c.strip()),
        CropRule(float(getattr(cfg, "crop_padding", 0.0) or 0.0),
                 bool(getattr(cfg, "square_crops", False)),
                 int(getattr(cfg, "min_crop_px", 0) or 0)),
        str(getattr(cfg, "empty_class", "") or ""))


class CropSource(FileSource):
    """A FileSource whose boxes are normalized detector boxes until :meth:`check` knows each
    file's size: then the crop rule turns them into pixel boxes and drops tiny ones."""

    crop: CropRule = CropRule()

    def check(self) -> "CropSource":
        super().check()
        out, small = [], 0
        for r in self.records:
            if r.bbox is None:
                out.append(r)
                continue
            W, H = upright_size(r)
            if min(r.bbox[2] * W, r.bbox[3] * H) < self.crop.min_px:  # the detector's box
                small += 1
                continue
            x, y, w, h = crop_region(r.bbox, (W, H), self.crop.padding, self.crop.square)
            out.append(replace(r, bbox=(x * W, y * H, w * W, h * H)))
        if small:
            log.warning("%s: %d crops under %d px dropped (--min_crop_px)", self.name, small,
                        self.crop.min_px)
        if not out:
            raise ValueError(f"{self.name}: no crop left (every box is under --min_crop_px)")
        self.records = out
        _require_every_class(out, self.class_names, self.name, "crop or ")
        return self


def _load_md(file: Path) -> dict:
    """A MegaDetector batch output file (1.0–1.6), checked where this reader looks."""
    try:
        md = json.loads(_read_text(file, "MegaDetector file"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: line {e.lineno} column {e.colno}: not valid JSON "
                         f"({e.msg})") from None
    if not isinstance(md, dict) or not isinstance(md.get("images"), list):
        raise ValueError(f"{file}: not a MegaDetector results file (no 'images' list)")
    cats = md.get("detection_categories", {"1": "animal", "2": "person", "3": "vehicle"})
    if not isinstance(cats, dict):
        raise ValueError(f"{file}: 'detection_categories' is not an object")
    for i, im in enumerate(md["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file"), str):
            raise ValueError(f"{file}: images[{i}] has no 'file' string")
        dets = im.get("detections") or []
        for j, d in enumerate(dets if isinstance(dets, list) else [None]):
            box = d.get("bbox") if isinstance(d, dict) else None
            if not (isinstance(box, list) and len(box) == 4
                    and all(isinstance(v, (int, float)) for v in box)
                    and isinstance(d.get("conf"), (int, float))):
                raise ValueError(f"{file}: images[{i}].detections[{j}] needs 'conf' and a "
                                 "'bbox' of 4 numbers")
    return md


def _category_ids(cats: dict, wanted: tuple[str, ...], file: Path) -> set[str]:
    """Category ids for names or ids (``animal`` or ``1``)."""
    ids = set()
    for w in wanted:
        hit = {k for k, v in cats.items() if str(v) == w or str(k) == w}
        if not hit:
            raise ValueError(f"{file}: detection category {w!r} is not among "
                             f"{', '.join(f'{k}={v}' for k, v in cats.items())}")
        ids |= hit
    return {str(i) for i in ids}


def md_source(rest: str, opts: DetectionOptions) -> CropSource:
    """``md:RESULTS.json[:LABELS.csv]``: one crop per qualifying detection (labels.csv beside
    the MD file by default); MD paths are relative to the MD file's folder."""
    md_part, _, labels_part = rest.partition(":")
    file = _existing(md_part, "MegaDetector file")
    labels_file = _existing(labels_part or str(file.parent / "labels.csv"), "labels CSV")
    md = _load_md(file)
    cats = _category_ids(md.get("detection_categories") or {"1": "animal"},
                         opts.categories, file)
    rows = _csv_rows(labels_file)
    if not rows or not {"filepath", "label"} <= set(rows[0]):
        raise ValueError(f"{labels_file}: needs a header with filepath and label columns")
    labels = {(labels_file.parent / r["filepath"]).resolve(): r for r in rows}
    records, unlabeled, no_box = [], 0, 0
    for im in md["images"]:
        path = (file.parent / im["file"]).resolve()
        row = labels.get(path)
        if row is None or not (row.get("label") or "").strip():
            unlabeled += 1
            continue
        common = dict(path=str(path), location=row.get("location") or "",
                      seq_id=row.get("seq_id") or "", datetime=row.get("datetime") or "")
        label = row["label"].strip()
        boxes = [] if im.get("failure") or label == opts.empty_class else [
            tuple(float(v) for v in d["bbox"]) for d in im.get("detections") or []
            if str(d.get("category")) in cats and d["conf"] >= opts.threshold]
        if boxes:
            records += [Record(labels=(label,), bbox=b, **common) for b in boxes]
        elif opts.empty_class and not im.get("failure"):
            records.append(Record(labels=(opts.empty_class,), **common))
        else:
            no_box += 1
    if unlabeled:
        log.warning("%s: %d images have no label in %s and are left out", file, unlabeled,
                    labels_file)
    if no_box:
        log.warning("%s: %d labelled images have no detection at or above %g and are left out "
                    "(--empty_class NAME keeps them as that class)", file, no_box, opts.threshold)
    if not records:
        raise ValueError(f"{file}: no detection at or above {opts.threshold} of "
                         f"{'/'.join(opts.categories)} in an image labelled in {labels_file}")
    src = CropSource(f"md:{rest}", sorted({r.labels[0] for r in records}), records)
    src.crop = opts.crop
    return src
